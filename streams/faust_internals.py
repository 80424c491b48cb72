"""Every use of faust-streaming internals, in one place, each with the reason for it.

The shard runtime flushes batches outside Faust's per-message path and must not let Faust's
consumer commit past a message it has not applied. Faust has no public API for either; what
is used here is read from faust-streaming 0.15.3 (pinned in pyproject.toml) and is checked
by the fault tests whenever that pin moves.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event


@contextmanager
def acting_as(event: Any) -> Iterator[None]:
    """Make `event` the current event while writing a table outside the stream loop.

    Faust picks a write's changelog partition and local store from the current event, which
    a batched flush does not have (faust-streaming #497). Any event of the shard's partition
    gives the right answer, and each key is then written once per flush with `table[k] = v`.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def rewind(app: Any, tp: Any, offset: int) -> None:
    """Read partition `tp` again from `offset`.

    Faust's fetcher drops records below a stale read offset after a seek, and records the
    offsets it jumped over as a "gap" that counts as acknowledged, so the group commits past
    records nobody applied (faust-streaming #216, #221). The gap is forgotten here, then the
    consumer seeks (which also resets Faust's read offset).
    """
    consumer = app.consumer
    consumer._gap.pop(tp, None)
    await consumer.seek(tp, offset)


def release(app: Any, event: Any) -> None:
    """Drop a delivered message without acknowledging it (it will be read again).

    Acknowledging would let the committed offset pass it; leaving it pending would make
    every later rebalance wait for it (Faust waits until no message is pending).
    """
    app.consumer._unacked_messages.discard(event.message)
