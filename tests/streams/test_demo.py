"""The README's main command, as a new user runs it: `factory-pulse demo` (its own broker,
worker, collector and simulator) must publish closed windows while the simulator keeps
sending, and Ctrl-C must stop everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson

from tests.harness import CLI, free_port


def _closed(web: int) -> int:
    url = f"http://127.0.0.1:{web}/api/v1/metrics?window=10s&limit=5000"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return len(orjson.loads(resp.read()).get("metrics", []))
    except OSError:
        return 0


def test_the_demo_publishes_closed_windows_within_60s_while_its_simulator_sends(
    tmp_path: Path,
) -> None:
    port, web = free_port(2), free_port()
    environ = {**os.environ, "FACTORY_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
               "FACTORY_STATE_DIR": str(tmp_path), "FACTORY_WEB_PORT": str(web),
               "PYTHONUNBUFFERED": "1"}
    environ.pop("FACTORY_CONFIG", None)
    out = tmp_path / "demo.out"
    with out.open("wb") as log:
        demo = subprocess.Popen([*CLI, "demo", "--drift-at", "3600"], env=environ,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        began = time.monotonic()
        while not (tmp_path / "logs" / "worker.log").exists():  # the broker is up
            assert demo.poll() is None, out.read_text()
            assert time.monotonic() - began < 120, "the demo's broker did not start"
            time.sleep(0.5)
        started = time.monotonic()
        closed = 0
        while time.monotonic() - started < 60 and not closed:
            time.sleep(2)
            assert demo.poll() is None, out.read_text()
            closed = _closed(web)
        took = time.monotonic() - started
        simulator = (tmp_path / "logs" / "simulate.log").read_text(errors="replace")
        print(f"\nfactory-pulse demo on private ports: {closed} closed 10 s windows "
              f"{took:.0f}s after its services started (broker start "
              f"{started - began:.0f}s); simulator still sending: {demo.poll() is None}")
        assert closed, f"no closed window within 60s\n{(tmp_path / 'logs' / 'worker.log')}"
        assert "Traceback" not in simulator
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            code = demo.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            code = demo.wait()
    broker_pid = tmp_path / "kafka" / "broker.pid"
    assert code == 0, out.read_text()
    assert not broker_pid.exists() or not Path(
        f"/proc/{broker_pid.read_text().split()[0]}").exists()
