"""The latest snapshot of every window, read back from the `metrics` topic, for HTTP.

Every worker follows the whole topic (no consumer group), so any worker answers for every
model whichever partitions it owns, and the API shows exactly what downstream consumers see.
Memory is bounded by the retention: windows older than the newest minus the retention go.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka import client_kwargs
from streams.loop_lag import LoopLag
from streams.settings import Settings, parse_duration

log = logging.getLogger(__name__)

# Fields that are not metrics: identity and bookkeeping of a snapshot.
IDENTITY = frozenset({"scope", "model", "host", "device", "pipeline", "stage", "window_s",
                      "window_start", "window_end", "revision", "ts"})
LABELS = ("model", "host", "device", "pipeline", "stage")
MAX_RESULTS = 5000


class QueryError(ValueError):
    """A bad query parameter; the message names it."""


@dataclass(frozen=True, slots=True)
class Query:
    model: str | None = None
    scope: str | None = None
    window_s: float | None = None
    start: float = -math.inf
    end: float = math.inf
    limit: int = 500

    @classmethod
    def parse(cls, params: Any) -> Query:
        known = {"model", "scope", "window", "from", "to", "limit"}
        for name in params:
            if name not in known:
                raise QueryError(f"unknown parameter {name!r} (known: {', '.join(sorted(known))})")
        scope = params.get("scope")
        if scope is not None and scope not in ("model", "device", "host", "pipeline"):
            raise QueryError("scope: expected model, device, host or pipeline")
        window = None
        if params.get("window") is not None:
            try:
                window = parse_duration("window", params["window"])
            except ValueError as exc:
                raise QueryError(str(exc).replace("invalid configuration ", "")) from None
        return cls(model=params.get("model") or None, scope=scope, window_s=window,
                   start=_number(params, "from", -math.inf), end=_number(params, "to", math.inf),
                   limit=int(_number(params, "limit", 500, 1, MAX_RESULTS)))


def _number(params: Any, name: str, default: float, low: float = -math.inf,
            high: float = math.inf) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"{name}: expected a number, got {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise QueryError(f"{name}: must be a finite number in [{low:g}, {high:g}]")
    return value


class MetricsView:
    """Newest revision of each (entity, window size, window start)."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self.snapshots: dict[tuple[str, float, float], dict[str, Any]] = {}
        self.newest_end = -math.inf

    def add(self, snapshot: dict[str, Any]) -> None:
        entity = "|".join(str(snapshot.get(k) or "") for k in ("scope", *LABELS))
        key = (entity, snapshot["window_s"], snapshot["window_start"])
        current = self.snapshots.get(key)
        if current is None or current["revision"] <= snapshot["revision"]:
            self.snapshots[key] = snapshot
        if snapshot["window_end"] > self.newest_end:
            self.newest_end = snapshot["window_end"]
            cutoff = self.newest_end - self.retention_s
            for old in [k for k, v in self.snapshots.items() if v["window_end"] < cutoff]:
                del self.snapshots[old]

    def query(self, q: Query) -> list[dict[str, Any]]:
        rows = [s for s in self.snapshots.values()
                if (q.model is None or s.get("model") == q.model)
                and (q.scope is None or s["scope"] == q.scope)
                and (q.window_s is None or s["window_s"] == q.window_s)
                and q.start <= s["window_start"] and s["window_end"] <= q.end]
        rows.sort(key=lambda s: (s["window_start"], s["scope"], s.get("model") or ""))
        return rows[-q.limit:]

    def latest(self) -> Iterator[dict[str, Any]]:
        """The newest window of each (entity, window size)."""
        newest: dict[tuple[str, float], dict[str, Any]] = {}
        for (entity, size, start), snapshot in self.snapshots.items():
            key = (entity, size)
            if key not in newest or newest[key]["window_start"] < start:
                newest[key] = snapshot
        return iter(newest.values())


class AlertsView:
    """Firing alerts and recent retraining requests, from the `alerts` and `retraining` topics."""

    def __init__(self, keep_requests: int = 200) -> None:
        self.firing: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.keep_requests = keep_requests

    def add(self, message: dict[str, Any]) -> None:
        if "request_id" in message:
            self.requests = [*self.requests, message][-self.keep_requests:]
            return
        key = (message["rule"], message.get("scope", "model"), message["model"])
        if message["state"] == "firing":
            self.firing[key] = message
        else:
            self.firing.pop(key, None)


