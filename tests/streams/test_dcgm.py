"""A recorded dcgm-exporter scrape (default counters, Kubernetes mapping on) read into
telemetry, attributed to models by pod name, and published through the real broker."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Dcgm
from schemas.codec import VALIDATORS, message_events
from streams.dcgm import ScrapeError, collect, parse, telemetry
from tests.harness import Env, read_all

SCRAPE = (Path(__file__).parent / "payloads" / "dcgm_exporter.txt").read_text()
MIB = 1024 * 1024


@pytest.fixture
def exporter() -> Iterator[str]:
    """The recorded scrape served over HTTP at /metrics, as dcgm-exporter serves it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = SCRAPE.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_one_sample_per_gpu_attributed_by_pod() -> None:
    events = telemetry(parse(SCRAPE), 1000.0, 5.0, Dcgm())
    assert [e["device"] for e in events] == ["gpu0", "gpu1"]
    busy, idle = events
    assert busy == {"ts": 1000.0, "host": "gpu-node-1", "device": "gpu0", "kind": "gpu",
                    "util": 87.0, "interval_s": 5.0, "device_name": "NVIDIA H100 80GB HBM3",
                    "power_w": 412.337, "mem_used_bytes": 60461 * MIB,
                    "mem_total_bytes": (60461 + 20123 + 510) * MIB, "model": "churn"}
    assert "model" not in idle
    assert idle["util"] == 0.0
    for event in events:
        VALIDATORS["telemetry"].one(dict(event))


def test_the_model_label_and_pattern_are_configurable() -> None:
    config = Dcgm(model_label="namespace", model_pattern="^mod(?P<model>e)ls$")
    assert telemetry(parse(SCRAPE), 0.0, 5.0, config)[0]["model"] == "e"
    config = Dcgm(model_label="container", model_pattern="kserve")
    assert telemetry(parse(SCRAPE), 0.0, 5.0, config)[0]["model"] == "kserve"


def test_label_values_are_unescaped_and_bad_lines_refused() -> None:
    (sample,) = parse('m{a="x\\"y\\\\z",b="1"} 2.5 1700000000000\n')
    assert sample.labels == {"a": 'x"y\\z', "b": "1"}
    assert sample.value == 2.5
    with pytest.raises(ScrapeError, match="line 1"):
        list(parse("<html>not metrics</html>\n"))


@pytest.mark.integration
def test_collect_dcgm_publishes_telemetry_through_kafka(
        env: Env, exporter: str, capsys: pytest.CaptureFixture[str]) -> None:
    env.create_topics()
    sent = asyncio.run(collect(env.settings(), exporter, 0.2, count=2))
    assert "reading GPUs from dcgm-exporter" in capsys.readouterr().out
    events = [e for r in read_all(env.bootstrap, env.topic("telemetry"))
              for e in message_events(r.value)]
    assert len(events) == sent == 4
    assert {(e["host"], e["device"], e.get("model")) for e in events} == {
        ("gpu-node-1", "gpu0", "churn"), ("gpu-node-1", "gpu1", None)}
