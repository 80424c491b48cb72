"""Firing and resolved alerts pushed to Prometheus Alertmanager, as Prometheus pushes them.

Alertmanager's v2 API (`POST /api/v2/alerts`) takes a list of alerts identified by their
labels (`alertname`, `model`, `severity`, `scope`); a firing alert carries an `endsAt` a few
resend intervals ahead and must be sent again before then, or Alertmanager resolves it by
itself. So, like Prometheus, every worker follows the `alerts` topic, keeps what fires, sends
each transition at once and every firing alert again each `alertmanager.resend` with
`endsAt` four intervals ahead; a resolved alert is sent with its `endsAt` the moment it
resolved, until one delivery succeeds. Several workers send the same alerts, as a Prometheus
HA pair does: Alertmanager deduplicates them by their labels, so routing to Slack or
PagerDuty works unchanged.

A failed delivery never blocks metrics: it is counted in
`factory_output_failures_total{topic="alertmanager"}`, logged, and the next push carries the
same alerts again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from core.settings import Settings

log = logging.getLogger(__name__)

SINK = "alertmanager"  # the `topic` label of its failures in factory_output_failures_total
# Like Prometheus: a firing alert's endsAt is this many resend intervals ahead.
ENDS_AFTER_RESENDS = 4
# Transitions that arrive together (a window closing for many models) go in one request.
DEBOUNCE_S = 0.2

Key = tuple[str, str, str]  # rule, scope, entity


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass(slots=True)
class Tracked:
    """The newest record of one alert and when its episode started firing (wall time)."""

    record: dict[str, Any]
    started: float | None


def postable(alert: Tracked, ops: Mapping[str, str], dashboard: str, now: float,
             resend_s: float) -> dict[str, Any]:
    """One alert of the v2 API's `postableAlerts` body."""
    record = alert.record
    firing = record["state"] == "firing"
    window = record["window_end"] - record["window_start"]
    model = record["model"]
    value = record.get("value")
    shown = "unknown" if value is None else f"{value:.4g}"
    op = ops.get(record["rule"], "?")
    if record.get("relative"):
        summary = (f"{record['metric']} changed by {shown} over its baseline "
                   f"({op} {record['threshold']:g}) for {record['scope']} {model}")
    else:
        summary = f"{record['metric']} was {shown} ({op} {record['threshold']:g}) " \
                  f"for {record['scope']} {model}"
    out: dict[str, Any] = {
        "labels": {"alertname": record["rule"], "model": model,
                   "severity": record["severity"], "scope": record["scope"]},
        "annotations": {"summary": summary, "value": shown,
                        "threshold": f"{record['threshold']:g}", "metric": record["metric"],
                        "relative": str(bool(record.get("relative"))).lower(),
                        "alert_id": str(record.get("alert_id", "")),
                        "window_start": rfc3339(record["window_start"]),
                        "window_end": rfc3339(record["window_end"])},
        "generatorURL": f"{dashboard}#model={quote(model, safe='')}&window={window:g}",
        "endsAt": rfc3339(now + ENDS_AFTER_RESENDS * resend_s if firing else record["ts"]),
    }
    if alert.started is not None:
        out["startsAt"] = rfc3339(alert.started)
    return out


def _check(record: Any) -> dict[str, Any]:
    """The alert record, or TypeError: a forged or broken record is skipped, not sent."""
    if not isinstance(record, dict):
        raise TypeError(f"expected an object, got {type(record).__name__}")
    record.setdefault("scope", "model")  # the record's default (schemas.outputs.Alert)
    for name in ("rule", "model", "state", "severity", "scope", "metric"):
        if not isinstance(record.get(name), str):
            raise TypeError(f"{name}: expected a string")
    if record["state"] not in ("firing", "resolved"):
        raise TypeError("state: expected firing or resolved")
    for name in ("ts", "window_start", "window_end", "threshold"):
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise TypeError(f"{name}: expected a finite number")
    value = record.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value)):
        raise TypeError("value: expected a finite number or null")
    return record


class AlertmanagerPush:
    """The alerts to send, kept from the `alerts` topic; `run` sends them."""

    def __init__(self, settings: Settings, failures: Counter[tuple[str, str]]) -> None:
        config = settings.alertmanager
        self.urls = [f"{url.rstrip('/')}/api/v2/alerts" for url in config.urls]
        self.resend_s = config.resend_s
        self.timeout_s = config.timeout_s
        self.dashboard = config.dashboard_url or \
            f"http://{settings.web_host}:{settings.web_port}/"
        self.ops = {rule.name: rule.op for rule in settings.alerts}
        self.failures = failures
        self.firing: dict[Key, Tracked] = {}
        self.resolved: dict[Key, Tracked] = {}  # until one delivery succeeds
        self.changed = asyncio.Event()

    def add(self, message: Any) -> None:
        """Take one record of the `alerts` topic (TypeError when it is not an alert)."""
        record = _check(message)
        key = (record["rule"], record["scope"], record["model"])
        if record["state"] == "firing":
            self.firing[key] = Tracked(record, record["ts"])
            self.resolved.pop(key, None)
        else:
            before = self.firing.pop(key, None)
            self.resolved[key] = Tracked(record, before.started if before else None)
        # an old record read while catching up changes what is kept, not what is sent now
        if record["ts"] >= time.time() - ENDS_AFTER_RESENDS * self.resend_s:
            self.changed.set()

    def due(self, now: float) -> list[dict[str, Any]]:
        """Every firing alert, and the resolved ones Alertmanager may still hold as firing."""
        horizon = now - ENDS_AFTER_RESENDS * self.resend_s
        for key in [k for k, t in self.resolved.items() if t.record["ts"] < horizon]:
            del self.resolved[key]
        return [postable(t, self.ops, self.dashboard, now, self.resend_s)
                for t in (*self.firing.values(), *self.resolved.values())]

    async def push(self, session: aiohttp.ClientSession) -> bool:
        """Send what is due to every Alertmanager; True when all took it."""
        alerts = self.due(time.time())
        if not alerts:
            return True
        sent_resolved = list(self.resolved)
        results = await asyncio.gather(*(self._post(session, url, alerts) for url in self.urls))
        if all(results):
            for key in sent_resolved:
                self.resolved.pop(key, None)
        return all(results)

    async def _post(self, session: aiohttp.ClientSession, url: str,
                    alerts: list[dict[str, Any]]) -> bool:
        try:
            async with session.post(url, json=alerts) as resp:
                if resp.status == 200:
                    return True
                detail = f"HTTP {resp.status}: {(await resp.text())[:500]}"
                reason = "refused" if 400 <= resp.status < 500 else "error"
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail, reason = f"{type(exc).__name__}: {exc}", "unreachable"
        self.failures[(SINK, reason)] += 1
        log.warning("%d alert(s) not delivered to %s (sent again within %gs): %s",
                    len(alerts), url, self.resend_s, detail)
        return False

    async def run(self) -> None:
        """Push at each change (after a short pause, so they go together) and every
        resend interval, until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            next_resend = time.monotonic() + self.resend_s
            while True:
                wait = max(0.0, next_resend - time.monotonic())
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=wait)
                    await asyncio.sleep(DEBOUNCE_S)
                except TimeoutError:
                    next_resend = time.monotonic() + self.resend_s
                self.changed.clear()
                await self.push(session)