def prometheus(view: MetricsView, counters: dict[str, dict[str, int]],
               join: dict[str, int], alerts: AlertsView, loop: LoopLag,
               failures: Mapping[tuple[str, str], int]) -> str:
    """Prometheus text exposition: one gauge family per metric, `factory_` names."""
    families: dict[str, list[str]] = {}
    for snapshot in view.latest():
        labels = {k: snapshot[k] for k in LABELS if snapshot.get(k)}
        labels["window"] = f"{snapshot['window_s']:g}s"
        label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
        for name, value in snapshot.items():
            if name in IDENTITY or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            families.setdefault(name, []).append(f"factory_{name}{{{label_text}}} {value!r}")
    lines: list[str] = []
    for name in sorted(families):
        lines += [f"# HELP factory_{name} {name} of the newest closed window",
                  f"# TYPE factory_{name} gauge", *families[name]]
    for metric, help_text in (("accepted", "events accepted"), ("rejected", "events dead-lettered"),
                              ("messages", "messages read")):
        lines += [f"# HELP factory_input_{metric}_total {help_text} by this worker's partitions",
                  f"# TYPE factory_input_{metric}_total counter"]
        lines += [f'factory_input_{metric}_total{{topic="{_escape(topic)}"}} {c[metric]}'
                  for topic, c in sorted(counters.items())]
    for name, help_text in (("duplicates", "repeated prediction event ids and labels ignored"),
                            ("labels_unmatched", "labels whose prediction never arrived within "
                                                 "the label horizon"),
                            ("labels_waiting", "labels waiting for their prediction"),
                            ("partials_past_retention", "window partials that reached the "
                                                        "snapshot stage after it forgot the "
                                                        "window"),
                            ("predictions_joinable", "predictions held for their label"),
                            ("window_slots", "window states held (bounded by the retention)"),
                            ("snapshot_windows", "windows held by the snapshot stage")):
        kind = "counter" if name in ("duplicates", "labels_unmatched",
                                     "partials_past_retention") else "gauge"
        suffix = "_total" if kind == "counter" else ""
        lines += [f"# HELP factory_{name}{suffix} {help_text} (this worker's shards)",
                  f"# TYPE factory_{name}{suffix} {kind}", f"factory_{name}{suffix} {join[name]}"]
    lines += ["# HELP factory_event_loop_lag_seconds how late the worker's loop ran its timer",
              "# TYPE factory_event_loop_lag_seconds gauge",
              f"factory_event_loop_lag_seconds {loop.last_s:.6f}",
              "# HELP factory_event_loop_lag_max_seconds worst loop lag since start",
              "# TYPE factory_event_loop_lag_max_seconds gauge",
              f"factory_event_loop_lag_max_seconds {loop.max_s:.6f}",
              "# HELP factory_event_loop_stalls_total loop lags over a second",
              "# TYPE factory_event_loop_stalls_total counter",
              f"factory_event_loop_stalls_total {loop.stalls}"]
    lines += ["# HELP factory_output_failures_total output records not delivered, by topic "
              "and reason (too_large: over the message limit; error: refused otherwise)",
              "# TYPE factory_output_failures_total counter"]
    lines += [f'factory_output_failures_total{{topic="{_escape(topic)}",reason="{reason}"}} '
              f'{count}' for (topic, reason), count in sorted(failures.items())]
    lines += ["# HELP factory_alerts_firing alerts firing now, by rule, model and severity",
              "# TYPE factory_alerts_firing gauge"]
    lines += [f'factory_alerts_firing{{rule="{_escape(a["rule"])}",model="{_escape(a["model"])}",'
              f'severity="{a["severity"]}"}} 1' for a in alerts.firing.values()]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def follow(settings: Settings, topic: str, view: MetricsView | AlertsView) -> None:
    """Keep `view` up to date with `topic` until cancelled."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await asyncio.sleep(1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    try:
                        view.add(orjson.loads(record.value))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        log.warning("skipping an unreadable snapshot at offset %s", record.offset)
    finally:
        await consumer.stop()
