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
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.faust_internals import refresh_metadata
from core.kafka import client_kwargs
from core.settings import Settings, parse_duration
from schemas.fields import MAX_STRING
from schemas.outputs import METRICS
from streams.loop_lag import LoopLag

log = logging.getLogger(__name__)

# Fields that are not metrics: identity and bookkeeping of a snapshot.
IDENTITY = frozenset({"scope", "model", "host", "device", "pipeline", "stage", "window_s",
                      "window_start", "window_end", "revision", "ts"})
LABELS = ("model", "host", "device", "pipeline", "stage")
SCOPES = ("model", "device", "host", "pipeline")
MAX_RESULTS = 5000
# Series of data-named entities (snapshot gauges, firing alerts) one `/metrics` answer holds at
# most; the rest are counted in `factory_series_dropped`. A hundred models with two window
# sizes need about 8,000.
MAX_SERIES = 20_000


# The metrics `/metrics` exports: the registry's numbers (flags and maps are not gauges), as the
# contract names them; a snapshot field of any other name is not exported.
EXPORTED = frozenset(name for name, m in METRICS.items() if m.kind == "number")


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
        for name, value in params.items():
            if name not in known:
                shown = repr(name) if len(name) <= 64 else f"{name[:64]!r}..."
                raise QueryError(f"unknown parameter {shown} (known: {', '.join(sorted(known))})")
            if len(value) > MAX_STRING:  # no name is longer: such a filter matches nothing
                raise QueryError(f"{name}: longer than {MAX_STRING} characters ({len(value)})")
        scope = params.get("scope")
        if scope is not None and scope not in SCOPES:
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
        self.snapshots: dict[tuple[tuple[str, ...], float, float], dict[str, Any]] = {}
        self.newest_end = -math.inf

    def add(self, snapshot: dict[str, Any]) -> None:
        _check_snapshot(snapshot)
        entity = tuple(str(snapshot.get(k) or "") for k in ("scope", *LABELS))  # names may hold "|"
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
        newest: dict[tuple[tuple[str, ...], float], dict[str, Any]] = {}
        for (entity, size, start), snapshot in self.snapshots.items():
            key = (entity, size)
            if key not in newest or newest[key]["window_start"] < start:
                newest[key] = snapshot
        return iter(newest.values())


class AlertsView:
    """Firing alerts, the last transitions (firing and resolved: an operator wants to see
    what fired overnight) and recent retraining requests, from the `alerts` and `retraining`
    topics; the lists keep their newest `keep` records."""

    def __init__(self, keep: int = 200) -> None:
        self.firing: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.transitions: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.keep = keep

    def add(self, message: dict[str, Any]) -> None:
        if not isinstance(message, dict):
            raise TypeError(f"expected an object, got {type(message).__name__}")
        if "request_id" in message:
            _check_fields(message, ("request_id", "model", "reason"), ("ts",))
            self.requests = [*self.requests, message][-self.keep:]
            return
        _check_fields(message, ("rule", "model", "state", "severity"), ("window_end",))
        if not isinstance(message.get("scope", "model"), str) or not isinstance(
                message.get("value", 0), int | float | None):
            raise TypeError("alert: scope must be a string and value a number")
        self.transitions = [*self.transitions, message][-self.keep:]
        key = (message["rule"], message.get("scope", "model"), message["model"])
        if message["state"] == "firing":
            self.firing[key] = message
        else:
            self.firing.pop(key, None)


