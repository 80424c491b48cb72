"""The worker's HTTP surface from outside: our views only, security headers on every answer,
and bad or oversized requests answered 400 without a traceback in the worker's log."""

from __future__ import annotations

import http.client
import re
from email.message import Message
from pathlib import Path

import orjson
import pytest

from core.topics import shard_table
from tests.harness import Env, Worker

# Every view of faust.web.apps (router, tables, statistics and assignment, graph, monitor
# figures), by the paths Faust mounts them at; `{t}` is one of our tables.
BUILTIN = ("/router/", "/router/topics", "/router/{t}/", "/router/{t}/key/", "/table/",
           "/table/{t}/", "/table/{t}/key/", "/graph/", "/assignment/", "/performance/",
           "/stats/")
# Faust's settings that would turn each of them on, as its environment variables.
ALL_ENABLED = {"APP_DEBUG": "true", "APP_WEB_STATS_ENABLED": "true",
               "APP_WEB_GRAPH_ENABLED": "true", "APP_WEB_METRICS_ENABLED": "true",
               "APP_WEB_ROUTER_ENABLED": "true", "APP_WEB_TABLES_ENABLED": "true"}
OURS = ("/", "/static/dashboard.css", "/static/charts.js", "/static/dashboard.js",
        "/api/v1/metrics", "/api/v1/alerts", "/api/v1/alerts/history", "/api/v1/retraining",
        "/api/v1/ingest", "/api/v1/info", "/metrics", "/healthz")


def _request(worker: Worker, path: str, headers: dict[str, str] | None = None,
             ) -> tuple[int, Message, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", worker.env.web_port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("faust_env", [{}, ALL_ENABLED], ids=["default", "all-enabled"])
def test_fausts_builtin_views_are_not_served(env: Env, tmp_path: Path,
                                             worker_factory: list[Worker],
                                             faust_env: dict[str, str]) -> None:
    env.extra.update(faust_env)
    env.create_topics()
    worker = Worker(env, tmp_path / "worker.log")
    worker_factory.append(worker.start())
    table = shard_table("predictions")
    answers = {path: _request(worker, path.format(t=table))[0] for path in BUILTIN}
    assert answers == dict.fromkeys(BUILTIN, 404)
    # `/` is the dashboard, not Faust's index or its statistics
    status, headers, body = _request(worker, "/")
    assert status == 200
    assert headers.get_content_type() == "text/html"
    assert b"<title>factory-pulse</title>" in body


def test_every_answer_carries_the_security_headers(worker: Worker) -> None:
    for path in OURS:
        status, headers, _ = _request(worker, path)
        assert status == 200, path
        policy = {d.split()[0]: d.split()[1:]
                  for d in headers["Content-Security-Policy"].split(";") if d.strip()}
        assert policy["script-src"] == ["'self'"], path
        assert policy["object-src"] == ["'none'"], path
        assert policy["base-uri"] == ["'none'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff", path

    page = _request(worker, "/")[2].decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S | re.I)
    assert scripts
    assert all(re.search(r'\bsrc="/static/', attrs) and not body.strip()
               for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", page, re.I), "an inline event handler"
    assert not re.search(r"<style|\sstyle\s*=|javascript:", page, re.I)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert _request(worker, asset)[0] == 200, asset


def test_info_and_alert_history_answer_before_the_first_snapshot(worker: Worker) -> None:
    """The dashboard fills its window selector from /api/v1/info before any window closed."""
    info = worker.get("/api/v1/info")
    metrics = info.pop("metrics")
    seeds = info.pop("seeds")
    assert info == {"app": worker.env.name, "window_sizes": [60.0], "regressors": []}
    assert len(seeds) == 10
    assert (seeds[0], seeds[6], seeds[9]) == ("training time", "cost per prediction",
                                              "innovation rate")
    assert metrics["cost_per_prediction_usd"] == {"unit": "usd", "seed": 7,
                                                  "help": "cost_usd / predictions"}
    assert {m["seed"] for m in metrics.values()} == set(range(1, 11))  # all ten are there
    assert worker.get("/api/v1/alerts/history") == {"alerts": []}


def test_oversized_and_malformed_requests_answer_400_without_a_traceback(worker: Worker,
                                                                          ) -> None:
    big = "m" * 100_000
    for path in ("/api/v1/metrics", "/metrics", "/api/v1/ingest", "/"):
        assert _request(worker, f"{path}?model={big}")[0] == 400, path
    assert _request(worker, "/metrics", headers={"X-Big": big})[0] == 400
    assert _request(worker, "/metrics", headers={f"X-{i}": "v" for i in range(200)})[0] == 400

    # Under aiohttp's 8 KiB line limit: refused by our parser, naming the parameter briefly.
    status, _, body = _request(worker, "/api/v1/metrics?model=" + "m" * 6000)
    assert status == 400
    assert orjson.loads(body)["error"].startswith("model: longer than 512 characters")
    status, _, body = _request(worker, f"/api/v1/metrics?{'p' * 6000}=1")
    assert status == 400
    assert len(body) < 500
    for query in ("limit=1e309", "from=nan", "to=-inf", "window=", "limit=", "scope=",
                  "window=1e400s", "limit=0x10", "model=%ff%fe", "model=%00", "model=a&model=b",
                  "%zz=1", "model=<script>"):
        status, headers, body = _request(worker, f"/api/v1/metrics?{query}")
        assert status in (200, 400), query
        assert headers.get_content_type() == "application/json", query
        assert orjson.loads(body), query
    assert _request(worker, "/healthz")[0] == 200

    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "Error handling request" not in log
    assert "refused a malformed HTTP request from 127.0.0.1: 400 (LineTooLong)" in log
