"""Alerts pushed to a real Alertmanager (v0.35.0, built from its Go module) by a real worker."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.settings import load_settings
from streams.alertmanager import AlertmanagerPush, Tracked, postable
from streams.local_alertmanager import LocalAlertmanager
from tests.harness import Env, Worker, configured_worker, produce, wait_for


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[LocalAlertmanager]:
    am = LocalAlertmanager(tmp_path / "alertmanager").start()
    yield am
    am.stop()


def _alert(state: str, ts: float, value: float = 0.31) -> dict[str, Any]:
    return {"alert_id": "churn:error-rate-high:1000", "rule": "error-rate-high",
            "model": "churn", "scope": "model", "state": state, "severity": "warning",
            "metric": "error_rate", "value": value, "threshold": 0.25, "relative": False,
            "window_start": ts - 120, "window_end": ts - 60, "ts": ts}


def _alerts(am: LocalAlertmanager) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as resp:  # noqa: S310
        alerts: list[dict[str, Any]] = orjson.loads(resp.read())
    return alerts


def _ends(alert: dict[str, Any]) -> float:
    return datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()


def test_postable_alert_has_the_labels_routing_needs() -> None:
    settings = load_settings({"FACTORY_ALERTMANAGER_URL": "http://am:9093",
                              "FACTORY_WEB_PORT": "7000"})
    push = AlertmanagerPush(settings, failures=Counter())
    push.add(_alert("firing", 1000.0))
    (alert,) = push.due(now=1010.0)
    assert alert["labels"] == {"alertname": "error-rate-high", "model": "churn",
                               "severity": "warning", "scope": "model"}
    assert alert["annotations"]["value"] == "0.31"
    assert alert["annotations"]["threshold"] == "0.25"
    assert alert["annotations"]["summary"] == "error_rate was 0.31 (> 0.25) for model churn"
    assert alert["startsAt"] == "1970-01-01T00:16:40.000Z"
    assert alert["endsAt"] == "1970-01-01T00:20:50.000Z"  # now + 4 resends of 60 s
    assert alert["generatorURL"] == "http://127.0.0.1:7000/#model=churn&window=60"
    push.add(_alert("resolved", 1100.0))
    (resolved,) = push.due(now=1110.0)
    assert resolved["endsAt"] == "1970-01-01T00:18:20.000Z"  # when it resolved
    assert resolved["startsAt"] == alert["startsAt"]
    assert push.due(now=1100.0 + 4 * 60 + 1) == []  # Alertmanager has expired it by then
    other = postable(Tracked({**_alert("firing", 5.0), "relative": True, "value": 1.58}, None),
                     {"error-rate-high": ">"}, "http://d/", 10.0, 60.0)
    assert other["annotations"]["summary"].startswith("error_rate changed by 1.58 over its")
    assert "startsAt" not in other


@pytest.mark.integration
def test_firing_resent_and_resolved_alerts_reach_a_real_alertmanager(
        env: Env, tmp_path: Path, worker_factory: list[Worker],
        alertmanager: LocalAlertmanager) -> None:
    worker = configured_worker(env, tmp_path, worker_factory,
                               f'[alertmanager]\nurls = ["{alertmanager.url}"]\n'
                               'resend = "2s"\ndashboard_url = "http://pulse.example/"\n')
    now = time.time()
    produce(env.bootstrap, [(env.topic("alerts"), 0, orjson.dumps(_alert("firing", now)))])
    (alert,) = wait_for(lambda: _alerts(alertmanager), 20, "the alert in Alertmanager")
    assert alert["labels"] == {"alertname": "error-rate-high", "model": "churn",
                               "severity": "warning", "scope": "model"}
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["value"] == "0.31"
    assert alert["annotations"]["threshold"] == "0.25"
    assert alert["generatorURL"] == "http://pulse.example/#model=churn&window=60"
    assert now + 4 < _ends(alert) < now + 20  # four resend intervals ahead
    first_end = _ends(alert)
    # re-sent while it fires, so Alertmanager keeps it: its end moves on
    wait_for(lambda: [a for a in _alerts(alertmanager) if _ends(a) > first_end + 1], 15,
             "the alert re-sent with a later endsAt")
    produce(env.bootstrap, [(env.topic("alerts"), 0,
                             orjson.dumps(_alert("resolved", time.time())))])
    wait_for(lambda: _alerts(alertmanager) == [], 15, "the alert resolved in Alertmanager")

    # Alertmanager gone: the failure is counted and logged, the worker serves on
    alertmanager.stop()
    produce(env.bootstrap, [(env.topic("alerts"), 1,
                             orjson.dumps({**_alert("firing", time.time()), "model": "fraud"}))])
    counted = 'factory_output_failures_total{topic="alertmanager",reason="unreachable"}'
    wait_for(lambda: counted in worker.get_text("/metrics"), 20, "the failure counted")
    assert worker.get("/healthz") is not None
    assert "not delivered to" in worker.log_path.read_text()
