"""The dashboard in a real headless browser (Debian's chromium): it loads under its
Content-Security-Policy, its charts get data, and names from events show as text."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.harness import Env, Worker, configured_worker, produce, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,900", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def test_dashboard_loads_and_its_charts_receive_data(chromium: str, env: Env, tmp_path: Path,
                                                     worker_factory: list[Worker]) -> None:
    worker = configured_worker(env, tmp_path, worker_factory,
                               '[windows]\nsizes = ["10s"]\ngrace = "0s"\n[worker]\nidle = "1s"\n')
    start = (time.time() // 10 - 12) * 10
    predictions = [{"event_id": f"d{i}", "ts": start + i * 0.5, "model": ["churn", "intent"][i % 2],
                    "version": "v1", "latency_ms": 10.0 + i % 7, "predicted": i % 2,
                    "cost_usd": 0.001} for i in range(200)]
    labels = [{"event_id": p["event_id"], "ts": p["ts"] + 1, "label": 1} for p in predictions]
    telemetry = [{"ts": start + i * 5, "host": "h", "device": "gpu0", "kind": "gpu",
                  "util": 50.0, "interval_s": 5.0, "model": "churn"} for i in range(20)]
    produce(env.bootstrap, [(env.topic("predictions"), 0, orjson.dumps(predictions)),
                            (env.topic("labels"), 1, orjson.dumps(labels)),
                            (env.topic("telemetry"), 0, orjson.dumps(telemetry))])
    wait_for(lambda: len(worker.get("/api/v1/metrics?scope=model")["metrics"]) >= 10,
             timeout_s=60, what="closed windows in the API")

    url = f"http://127.0.0.1:{env.web_port}/"
    dom = _browser(["--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0",
                    "--dump-dom", url], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the page's scripts, styles and requests all pass its Content-Security-Policy
    assert "Content Security Policy" not in dom.stderr, dom.stderr[-2000:]
    points = {m[0]: int(m[1]) for m in re.findall(r'id="chart-(\w+)"[^>]*data-points="(\d+)"',
                                                  dom.stdout)}
    if not points:  # attribute order may differ
        points = {m[1]: int(m[0]) for m in re.findall(
            r'data-points="(\d+)"[^>]*id="chart-(\w+)"', dom.stdout)}
    assert set(points) == {"error", "quality", "latency", "cost", "gpu", "throughput"}
    assert all(points[c] > 0 for c in ("error", "quality", "latency", "cost", "throughput"))
    assert points["gpu"] > 0
    assert "snapshots" in dom.stdout

    shot = tmp_path / "dashboard.png"
    taken = _browser(["--virtual-time-budget=8000", f"--screenshot={shot}", url],
                     tmp_path / "p2")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    keep = Path(__file__).resolve().parents[2] / ".factory-test" / "dashboard.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)
    print(f"\nscreenshot: {keep} ({shot.stat().st_size:,} bytes); points per chart: {points}")


# Would set the page's title if the dashboard ever parsed a name as HTML (and the page's CSP
# let an inline handler run).
XSS = "<img src=x onerror=\"document.title='pwned'\">"
XSS_AS_TEXT = "&lt;img src=x onerror=\"document.title='pwned'\"&gt;"


def _list(dom: str, list_id: str) -> str:
    found = re.search(rf'<ul id="{list_id}">(.*?)</ul>', dom, re.S)
    assert found, f"no list {list_id} in the page"
    return found[1]


def test_names_from_events_show_as_text_and_run_nothing(chromium: str, env: Env,
                                                        tmp_path: Path,
                                                        worker_factory: list[Worker]) -> None:
    worker = configured_worker(env, tmp_path, worker_factory,
                               '[windows]\nsizes = ["10s"]\ngrace = "0s"\n[worker]\nidle = "1s"\n')
    start = (time.time() // 10 - 12) * 10
    predictions = [{"event_id": f"x{i}", "ts": start + i * 0.5, "model": XSS, "version": "v1",
                    "latency_ms": 10.0, "predicted": 1} for i in range(200)]
    labels = [{"event_id": p["event_id"], "ts": p["ts"] + 1, "label": 0} for p in predictions]
    lifecycle = [{"ts": start + 3, "model": XSS, "version": "v2", "kind": "training_finished",
                  "run_id": "r1", "duration_s": 60.0},
                 {"ts": start + 4, "model": XSS, "version": "v2", "kind": "deployed"}]
    produce(env.bootstrap, [(env.topic("predictions"), 0, orjson.dumps(predictions)),
                            (env.topic("labels"), 1, orjson.dumps(labels)),
                            (env.topic("deployments"), 0, orjson.dumps(lifecycle))])
    # every prediction is wrong: the error-rate rule fires for the model
    wait_for(lambda: any(a["model"] == XSS for a in worker.get("/api/v1/alerts")["alerts"]),
             timeout_s=60, what="an alert naming the model")
    wait_for(lambda: any(s.get("deployments") for s in worker.get(
        "/api/v1/metrics?scope=model")["metrics"] if s.get("model") == XSS),
             timeout_s=30, what="the deployment in a snapshot")

    url = f"http://127.0.0.1:{env.web_port}/"
    dom = _browser(["--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0",
                    "--dump-dom", url], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>factory-pulse</title>" in dom.stdout
    assert "pwned</title>" not in dom.stdout
    assert "<img" not in dom.stdout
    assert f"<b>{XSS_AS_TEXT}</b>" in _list(dom.stdout, "alerts")
    assert f"<b>{XSS_AS_TEXT}</b>: 1 run(s) finished, 1 deployed" in _list(dom.stdout,
                                                                          "deployments")
    # nothing even tried to run (the page's CSP would have blocked and logged it)
    assert "Content Security Policy" not in dom.stderr, dom.stderr[-2000:]
    assert "snapshots" in dom.stdout
