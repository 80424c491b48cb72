"""The closing rule: when a window is complete enough to publish.

Every shard (one family's partition) reports at each heartbeat its watermark, the event time
up to which its active sources (and what other shards forwarded to it) are applied and
durable, and whether it is caught up: no record waiting in its partitions, so nothing it has
not applied exists yet. From those reports, event time for closing is:

1. unknown (nothing closes) until every shard of every family has reported once since the
   stage started: a worker that has not reported yet may hold part of any window;
2. otherwise the lowest watermark of the shards that hold windows back: records waiting
   (a backlog, or a partition not fetched yet), or forwards on the way from a shard whose
   inputs still flow, and heard within `HEARD_WITHIN_S` (a dead
   worker's shards stop holding; their new owner reports within a heartbeat of taking
   them). One with records waiting that has applied nothing yet holds everything back;
3. when every shard is caught up, the newest watermark heard plus the wall time since it
   was heard: event time follows the wall clock from the newest event, never ahead of it,
   so the last windows close once traffic stops.

Event time never goes back: a shard that falls behind (a backlog after a rebalance) holds
the windows not closed yet, not those already published.

A window closes when its end plus `windows.grace` is at or before that event time: `grace`
is the out-of-orderness allowed between partitions and producers. An event that arrives
later changes the window, and the stage publishes it again (next revision).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# Six missed heartbeats (0.5 s each): a dead worker's shards stop holding windows this soon.
# A live worker whose event loop stalls longer stops holding too; its next heartbeat holds
# again, and whatever it applies later republishes its windows (next revision).
HEARD_WITHIN_S = 3.0


@dataclass(frozen=True, slots=True)
class ShardClock:
    """A shard's last report: watermark (None before its first event), whether it is caught
    up (`idle`: nothing waiting), and when it was heard."""

    watermark: float | None
    idle: bool
    heard: float


class EventClock:
    """Event time as the closing rule sees it, from the shards' heartbeats."""

    def __init__(self, shards: Iterable[str], grace_s: float, now: float) -> None:
        self.expected = frozenset(shards)
        self.grace_s = grace_s
        self.clocks: dict[str, ShardClock] = {}
        # the newest watermark any shard reported, and when
        self.newest = -math.inf
        self.newest_at = now
        self.last = -math.inf  # the latest event time answered: it never goes back

    def heard(self, shard: str, watermark: float | None, idle: bool, now: float) -> None:
        self.clocks[shard] = ShardClock(watermark, idle, now)
        if watermark is not None and watermark > self.newest:
            self.newest, self.newest_at = watermark, now

    def time(self, now: float) -> float | None:
        """The highest event time reached so far (None: none yet); it never goes back."""
        current = self._current(now)
        if current is not None and current > self.last:
            self.last = current
        return None if self.last == -math.inf else self.last

    def _current(self, now: float) -> float | None:
        if not self.expected <= self.clocks.keys():
            return None
        holding = [c.watermark for c in self.clocks.values()
                   if not c.idle and now - c.heard < HEARD_WITHIN_S]
        if holding:
            return None if None in holding else min(w for w in holding if w is not None)
        if self.newest == -math.inf:
            return None
        return self.newest + (now - self.newest_at)

    def closed(self, end: float, event_time: float) -> bool:
        """Whether a window ending at `end` is closed at `event_time`."""
        return end + self.grace_s <= event_time
