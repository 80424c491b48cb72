"""Seldon Core 2's recorded model-topic records (protobuf and JSON) through the real broker
and a real worker with two `seldon` sources."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from schemas.codec import message_events
from tests.agents.sources.recorded import seldon, send
from tests.harness import Env, Worker, configured_worker, read_all, wait_for

CONFIG = """\
[[sources]]
name = "iris"
kind = "seldon"
topic = "{prefix}.seldon-mesh.model.iris"
features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

[[sources]]
name = "fraud"
kind = "seldon"
topic = "{prefix}.seldon-mesh.model.fraud"
features = ["amount", "age"]
"""


@pytest.mark.integration
def test_recorded_seldon_topics_become_predictions(env: Env, tmp_path: Path,
                                                   worker_factory: list[Worker]) -> None:
    configured_worker(env, tmp_path, worker_factory, CONFIG.format(prefix=env.name))
    records = seldon(env.name, now_ms=int(time.time() * 1000) - 5000)
    # inputs and outputs on different partitions of their topics
    send(env.bootstrap, [(r.topic, i % 2, r.headers, r.value or b"")
                         for i, r in enumerate(records)],
         keys=[r.key for r in records], stamps=[r.timestamp for r in records])

    def predictions() -> list[dict[str, object]]:
        return [e for r in read_all(env.bootstrap, env.topic("predictions"))
                for e in message_events(r.value)]

    events = wait_for(lambda: (p := predictions()) and len(p) >= 3 and p, 30,
                      "three predictions")
    by_id = {e["event_id"]: e for e in events}
    assert sorted(by_id) == ["7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b",
                             "d3f0b1c2-0000-4000-8000-1234567890ab.0",
                             "d3f0b1c2-0000-4000-8000-1234567890ab.1"]
    iris = by_id["d3f0b1c2-0000-4000-8000-1234567890ab.1"]
    assert (iris["model"], iris["version"], iris["predicted"]) == ("iris", "1", 1)
    assert iris["latency_ms"] == pytest.approx(9.0, abs=0.001)
    fraud = by_id["7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"]
    assert fraud["features"] == {"amount": 129.5, "age": 41.0}
    assert fraud["score"] == pytest.approx(0.07)
