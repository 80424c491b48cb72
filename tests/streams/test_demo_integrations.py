"""`factory-pulse demo --kserve --alertmanager`: predictions that reach the worker only as
KServe inference logs are counted in closed windows, and the local Alertmanager runs beside
it, fed by the worker."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.harness import demo


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            return orjson.loads(resp.read())
    except OSError:
        return None


def test_the_demo_runs_on_kserve_logs_and_alertmanager(tmp_path: Path) -> None:
    with demo(tmp_path, "--kserve", "--alertmanager") as running:
        began = time.monotonic()
        while "alertmanager: http" not in running.out.read_text():
            assert running.process.poll() is None, running.out.read_text()
            assert time.monotonic() - began < 120, "the demo did not start"
            time.sleep(0.5)
        am = re.search(r"alertmanager: (http://\S+?)/#", running.out.read_text())
        assert am is not None
        assert _get(f"{am.group(1)}/api/v2/status")["cluster"]["status"] == "disabled"
        counted: list[dict[str, Any]] = []
        while time.monotonic() - began < 120 and not counted:
            time.sleep(2)
            assert running.process.poll() is None, running.out.read_text()
            rows = (_get(f"http://127.0.0.1:{running.web}/api/v1/metrics?model=churn"
                         "&window=10s") or {}).get("metrics", [])
            counted = [r for r in rows if r.get("predictions") and r.get("latency_p50_ms")]
        assert counted, (tmp_path / "logs" / "worker.log").read_text()[-3000:]
        assert "Traceback" not in (tmp_path / "logs" / "simulate.log").read_text()
        print(f"\ndemo --kserve --alertmanager: churn's first closed 10 s window counted "
              f"{counted[0]['predictions']} predictions from KServe logs, "
              f"{time.monotonic() - began:.0f}s after start")
    assert running.code == 0, running.out.read_text()
