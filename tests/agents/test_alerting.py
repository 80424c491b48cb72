"""Drift to alert to retraining request, through the real broker, across a worker restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness import CLI, Env, Worker, configured_worker, produce, read_all, wait_for

RULES = """
[windows]
sizes = ["10s"]
grace = "0s"
[worker]
idle = "1s"
[retraining]
cooldown = "1h"
[[alerts]]
name = "error-rate"
metric = "error_rate"
op = ">"
threshold = 0.3
resolve = 0.2
for = 2
action = "retrain"
cooldown = "1h"
severity = "critical"
"""


def _windows(env: Env, start: float, first: int, last: int, bad: set[int],
             ) -> list[tuple[str, int, bytes]]:
    """50 labelled churn predictions per 10 s window; 60 % wrong in `bad` windows, else 10 %."""
    messages = []
    for w in range(first, last):
        wrong = 30 if w in bad else 5
        preds = [{"event_id": f"w{w}-{i}", "ts": start + w * 10 + i * 0.1, "model": "churn",
                  "version": "v1", "predicted": 1} for i in range(50)]
        labels = [{"event_id": p["event_id"], "ts": p["ts"] + 2, "label": 0 if i < wrong else 1}
                  for i, p in enumerate(preds)]
        messages += [(env.topic("predictions"), w % env.partitions, orjson.dumps(preds)),
                     (env.topic("labels"), (w + 1) % env.partitions, orjson.dumps(labels))]
    return messages


def _out(env: Env, base: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic(base))]


def test_drift_fires_once_requests_retraining_once_and_resolves_across_a_restart(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    worker = configured_worker(env, tmp_path, worker_factory, RULES)
    start = (time.time() // 10 - 40) * 10
    bad = {4, 5, 6, 7}
    produce(env.bootstrap, _windows(env, start, 0, 7, bad))

    def firing() -> list[dict[str, Any]]:
        return [a for a in _out(env, "alerts")
                if a["rule"] == "error-rate" and a["model"] == "churn"]

    fired = wait_for(firing, timeout_s=60, what="the alert to fire")
    assert [(a["state"], a["window_start"]) for a in fired] == [("firing", start + 50)]
    assert fired[0]["value"] > 0.3
    listed = wait_for(lambda: worker.get("/api/v1/alerts")["alerts"], what="the API to list it")
    assert fired[0]["alert_id"] in {a["alert_id"] for a in listed}

    assert worker.stop(signal.SIGTERM) == 0  # restart while the alert fires
    worker.start()
    produce(env.bootstrap, _windows(env, start, 7, 12, bad))
    alerts = wait_for(lambda: a if len(a := firing()) >= 2 else None, timeout_s=60,
                      what="the alert to resolve")
    time.sleep(3)  # anything published twice would show up by now
    alerts = firing()
    assert [(a["state"], a["window_start"]) for a in alerts] == [
        ("firing", start + 50), ("resolved", start + 80)]
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"]
    requests = _out(env, "retraining")
    assert len(requests) == 1
    request = requests[0]
    assert (request["model"], request["rule"], request["window_start"]) == (
        "churn", "error-rate", start + 50)
    assert [w["start"] for w in request["evidence"]["windows"]] == [start + 40, start + 50]
    assert wait_for(lambda: all(a["model"] != "churn"
                                for a in worker.get("/api/v1/alerts")["alerts"]),
                    what="the API to drop the resolved alert")
    assert worker.get("/api/v1/retraining")["requests"][0]["request_id"] == request["request_id"]


def test_a_bad_rule_stops_the_worker_at_start_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[alerts]]\nname = "typo"\nmetric = "eror_rate"\nop = ">"\n'
                      "threshold = 0.1\n")
    result = subprocess.run([*CLI, "worker"], env={**os.environ, "FACTORY_CONFIG": str(config)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "alerts[0] (typo).metric: unknown metric 'eror_rate'" in result.stderr


def test_the_default_rules_see_concept_drift_as_labels_arrive_before_the_window_closes(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    """The per-label detector (rule `concept-drift`, default rules) fires and asks for
    retraining while the window of the change is still open: detection does not wait for
    windows to close. Each alert once, with 4 shards feeding one detector."""
    worker = configured_worker(env, tmp_path, worker_factory,
                               '[windows]\nsizes = ["60s"]\n[worker]\nidle = "1h"\n')
    start = (time.time() // 60 - 30) * 60
    rng = random.Random(5)

    def batch(first: int, count: int, error: float, t0: float) -> list[tuple[str, int, bytes]]:
        preds = [{"event_id": f"c{i}", "ts": t0 + (i - first) * 0.01, "model": "churn",
                  "version": "v1", "predicted": 1} for i in range(first, first + count)]
        labels = [{"event_id": p["event_id"], "ts": p["ts"] + 0.5,
                   "label": 0 if rng.random() < error else 1} for p in preds]
        messages = []
        for k in range(0, count, 500):
            messages += [(env.topic("predictions"), (k // 500) % env.partitions,
                          orjson.dumps(preds[k:k + 500])),
                         (env.topic("labels"), (k // 500 + 1) % env.partitions,
                          orjson.dumps(labels[k:k + 500]))]
        return messages

    # 12,000 labelled predictions at 8 % wrong (the detector's warm-up is 8,000), in
    # the windows before; then 1,500 at 30 % wrong inside one window that stays open
    # (nothing later arrives, and `idle` is an hour: event time waits for more)
    produce(env.bootstrap, batch(0, 12_000, 0.08, start))
    produce(env.bootstrap, batch(12_000, 1_500, 0.30, start + 600))

    def drift() -> list[dict[str, Any]]:
        return [a for a in _out(env, "alerts") if a["rule"] == "concept-drift"]

    (alert,) = wait_for(drift, timeout_s=90, what="the concept-drift alert")
    assert (alert["state"], alert["model"], alert["metric"]) == ("firing", "churn",
                                                                 "error_shift")
    assert alert["value"] > 0.1
    (request,) = wait_for(lambda: _out(env, "retraining"), what="the retraining request")
    assert (request["rule"], request["model"]) == ("concept-drift", "churn")
    time.sleep(3)  # a second publication would show by now
    assert len(drift()) == 1
    assert len(_out(env, "retraining")) == 1
    closed = {s["window_start"] for s in worker.get("/api/v1/metrics?model=churn")["metrics"]}
    assert start + 600 not in closed  # the window of the change is still open


def test_the_default_rules_see_a_feature_and_a_score_shift_as_predictions_arrive(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    """The per-value detectors (rules `feature-shift` and `score-shift`, default rules)
    compare each partial's new values with the version's reference, fed by every shard:
    a shift fires while its window is still open, once, with one retraining request."""
    worker = configured_worker(env, tmp_path, worker_factory,
                               '[windows]\nsizes = ["60s"]\ngrace = "0s"\n'
                               '[worker]\nidle = "1s"\n')
    start = (time.time() // 60 - 30) * 60
    rng = random.Random(7)

    def batch(first: int, count: int, t0: float, gap: float, x_mean: float,
              score_mean: float) -> list[tuple[str, int, bytes]]:
        preds = [{"event_id": f"v{i}", "ts": t0 + (i - first) * gap, "model": "churn",
                  "version": "v1", "predicted": 1,
                  "score": min(max(rng.gauss(score_mean, 0.1), 0.0), 1.0),
                  "features": {"x": rng.gauss(x_mean, 1.0), "y": rng.gauss(5.0, 2.0)}}
                 for i in range(first, first + count)]
        step = max(count // env.partitions, 1)
        return [(env.topic("predictions"), (k // step) % env.partitions,
                 orjson.dumps(preds[k:k + step])) for k in range(0, count, step)]

    # the reference (the version's first 2,000 predictions): one window, closed once the
    # traffic stops...
    produce(env.bootstrap, batch(0, 3_000, start, 0.02, 0.0, 0.4))
    wait_for(lambda: worker.get("/api/v1/metrics?model=churn")["metrics"], timeout_s=60,
             what="the reference's window closed")
    time.sleep(1)
    assert not [a for a in _out(env, "alerts") if a["rule"].endswith("-shift")]
    # ...then 300 predictions with x 1.5 sd higher and scores 2 sd higher, in a window that
    # closes 45 s (of event time following the wall clock) after its last one
    produce(env.bootstrap, batch(3_000, 300, start + 600, 0.05, 1.5, 0.6))

    def shifts() -> list[dict[str, Any]]:
        return [a for a in _out(env, "alerts") if a["rule"] in ("feature-shift", "score-shift")]

    alerts = wait_for(lambda: s if len(s := shifts()) == 2 else [], timeout_s=30,
                      what="the feature-shift and score-shift alerts")
    closed = {s["window_start"] for s in worker.get("/api/v1/metrics?model=churn")["metrics"]}
    assert start + 600 not in closed
    by_rule = {a["rule"]: a for a in alerts}
    assert by_rule["feature-shift"]["value"] == pytest.approx(1.5, abs=0.4)
    assert by_rule["score-shift"]["value"] == pytest.approx(2.0, abs=0.5)
    assert {a["state"] for a in alerts} == {"firing"}
    (request,) = wait_for(lambda: _out(env, "retraining"), what="the retraining request")
    assert request["rule"] in by_rule
    time.sleep(3)
    assert len(shifts()) == 2
    assert len(_out(env, "retraining")) == 1
