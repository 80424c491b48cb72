from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from schemas.codec import VALIDATORS, message_events
from streams.simulator import Drift, Factory, read_log, replay, simulate
from tests.harness import Env, read_all


def _run(factory: Factory, seconds: float, start: float = 1_800_000_000.0,
         ) -> list[tuple[str, dict]]:
    out = []
    for step in range(int(seconds * 10)):
        out += factory.step(start + step / 10, 0.1)
    return out


def _error_rate(events: list[tuple[str, dict]], model: str, after: float,
                before: float = float("inf")) -> float:
    truth = {e["event_id"]: e["label"] for t, e in events if t == "labels"}
    pairs = [(e["predicted"], truth[e["event_id"]]) for t, e in events
             if t == "predictions" and e["model"] == model and after <= e["ts"] < before
             and e["event_id"] in truth]
    return sum(p != y for p, y in pairs) / len(pairs)


def test_every_event_is_valid_and_every_kind_appears() -> None:
    events = _run(Factory(rate=100, seed=3, drift=Drift()), 200)
    kinds = Counter(t for t, _ in events)
    assert set(kinds) == {"predictions", "labels", "feedback", "telemetry", "pipeline",
                          "deployments"}
    assert 15_000 < kinds["predictions"] < 25_000  # 100/s with the daily shape
    for topic, event in events:
        VALIDATORS[topic].one(dict(event))
    steps = Counter(e["kind"] for t, e in events if t == "deployments")
    assert steps["training_finished"] >= 1
    assert steps["deployed"] >= 1


def test_concept_drift_raises_the_error_rate_with_the_same_inputs() -> None:
    start = 1_800_000_000.0
    calm = _run(Factory(rate=200, seed=4, drift=Drift()), 120, start)
    drifted = _run(Factory(rate=200, seed=4, drift=Drift(at_s=60, kind="concept", size=0.3)),
                   120, start)
    change = start + 60
    assert abs(_error_rate(drifted, "churn", start, change)
               - _error_rate(calm, "churn", start, change)) < 0.03
    assert _error_rate(drifted, "churn", change) - _error_rate(calm, "churn", change) > 0.2


def test_simulate_records_and_replay_republishes_the_same_events(kafka: str,
                                                                 tmp_path: Path) -> None:
    live, again = Env(kafka, tmp_path / "a"), Env(kafka, tmp_path / "b")
    live.create_topics()
    again.create_topics()
    log = tmp_path / "factory.jsonl"
    with log.open("wb") as record:
        sent = asyncio.run(simulate(live.settings(), 300, 3.0, 7, Drift(), record,
                                    progress=False))
    recorded = read_log(log)
    assert sent == len(recorded) > 200  # 300/s for 3 s, times the daily shape (0.5-1.5)
    resent = asyncio.run(replay(again.settings(), recorded, speed=0, progress=False))
    assert resent == sent
    for env in (live, again):
        counts = Counter()
        for topic in ("predictions", "labels", "telemetry", "pipeline"):
            counts[topic] = sum(len(message_events(r.value))
                                for r in read_all(kafka, env.topic(topic)))
        assert counts == Counter(rec["topic"] for rec in recorded
                                 if rec["topic"] in counts)
