"""The closing rule of `agents.closing`, case by case (time is passed in, nothing sleeps)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.closing import HEARD_WITHIN_S, EventClock

SHARDS = ["predictions:0", "predictions:1", "telemetry:0", "telemetry:1"]


def _clock(**reports: tuple[float | None, bool]) -> EventClock:
    clock = EventClock(SHARDS, grace_s=2.0, now=0.0)
    for shard, (watermark, idle) in reports.items():
        clock.heard(shard.replace("_", ":"), watermark, idle, now=10.0)
    return clock


def test_nothing_closes_until_every_shard_has_reported_once() -> None:
    clock = _clock(predictions_0=(100.0, False), predictions_1=(100.0, False),
                   telemetry_0=(100.0, False))
    assert clock.time(10.0) is None
    clock.heard("telemetry:1", 100.0, True, now=10.0)
    assert clock.time(10.0) == 100.0


def test_the_slowest_busy_shard_decides_and_idle_ones_do_not_hold() -> None:
    clock = _clock(predictions_0=(100.0, False), predictions_1=(40.0, True),
                   telemetry_0=(90.0, False), telemetry_1=(None, True))
    assert clock.time(10.0) == 90.0
    assert clock.closed(end=88.0, event_time=90.0)
    assert not clock.closed(end=88.5, event_time=90.0)  # grace: 2 s


def test_a_busy_shard_that_applied_nothing_holds_everything() -> None:
    clock = _clock(predictions_0=(100.0, False), predictions_1=(None, False),
                   telemetry_0=(100.0, True), telemetry_1=(100.0, True))
    assert clock.time(10.0) is None


def test_a_shard_not_heard_for_a_while_stops_holding() -> None:
    clock = _clock(predictions_0=(100.0, False), predictions_1=(50.0, False),
                   telemetry_0=(100.0, True), telemetry_1=(100.0, True))
    clock.heard("predictions:0", 120.0, False, now=10.0 + HEARD_WITHIN_S)
    assert clock.time(10.0 + HEARD_WITHIN_S) == 120.0  # predictions:1's worker is gone


def test_when_all_are_caught_up_event_time_follows_the_wall_clock_from_the_newest() -> None:
    clock = _clock(predictions_0=(100.0, False), predictions_1=(80.0, True),
                   telemetry_0=(None, True), telemetry_1=(95.0, True))
    clock.heard("predictions:0", 100.0, True, now=12.0)
    assert clock.time(12.0) == 102.0  # 100.0 was first heard at 10.0
    assert clock.time(20.0) == 110.0
    clock.heard("telemetry:1", 130.0, True, now=21.0)
    assert clock.time(21.0) == 130.0  # never ahead of the newest event by more than its age


def test_event_time_never_goes_back_when_a_shard_falls_behind() -> None:
    clock = _clock(predictions_0=(100.0, False), predictions_1=(100.0, True),
                   telemetry_0=(100.0, True), telemetry_1=(100.0, True))
    assert clock.time(10.0) == 100.0
    clock.heard("predictions:1", None, False, now=11.0)  # reassigned with a backlog
    assert clock.time(11.0) == 100.0
    clock.heard("predictions:1", 150.0, False, now=12.0)
    clock.heard("predictions:0", 160.0, False, now=12.0)
    assert clock.time(12.0) == 150.0


@given(st.lists(st.tuples(st.sampled_from(SHARDS), st.floats(0, 1e6), st.booleans()),
                min_size=1, max_size=40))
def test_event_time_never_passes_a_busy_recent_shard(
    reports: list[tuple[str, float, bool]],
) -> None:
    clock = EventClock(SHARDS, grace_s=2.0, now=0.0)
    for shard, watermark, idle in reports:
        clock.heard(shard, watermark, idle, now=1.0)
    time = clock.time(1.0)
    if not set(SHARDS) <= {r[0] for r in reports}:
        assert time is None
        return
    last = {shard: (watermark, idle) for shard, watermark, idle in reports}
    busy = [w for w, idle in last.values() if not idle]
    assert time is not None
    if busy:
        assert time == pytest.approx(min(busy))
    else:  # the newest watermark ever heard
        assert time == pytest.approx(max(w for _, w, _ in reports))
