"""The README's main command, as a new user runs it: `factory-pulse demo` (its own broker,
worker, collector and simulator) must publish closed windows while the simulator keeps
sending, and Ctrl-C must stop everything it started."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import orjson

from tests.harness import demo


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
    with demo(tmp_path) as running:
        began = time.monotonic()
        while not (tmp_path / "logs" / "worker.log").exists():  # the broker is up
            assert running.process.poll() is None, running.out.read_text()
            assert time.monotonic() - began < 120, "the demo's broker did not start"
            time.sleep(0.5)
        started = time.monotonic()
        closed = 0
        while time.monotonic() - started < 60 and not closed:
            time.sleep(2)
            assert running.process.poll() is None, running.out.read_text()
            closed = _closed(running.web)
        took = time.monotonic() - started
        simulator = (tmp_path / "logs" / "simulate.log").read_text(errors="replace")
        print(f"\nfactory-pulse demo on private ports: {closed} closed 10 s windows "
              f"{took:.0f}s after its services started (broker start "
              f"{started - began:.0f}s); simulator still sending: "
              f"{running.process.poll() is None}")
        assert closed, f"no closed window within 60s\n{(tmp_path / 'logs' / 'worker.log')}"
        assert "Traceback" not in simulator
    broker_pid = tmp_path / "kafka" / "broker.pid"
    assert running.code == 0, running.out.read_text()
    assert not broker_pid.exists() or not Path(
        f"/proc/{broker_pid.read_text().split()[0]}").exists()
