"""The same events delivered twice (a producer retrying a whole run): nothing changes."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.agents.test_alerting import RULES, _out, _windows
from tests.harness import Env, Worker, configured_worker, produce, wait_for


def test_the_same_thousand_events_twice_change_no_metric_and_repeat_no_alert(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    worker = configured_worker(env, tmp_path, worker_factory, RULES)
    start = (time.time() // 10 - 30) * 10
    messages = _windows(env, start, 0, 10, bad={3, 4, 5, 6})  # 500 predictions + 500 labels

    def settled() -> tuple[int, int, int] | None:
        alerts = _out(env, "alerts")
        done = {a["state"] for a in alerts} == {"firing", "resolved"}
        snaps = [s for s in _out(env, "metrics") if s["model"] == "churn"]
        closed = len({s["window_start"] for s in snaps}) == 10
        return (len(snaps), len(alerts), len(_out(env, "retraining"))) if done and closed else None

    produce(env.bootstrap, messages)
    first = wait_for(settled, timeout_s=90, what="the first delivery to settle")
    before = _out(env, "metrics")
    produce(env.bootstrap, messages)
    wait_for(lambda: sum(t["messages"] for t in worker.get("/api/v1/ingest")["topics"].values())
             == 2 * len(messages), what="the second delivery to be read")
    time.sleep(4)  # two heartbeats and the settle time: any republish would be out by now
    after = _out(env, "metrics")
    again = settled()
    text = worker.get_text("/metrics")
    duplicates = next(int(x.split()[1]) for x in text.splitlines()
                      if x.startswith("factory_duplicates_total"))
    print(f"\n1,000 events delivered twice: snapshots {first[0]} -> {again and again[0]}, "
          f"alerts {first[1]} -> {again and again[1]}, retraining requests {first[2]} -> "
          f"{again and again[2]}; duplicates absorbed: {duplicates}")
    assert again == first

    def key(snap: dict[str, object]) -> str:
        return f"{snap['model']}|{snap['window_start']}|{snap['revision']}"

    assert sorted(after, key=key) == sorted(before, key=key)  # partitions read in any order
    alerts = Counter((a["rule"], a["model"], a["state"]) for a in _out(env, "alerts"))
    assert set(alerts.values()) == {1}  # firing and resolved once each, model and rollup
    assert first[2] == 1
    assert duplicates == 1000
