"""Every metric of the contract, through the real broker and worker(s), against numpy and
scikit-learn over the same event log."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factory_log import WINDOW, compare, expected, generate
from tests.harness import Env, Worker, produce, read_all, wait_for

SCOPE_NAME = {"model": ("model",), "device": ("host", "device"), "pipeline": ("pipeline", "stage")}


def _messages(env: Env, log: Any, rng: random.Random) -> list[tuple[str, int | None, bytes]]:
    """Batches of random size to random partitions; deployments in order on one partition."""
    out: list[tuple[str, int | None, bytes]] = []
    for base, events in log.events.items():
        if base == "deployments":
            ordered = sorted(events, key=lambda e: e["ts"])
            out.append((env.topic(base), 0, orjson.dumps(ordered)))
            continue
        events = list(events)
        if base == "labels":
            rng.shuffle(events)
        i = 0
        while i < len(events):
            size = rng.choice([1, 1, 7, 50, 200])
            chunk = events[i:i + size]
            value = orjson.dumps(chunk[0] if size == 1 else chunk)
            out.append((env.topic(base), rng.randrange(env.partitions), value))
            i += size
    return out


def _latest(env: Env) -> dict[tuple[str, str, float], dict[str, Any]]:
    latest: dict[tuple[str, str, float], dict[str, Any]] = {}
    for record in read_all(env.bootstrap, env.topic("metrics")):
        snap = orjson.loads(record.value)
        name = "/".join(snap[k] for k in SCOPE_NAME.get(snap["scope"], ("host",)))
        key = (snap["scope"], name, snap["window_start"])
        if key not in latest or latest[key]["revision"] < snap["revision"]:
            latest[key] = snap
    return latest


@pytest.mark.parametrize("workers", [1, 2])
def test_every_metric_matches_an_independent_computation(env: Env, tmp_path: Path,
                                                         worker_factory: list[Worker],
                                                         workers: int) -> None:
    start = (int(time.time() // 86400) - 1) * 86400.0  # yesterday, aligned
    log = generate(seed=11, n_predictions=3000, start=start)
    config = tmp_path / "factory.toml"
    config.write_text(log.config_toml())
    env.extra["FACTORY_CONFIG"] = str(config)
    env.create_topics()
    for i in range(workers):
        w = Worker(env, tmp_path / f"worker{i}.log")
        if i:
            w.env = Env(env.bootstrap, env.state_dir.with_name(f"state{i}"), env.partitions,
                        env.name, extra=env.extra)
        worker_factory.append(w.start())
    want = expected(log)
    messages = _messages(env, log, random.Random(5))
    produce(env.bootstrap, messages)
    print(f"\nproduced {sum(len(v) for v in log.events.values())} events in {len(messages)} "
          f"messages with {workers} worker(s); expecting {len(want)} snapshots")

    def settled() -> dict[tuple[str, str, float], dict[str, Any]] | None:
        got = _latest(env)
        missing = [k for k in want if k not in got]
        if missing:
            return None
        time.sleep(3)
        again = _latest(env)
        return again if again == got else None

    got = wait_for(settled, timeout_s=120, what="every expected snapshot, then quiet")
    problems = []
    for key, fields in sorted(want.items()):
        for p in compare(fields, got[key]):
            problems.append(f"{key}: {p}")
    assert not problems, "\n".join(problems[:40])
    windows = {k[2] for k in want}
    assert len(windows) >= 5
    assert all(s["window_end"] - s["window_start"] == WINDOW for s in got.values())
    assert all(w.alive() for w in worker_factory)
