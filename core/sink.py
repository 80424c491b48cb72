"""Output topics that one bad record cannot stop.

A snapshot, alert or dead letter that the broker will never take (over the message limit,
or refused for its size by a topic configured smaller) must not crash the agent that sends
it: Faust would drop the agent's batch, and the same record would fail again forever. It is
skipped, counted in `factory_output_failures_total` and logged with its topic and size.
Failures of the broker itself (unreachable, no leader) are not caught here: the producer
retries those, and the batch is not acknowledged until they are delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from core.faust_internals import send_watched

log = logging.getLogger(__name__)

# Refusals that a retry of the same record cannot fix.
PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError)


class OutputSink:
    """Sends to one output topic; counts what could not be delivered, by reason."""

    def __init__(self, topic: Any, max_bytes: int, failures: Counter[tuple[str, str]]) -> None:
        self.topic = topic
        self.name: str = topic.get_topic_name()
        self.max_bytes = max_bytes
        self.failures = failures

    async def send(self, value: bytes, key: bytes | None = None) -> asyncio.Future[Any] | None:
        """Queue one record; return its delivery future, or None when it was refused."""
        if len(value) > self.max_bytes:
            self._failed("too_large", f"{len(value):,} bytes over kafka.max_message_bytes "
                                      f"({self.max_bytes:,})", key)
            return None
        # Faust's `send` hands back the producer's future, while the refusal also lands on
        # its own message future, which nobody would read: keep and watch that one instead.
        future: asyncio.Future[Any] = self.topic.as_future_message(key=key, value=value)
        future.add_done_callback(lambda f: self._delivered(f, key, len(value)))
        await send_watched(self.topic, future)
        return future

    def _delivered(self, future: asyncio.Future[Any], key: bytes | None, size: int) -> None:
        if future.cancelled():
            return
        exc = future.exception()  # retrieved here, so asyncio never reports it as lost
        if exc is not None:
            reason = "too_large" if isinstance(exc, PERMANENT) else "error"
            self._failed(reason, f"{type(exc).__name__}: {exc} ({size:,} bytes)", key)

    def _failed(self, reason: str, detail: str, key: bytes | None) -> None:
        self.failures[(self.name, reason)] += 1
        log.error("output to %s not delivered (key %r): %s", self.name,
                  None if key is None else key[:200].decode("utf-8", "replace"), detail)