def prometheus(view: MetricsView, counters: dict[str, dict[str, int]],
               join: dict[str, int], alerts: AlertsView, loop: LoopLag,
               failures: Mapping[tuple[str, str], int], max_series: int = MAX_SERIES) -> str:
    """Prometheus text exposition (format 0.0.4): one gauge family per metric, `factory_` names.

    Only the metrics of the output record (`EXPORTED`) are written, under their own names, and
    every label value is escaped, so nothing read from Kafka adds a line or a family. Series
    named by data (snapshot gauges, firing alerts) stop at `max_series`, the rollups first;
    `factory_series_dropped` counts the rest.
    """
    kept = dropped = 0
    families: dict[str, list[str]] = {}
    for snapshot in sorted(view.latest(), key=_series_order):
        labels = {k: str(snapshot[k]) for k in LABELS if snapshot.get(k)}
        labels["window"] = f"{snapshot['window_s']:g}s"
        label_text = _labels(dict(sorted(labels.items())))
        for name in sorted(EXPORTED.intersection(snapshot)):
            value = snapshot[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if kept >= max_series:
                dropped += 1
                continue
            kept += 1
            families.setdefault(name, []).append(f"factory_{name}{label_text} {_value(value)}")
    lines: list[str] = []
    for name in sorted(families):
        info = METRICS[name]
        lines += [f"# HELP factory_{name} {info.help} ({info.unit}), newest closed window",
                  f"# TYPE factory_{name} gauge", *families[name]]
    for metric, help_text in (("accepted", "events accepted"), ("rejected", "events dead-lettered"),
                              ("messages", "messages read")):
        lines += [f"# HELP factory_input_{metric}_total {help_text} by this worker's partitions",
                  f"# TYPE factory_input_{metric}_total counter"]
        lines += [f"factory_input_{metric}_total{_labels({'topic': topic})} {c[metric]}"
                  for topic, c in sorted(counters.items())]
    for name, help_text in (("duplicates", "repeated prediction event ids and labels ignored"),
                            ("labels_unmatched", "labels whose prediction never arrived within "
                                                 "the label horizon"),
                            ("labels_waiting", "labels waiting for their prediction"),
                            ("partials_past_retention", "window partials that reached the "
                                                        "snapshot stage after it forgot the "
                                                        "window"),
                            ("partials_malformed", "records of the partials topic skipped and "
                                                   "partials dropped as unreadable (forged)"),
                            ("predictions_joinable", "predictions held for their label"),
                            ("window_slots", "window states held (bounded by the retention)"),
                            ("snapshot_windows", "windows held by the snapshot stage")):
        kind = "counter" if name in ("duplicates", "labels_unmatched", "partials_past_retention",
                                     "partials_malformed") else "gauge"
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
    lines += [f"factory_output_failures_total{_labels({'topic': topic, 'reason': reason})} "
              f"{count}" for (topic, reason), count in sorted(failures.items())]
    lines += ["# HELP factory_alerts_firing alerts firing now, by rule, model and severity",
              "# TYPE factory_alerts_firing gauge"]
    for alert in sorted(alerts.firing.values(), key=lambda a: (a["rule"], a["model"])):
        if kept >= max_series:
            dropped += 1
            continue
        kept += 1
        labels = {"rule": alert["rule"], "model": alert["model"], "severity": alert["severity"]}
        lines.append(f"factory_alerts_firing{_labels(labels)} 1")
    lines += [f"# HELP factory_series_dropped series of models, devices, hosts, pipelines and "
              f"alerts left out of this answer (over {max_series})",
              "# TYPE factory_series_dropped gauge", f"factory_series_dropped {dropped}"]
    return "\n".join(lines) + "\n"


def _series_order(snapshot: dict[str, Any]) -> tuple[Any, ...]:
    """Rollups (`_factory`, `_unattributed`) first, then by scope, names and window size."""
    names = tuple(str(snapshot.get(k) or "") for k in LABELS)
    return (not names[0].startswith("_"), SCOPES.index(snapshot["scope"]), names,
            snapshot["window_s"])


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(text: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _check_fields(message: dict[str, Any], strings: tuple[str, ...],
                  numbers: tuple[str, ...]) -> None:
    for name in strings:
        if not isinstance(message.get(name), str):
            raise TypeError(f"{name}: expected a string")
    for name in numbers:
        value = message.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise TypeError(f"{name}: expected a finite number")


def _check_snapshot(snapshot: Any) -> None:
    """Refuse a record without the identity the views sort, filter and label by (TypeError):
    a broken or forged record on the topic is skipped, not served."""
    if not isinstance(snapshot, dict):
        raise TypeError(f"expected an object, got {type(snapshot).__name__}")
    if not isinstance(snapshot.get("scope"), str) or snapshot["scope"] not in SCOPES:
        raise TypeError(f"scope: expected one of {', '.join(SCOPES)}")
    _check_fields(snapshot, (), ("window_s", "window_start", "window_end", "revision"))
    for name in LABELS:
        if not isinstance(snapshot.get(name), str | None):
            raise TypeError(f"{name}: expected a string")


class Follower(Protocol):
    """What `follow` keeps up to date: a view, or a sink that pushes what it is given."""

    def add(self, message: Any) -> None: ...


async def follow(settings: Settings, topic: str, view: Follower) -> None:
    """Keep `view` up to date with `topic` until cancelled."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await asyncio.sleep(1)
            await refresh_metadata(consumer)
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
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                            AttributeError, IndexError):  # `[1]` or worse, from anyone
                        log.warning("skipping an unreadable snapshot at offset %s", record.offset)
    finally:
        await consumer.stop()
