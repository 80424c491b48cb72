"""The dashboard in a real headless browser (Debian's chromium): it loads under its
Content-Security-Policy, every chart gets data and round axis ticks, the ten metrics each have a
chart, alerts and retraining requests read plainly, and names from events show as text.

The page states what each chart drew as data attributes of its <figure> (data-points,
data-ticks, data-tick-values, data-x-ticks, data-series); `--dump-dom` returns them."""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factory_log import generate
from tests.harness import Env, Worker, configured_worker, produce, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(args: list[str], profile: Path, size: str = "1400,900",
             ) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def _dump(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran; it loaded under its CSP without a complaint."""
    dom = _browser(["--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0",
                    "--dump-dom", url], profile)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Content Security Policy" not in dom.stderr, dom.stderr[-2000:]
    return dom.stdout


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


class _Page(HTMLParser):
    """The dumped DOM's chart figures (their attributes), the text of every element with an
    id, and every tag name: parsed, so a name inside an attribute is not taken for a tag."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self.tags: set[str] = set()
        self._open: list[str | None] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "figure" and found.get("id", "").startswith("chart-"):
            self.charts[found["id"].removeprefix("chart-")] = found
        if tag not in ("br", "meta", "link", "input", "img"):
            self._open.append(found.get("id"))
            if found.get("id"):
                self.text[found["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("br", "meta", "link", "input", "img") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            if element:
                self.text[element] += data


# Every field of the snapshot a regressor, devices, hosts and pipelines have: events of all
# six input topics, five minutes of a small factory (tests/factory_log.py), plus a model whose
# error rate jumps from 20 % to 80 % for three windows (a relative alert fires and resolves,
# and asks for retraining) and comes back.
CONFIG = """regressors = ["demand"]
[windows]
sizes = ["60s", "5m"]
grace = "1s"
[prices]
per_hour = { "NVIDIA H200" = 3.6, cpu = 0.1 }
per_kwh = 0.12
[worker]
idle = "2s"
[[alerts]]
name = "concept-drift"
metric = "error_rate"
op = ">"
threshold = 0.5
relative = true
baseline = 3
resolve = 0.2
action = "retrain"
models = ["drifty"]
"""
WINDOWS = 10


def _drifty(start: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    predictions, labels = [], []
    for w in range(WINDOWS):
        wrong_share = 0.8 if 4 <= w <= 6 else 0.2
        for i in range(50):
            ts = start + w * 60 + i
            predictions.append({"event_id": f"drifty-{w}-{i}", "ts": ts, "model": "drifty",
                                "version": "v1", "latency_ms": 5.0, "predicted": 1})
            labels.append({"event_id": f"drifty-{w}-{i}", "ts": ts + 0.5,
                           "label": 0 if i % 10 < wrong_share * 10 else 1})
    return predictions, labels


def _messages(env: Env, events: dict[str, list[dict[str, Any]]],
              ) -> list[tuple[str, int | None, bytes | None]]:
    """Batches of 200 events per message, in time order per topic."""
    out: list[tuple[str, int | None, bytes | None]] = []
    for topic, items in events.items():
        ordered = sorted(items, key=lambda e: e["ts"])
        for i in range(0, len(ordered), 200):
            out.append((env.topic(topic), None, orjson.dumps(ordered[i:i + 200])))
    return out


def _round_ticks(chart: str, labels: list[str], values: list[float]) -> None:
    """Ticks an operator reads at a glance: evenly spaced by 1, 2, 2.5 or 5 times a power of
    ten, each a multiple of that step, labelled in fixed notation with at most two decimals."""
    assert len(values) >= 3, (chart, values)
    assert len(labels) == len(values), (chart, labels, values)
    step = values[1] - values[0]
    assert step > 0, (chart, values)
    assert all(math.isclose(b - a, step, rel_tol=1e-6)
               for a, b in itertools.pairwise(values)), (chart, values)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5)), (chart, step)
    assert all(math.isclose(v / step, round(v / step), abs_tol=1e-6) for v in values), (
        chart, values)
    for text in labels:
        assert not re.search(r"\d[eE][-+]?\d", text), (chart, text)
        decimals = re.search(r"\.(\d+)", text)
        assert decimals is None or len(decimals[1]) <= 2, (chart, text)


def test_every_metric_has_a_chart_with_data_and_round_ticks(chromium: str, env: Env,
                                                           tmp_path: Path,
                                                           worker_factory: list[Worker]) -> None:
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    url = f"http://127.0.0.1:{env.web_port}/"
    # before the first snapshot: the window selector offers the configured sizes
    empty = _Page(_dump(url, tmp_path / "p0"))
    assert empty.text["window"] == "1 min windows5 min windows"
    assert all(c["data-points"] == "0" for c in empty.charts.values())

    start = time.time() // 60 * 60 - 7200
    log = generate(seed=7, n_predictions=2400, start=start, span_s=WINDOWS * 60)
    predictions, labels = _drifty(start)
    log.events["predictions"] += predictions
    log.events["labels"] += labels
    produce(env.bootstrap, _messages(env, log.events))

    def settled() -> bool:
        rows = worker.get("/api/v1/metrics?window=60s&limit=5000")["metrics"]
        scopes = {s["scope"] for s in rows}
        per_model = [s for s in rows if s["scope"] == "model" and s["model"] == "drifty"]
        history = worker.get("/api/v1/alerts/history")["alerts"]
        return (scopes == {"model", "device", "host", "pipeline"} and len(per_model) == WINDOWS
                and [a["state"] for a in history] == ["resolved", "firing"]
                and bool(worker.get("/api/v1/retraining")["requests"]))

    wait_for(settled, timeout_s=120, what="every scope's windows, the alert resolved")
    page = _Page(_dump(url, tmp_path / "p1"))

    # the ten metrics each have a chart, and every chart has data and round ticks; which one
    # a chart (or a detail heading) shows is the registry's seed of its field
    assert {c["data-metric"] for c in page.charts.values()} == {str(m) for m in range(1, 11)}
    assert page.text["chart-f1"].startswith("3 · accuracyF1"), page.text["chart-f1"]
    assert page.text["chart-throughput"].startswith("9 · error ratepredictions / s")
    assert page.text["chart-records"].startswith("2 · data processing speedrecords / s")
    assert "7 · cost per prediction" in page.text["detail"], page.text["detail"]
    for name, chart in page.charts.items():
        assert int(chart["data-points"]) > 0, (name, chart)
        _round_ticks(name, chart["data-ticks"].split("|"),
                     [float(v) for v in chart["data-tick-values"].split(",")])
        times = chart["data-x-ticks"].split("|")
        assert len(times) >= 3, (name, times)
        assert all(re.fullmatch(r"\d\d:\d\d", t) for t in times), (name, times)
        assert "_unattributed" not in chart["data-series"], name
        assert "_factory" not in chart["data-series"], name
    series = {name: set(c["data-series"].split("|")) for name, c in page.charts.items()}
    # a regressor has no F1, but a mean absolute error ("all models" pools each kind)
    assert series["f1"] - {"all models"} == {"churn", "intent", "drifty"}
    assert series["mae"] - {"all models"} == {"demand"}
    assert "demand" in page.text["chart-f1"]  # and the F1 chart says where it is
    assert {"telemetry with no model", "all models"} <= series["gpu"]
    assert series["records"] == {"features/extract", "features/join", "training-data/extract",
                                 "training-data/join"}
    assert "$" in page.charts["cost"]["data-ticks"]
    # units come from the metric registry (/api/v1/info), each shown as it reads best
    ticks = {name: c["data-ticks"].split("|") for name, c in page.charts.items()}
    assert all(t.endswith(" ms") for t in ticks["latency"]), ticks["latency"]
    assert all(t.endswith(" %") for t in ticks["error"]), ticks["error"]
    assert all(t.endswith("B/s") for t in ticks["bytes"]), ticks["bytes"]
    assert all(re.search(r" (s|min|h)$", t) for t in ticks["training"]), ticks["training"]
    assert re.search(r"error rate\s*[\d.]+ %", page.text["detail"]), page.text["detail"]

    # a relative alert says so; the history lists it firing and then resolved, newest first
    history = page.text["history"]
    assert re.search(r"firing warning concept-drift on drifty: error_rate \+\d+ % over baseline "
                     r"\(threshold \+50 %\)", history), history
    assert history.index("resolved") < history.index("firing")
    retraining = page.text["retraining"]
    assert "drifty: error_rate +" in retraining, retraining
    assert "version not known yet" in retraining, retraining
    assert not re.search("unknown|null", retraining), retraining
    assert "run(s) finished" in page.text["deployments"]
    assert page.text["detail-title"] == "all models"
    assert "error rate" in page.text["detail"]

    # a model chosen in the address: its own numbers, a regressor's MAE and no F1
    chosen = _Page(_dump(url + "#model=demand", tmp_path / "p2"))
    assert chosen.text["detail-title"] == "demand"
    assert "MAE" in chosen.text["detail"]
    assert "F1" not in chosen.text["detail"]

    shot = tmp_path / "dashboard.png"
    taken = _browser(["--virtual-time-budget=8000", f"--screenshot={shot}", url],
                     tmp_path / "p3", size="1400,2000")
    assert taken.returncode == 0, taken.stderr[-2000:]
    keep = Path(__file__).resolve().parents[2] / ".factory-test" / "dashboard.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)
    points = {name: int(c["data-points"]) for name, c in page.charts.items()}
    print(f"\nscreenshot: {keep}; points per chart: {points}")


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

    # nothing even tried to run (the page's CSP would have blocked and logged it: `_dump`)
    dom = _dump(f"http://127.0.0.1:{env.web_port}/", tmp_path / "p1")
    page = _Page(dom)
    assert "<title>factory-pulse</title>" in dom
    assert "pwned</title>" not in dom
    assert "img" not in page.tags  # the name sits in attributes and text, never as an element
    assert f"<b>{XSS_AS_TEXT}</b>" in _list(dom, "alerts")
    assert f"<b>{XSS_AS_TEXT}</b>: 1 run(s) finished, 1 deployed" in _list(dom, "deployments")
    assert XSS in page.text["chart-error"]  # its legend entry, as text
    assert "snapshots" in dom
