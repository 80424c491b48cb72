"""KServe's recorded inference logs through the real broker and a real worker: request and
response on different partitions are paired into predictions, and what does not map is
dead-lettered with its reason."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from schemas.codec import message_events
from tests.agents.sources.recorded import load, send
from tests.harness import Env, Worker, configured_worker, read_all, wait_for

CONFIG = """\
[[sources]]
name = "iris"
kind = "kserve"
topic = "{topic}"
features = ["sepal_length", "sepal_width", "petal_length", "petal_width", "amount", "age"]
version_header = "X-Model-Version"
pairing_timeout = "2s"
max_pending = 100
"""


@pytest.mark.integration
def test_recorded_kserve_logs_become_predictions(env: Env, tmp_path: Path,
                                                 worker_factory: list[Worker]) -> None:
    topic = env.topic("kserve-logs")
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG.format(topic=topic))
    now = time.time()
    binary, structured = load("kserve_v1_binary", now - 5), load("kserve_v2_structured", now - 4)
    lone_request = ([(k, v.replace(b"0009174a", b"lonely00")) for k, v in binary[0][0]],
                    binary[0][1])
    not_an_event = ([("content-type", b"application/json")], b'{"instances": [[1, 2]]}')
    records = [*binary, *structured, lone_request, not_an_event]
    # the two halves of each inference on different partitions, as KafkaSink may put them
    send(env.bootstrap, [(topic, index % 2, headers, value)
                         for index, (headers, value) in enumerate(records)])

    def predictions() -> list[dict[str, object]]:
        return [e for r in read_all(env.bootstrap, env.topic("predictions"))
                for e in message_events(r.value)]

    events = wait_for(lambda: (p := predictions()) and len(p) >= 6 and p, 30,
                      "six predictions")
    by_id = {e["event_id"]: e for e in events}
    assert len(events) == 6
    assert len(by_id) == 6
    iris = by_id["0009174a-24a8-4603-b098-09c8799950e9.0"]
    assert iris["model"] == "sklearn-iris"
    assert iris["version"] == "v3"
    assert iris["predicted"] == 1
    assert iris["features"] == {
        "sepal_length": 6.8, "sepal_width": 2.8, "petal_length": 4.8, "petal_width": 1.4}
    assert 12 < iris["latency_ms"] < 14
    fraud = by_id["e1c1a7a2-33b6-4a5e-8f0e-2f1f5f0b7d01"]
    assert fraud["version"] == "7"
    assert fraud["features"] == {"amount": 129.5, "age": 41.0}
    assert by_id["5b3e2f3c-6a0f-4e0b-9d43-4f3e1b8a2c11"]["score"] == 0.82

    def dead() -> list[dict[str, object]]:
        return [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic("deadletter"))]

    letters = wait_for(lambda: (d := dead()) and len(d) >= 2 and d, 20, "two dead letters")
    reasons = sorted(str(d["reason"]) for d in letters)
    assert reasons[0].startswith("neither a binary CloudEvent")
    assert reasons[1].startswith("no response with id 'lonely00-")
    assert "sources (iris).pairing_timeout (2s)" in reasons[1]
    assert {d["topic"] for d in letters} <= {topic, f"{env.name}-source-iris"}

    # the worker counts them like any prediction
    wait_for(lambda: worker.get("/api/v1/ingest")["topics"].get(
        env.topic("predictions"), {}).get("accepted") == 6, 30, "six predictions accepted")
