"""Requests waiting for their responses and responses for their requests, bounded.

One buffer per partition of the source's re-keyed topic, where both halves of an inference
land (they are re-keyed by their id first). It holds at most `max_pending` halves and each at
most `timeout_s`; what leaves unpaired is handed back so that it can be dead-lettered or, a
response alone, still counted. The lowest offset still held is where a restarted consumer
must read again: only offsets below it are committed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Waiting(Generic[T]):
    item: T
    is_request: bool
    offset: int
    since: float


class Pairing(Generic[T]):
    """Halves by id, oldest first."""

    def __init__(self, max_pending: int, timeout_s: float) -> None:
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.waiting: OrderedDict[str, Waiting[T]] = OrderedDict()

    def offer(self, key: str, item: T, is_request: bool, offset: int, now: float,
              ) -> tuple[Waiting[T] | None, list[Waiting[T]]]:
        """Pair `item` with its waiting other half (returned), or keep it waiting; also
        return the oldest halves pushed out past `max_pending`. A repeat of a half already
        waiting (a producer's retry) is dropped."""
        other = self.waiting.get(key)
        if other is not None:
            if other.is_request == is_request:
                return None, []
            del self.waiting[key]
            return other, []
        self.waiting[key] = Waiting(item, is_request, offset, now)
        evicted = []
        while len(self.waiting) > self.max_pending:
            evicted.append(self.waiting.popitem(last=False)[1])
        return None, evicted

    def expired(self, now: float) -> list[Waiting[T]]:
        """The halves that waited longer than the timeout, removed."""
        out = []
        while self.waiting:
            key, oldest = next(iter(self.waiting.items()))
            if now - oldest.since < self.timeout_s:
                break
            del self.waiting[key]
            out.append(oldest)
        return out

    def low_offset(self) -> int | None:
        """The lowest offset still waiting (None when nothing waits)."""
        return min((w.offset for w in self.waiting.values()), default=None)
