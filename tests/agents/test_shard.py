"""A shard's retention and completeness wait for what other shards may still forward to it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agents.shard import Batch, Message, Shard, ShardRuntime, SimpleLogic
from core.settings import load_settings

SETTINGS = load_settings({"FACTORY_PARTITIONS": "3", "FACTORY_IDLE": "60s"})


class Forwarded(SimpleLogic):
    family = "predictions"


def _runtime(sources: dict[str, str]) -> ShardRuntime:
    return ShardRuntime(app=None, settings=SETTINGS, logic=Forwarded(SETTINGS, sources),
                        table={}, partials=None, deadletters=None)


def test_nothing_moves_until_every_other_partition_announced() -> None:
    runtime = _runtime({"t.predictions": "predictions", "app-byid": "byid"})
    shard = Shard("predictions", 0, SETTINGS)
    shard.observe({"predictions": 5000.0})
    assert runtime._complete_until(shard) == -math.inf
    shard.floors[1] = [100.0, 4000.0]
    assert runtime._sender_cap(shard, 0) == -math.inf  # partition 2 has not announced
    shard.floors[2] = None  # idle: holds nobody back
    assert runtime._sender_cap(shard, 0) == 100.0
    assert runtime._complete_until(shard) == 4000.0
    shard.floors[2] = [50.0, 6000.0]
    assert (runtime._sender_cap(shard, 0), runtime._complete_until(shard)) == (50.0, 4000.0)


def test_busy_shards_that_forward_to_each_other_never_wait_in_a_circle() -> None:
    """What a shard announces comes from its own input topics only: when every shard is busy
    and forwards to every other, each one's completeness still follows its inputs."""
    runtime = _runtime({"t.predictions": "predictions", "app-byid": "byid"})
    shards = [Shard("predictions", p, SETTINGS) for p in range(3)]
    for shard in shards:
        shard.observe({"predictions": 5000.0 + shard.partition, "byid": 4500.0})
        shard.durable_own = shard.complete_until(own=True)
    assert [s.durable_own for s in shards] == [5000.0, 5001.0, 5002.0]
    for receiver in shards:
        receiver.floors = {s.partition: runtime._floor(s) for s in shards if s is not receiver}
    assert [runtime._complete_until(s) for s in shards] == [4500.0] * 3
    for shard in shards:  # forwards caught up: the slowest own inputs decide
        shard.observe({"byid": 6000.0})
    assert [runtime._complete_until(s) for s in shards] == [5000.0] * 3


def test_a_family_without_forwards_follows_its_own_sources() -> None:
    runtime = _runtime({"t.telemetry": "telemetry"})
    shard = Shard("telemetry", 0, SETTINGS)
    shard.observe({"telemetry": 5000.0})
    assert runtime._sender_cap(shard, 0) == math.inf
    assert runtime._complete_until(shard) == 5000.0


def test_the_slowest_active_source_holds_the_shard_back() -> None:
    shard = Shard("predictions", 0, SETTINGS)
    shard.observe({"labels": 9000.0, "predictions": 2000.0})
    assert shard.complete_until() == 2000.0
    shard.source_clocks["predictions"] = (2000.0, -1e9)  # silent for longer than worker.idle
    assert shard.complete_until() == 9000.0


def test_expiry_reaches_cold_slots_and_never_recreates_an_expired_window() -> None:
    shard = Shard("telemetry", 0, SETTINGS)
    for start in (0.0, 60.0, 7200.0):
        shard.store(f"w|d:x|60|{start:.0f}", {"s": {}, "o": {}}, start + 60)
    shard.expired_before = 100.0
    shard.expire()
    assert sorted(shard.stored) == ["w|d:x|60|60", "w|d:x|60|7200"]  # 60 ends at 120
    assert shard.pending_deletes == {"w|d:x|60|0"}
    assert shard.slot("d:x", 60.0, 0.0) is None
    rows: Any = list(shard.windows("d:x", np.array([7230.0]), np.array([0]),
                                   Batch.of([Message("telemetry", 1, [])])))
    assert len(rows) == 1
