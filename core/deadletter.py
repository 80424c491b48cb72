"""Rejected input goes to the dead-letter topic with the reason and where it came from.

Nothing rejected is dropped silently: every rejection becomes one dead-letter record carrying
the source topic, partition, offset, the position within a batch message, and the rejected
bytes (base64 when they are not UTF-8, truncated only beyond what a Kafka message can carry).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from core.sink import PERMANENT, OutputSink
from schemas.codec import Rejection, encode

# Keeps a dead letter, with its envelope, under Kafka's default 1 MiB message limit; under a
# lower `kafka.max_message_bytes` the value is cut to half of it (base64 adds a third).
MAX_VALUE_BYTES = 512 * 1024
MAX_KEY_BYTES = 1024


def dead_letter(
    rejection: Rejection, topic: str, partition: int, offset: int, key: bytes | None,
    max_message_bytes: int = 2 * MAX_VALUE_BYTES,
) -> dict[str, Any]:
    """The dead-letter payload for one rejection (see `schemas.outputs.DeadLetter`)."""
    raw = rejection.raw
    cap = min(MAX_VALUE_BYTES, max_message_bytes // 2)
    truncated = len(raw) > cap or (key is not None and len(key) > MAX_KEY_BYTES)
    if truncated:
        raw = raw[:cap]
        key = None if key is None else key[:MAX_KEY_BYTES]
    try:
        value, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {
        "reason": rejection.reason,
        "field": rejection.field,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "batch_index": rejection.batch_index,
        "key": None if key is None else key.decode("utf-8", "replace"),
        "value": value,
        "value_encoding": encoding,
        "truncated": truncated,
        "count": rejection.count,
        "ts": time.time(),
    }


async def publish(
    sink: OutputSink, rejections: list[Rejection], topic: str, partition: int, offset: int,
    key: bytes | None,
) -> list[asyncio.Future[Any]]:
    """Send one dead letter per rejection, keyed by source topic so replays stay ordered;
    return the delivery futures (see `delivered`)."""
    sent = []
    for rejection in rejections:
        payload = dead_letter(rejection, topic, partition, offset, key, sink.max_bytes)
        future = await sink.send(key=topic.encode(), value=encode(payload))
        if future is not None:
            sent.append(future)
    return sent


async def delivered(sent: list[asyncio.Future[Any]]) -> None:
    """Wait for dead letters before the offsets that include them are recorded.

    One the broker refuses for good (counted and logged by the sink) does not hold the
    partition forever; any other failure raises, and the batch is read again.
    """
    for result in await asyncio.gather(*sent, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(result, PERMANENT):
            raise result
