"""Event-loop lag: how late the worker's event loop runs a timer, a symptom of blocking code.

A blocking call in an agent stalls every agent, the heartbeats to the consumer group and the
HTTP views alike; measured lag (and a warning past `warn_s`) makes it visible in `/metrics`
long before the group evicts the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class LoopLag:
    """Sleeps `interval_s` in a loop and records by how much each wake-up was late."""

    def __init__(self, interval_s: float = 0.5, warn_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.warn_s = warn_s
        self.last_s = 0.0
        self.max_s = 0.0
        self.stalls = 0

    def record(self, lag_s: float) -> None:
        self.last_s = lag_s
        self.max_s = max(self.max_s, lag_s)
        if lag_s >= self.warn_s:
            self.stalls += 1
            log.warning("the event loop was blocked for %.2fs: some code does not yield", lag_s)

    async def run(self) -> None:
        while True:
            expected = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.record(max(0.0, time.monotonic() - expected))
