"""A blocking call inside an agent: the loop-lag metric shows it, the group does not evict the
worker, and the numbers stay exact."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.harness import Env, Worker, configured_worker, produce, read_all, wait_for

CONFIG = '[windows]\nsizes = ["60s"]\ngrace = "1s"\n[worker]\nidle = "2s"\n'
BLOCK_S = 8.0  # longer than the 6 s session timeout the tests run with

# Loaded by the worker's interpreter at start (site imports `sitecustomize` from the path):
# the predictions agent sleeps, without yielding, on any batch holding a model named "block".
HOOK = '''
import time
from agents import predictions

_apply = predictions.PredictionLogic.apply

def apply(self, shard, messages):
    if any(e.get("model") == "block" for m in messages for e in m.events):
        time.sleep({block_s})
    return _apply(self, shard, messages)

predictions.PredictionLogic.apply = apply
'''


def _gauge(worker: Worker, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", worker.get_text("/metrics"), re.MULTILINE)
    assert found, name
    return float(found.group(1))


def test_a_blocking_call_is_seen_in_loop_lag_and_causes_no_rebalance(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK.format(block_s=BLOCK_S))
    env.extra["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook),
                                                            os.environ.get("PYTHONPATH")]))
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 3600 - 1) * 3600
    joins_before = worker.log_path.read_text().count("Joined group")

    want: Counter[tuple[str, float]] = Counter()

    def batch(model: str, first: int, n: int) -> bytes:
        events = [{"event_id": f"{model}{i}", "ts": start + i % 120, "model": model,
                   "version": "1"} for i in range(first, first + n)]
        want.update((model, (e["ts"] // 60) * 60) for e in events)
        return orjson.dumps(events)

    produce(env.bootstrap, [(env.topic("predictions"), 0, batch("ok", 0, 500))])
    produce(env.bootstrap, [(env.topic("predictions"), 0, batch("block", 0, 10))])
    produce(env.bootstrap, [(env.topic("predictions"), p, batch("ok", 500 + 500 * p, 500))
                            for p in range(env.partitions)])

    def stalled() -> bool:
        try:
            return _gauge(worker, "factory_event_loop_lag_max_seconds") >= BLOCK_S * 0.8
        except TimeoutError:  # the HTTP views share the blocked loop
            return False

    wait_for(stalled, timeout_s=60, what="the stall in the loop-lag metric")

    def final() -> dict[tuple[str, float], int]:
        out: dict[tuple[str, float], int] = {}
        for record in read_all(env.bootstrap, env.topic("metrics")):
            snap = orjson.loads(record.value)
            if snap["model"] in ("ok", "block"):
                out[(snap["model"], snap["window_start"])] = snap["predictions"]
        return out

    got = wait_for(lambda: (f := final()) == want and f, timeout_s=60, what="exact counts")
    log = worker.log_path.read_text()
    joins = log.count("Joined group") - joins_before
    lag = _gauge(worker, "factory_event_loop_lag_max_seconds")
    stalls = _gauge(worker, "factory_event_loop_stalls_total")
    print(f"\ninjected a {BLOCK_S:g}s blocking call in the predictions agent (session timeout "
          f"6s): loop lag max {lag:.1f}s, stalls {stalls:g}, group re-joins {joins}, counts "
          f"{sorted(got.values())}")
    assert stalls >= 1
    assert "the event loop was blocked for" in log
    assert joins == 0
    assert worker.alive()
