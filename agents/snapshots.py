"""The snapshot stage: merges the shards' partial states and publishes metric snapshots.

It reads one single-partition topic, so exactly one worker runs it at a time, and keeps for
every (entity, window) the newest partial state of each shard. Replacing (not adding) makes
re-sent partials harmless. Windows close by event time, by the rule in `agents.closing`. A closed
window's snapshot goes to `metrics` with revision 1, and again with the next revision whenever
a late label or event changes it. The factory rollup `_factory` merges every model.

Deployment steps arrive here too (see `agents.deployments`): they are applied once per source
offset, pair training starts with finishes by `run_id`, and track each model's newest retrain.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from agents.aggregators.change import Adwin, MeanShift, PageHinkley
from agents.aggregators.drift import psi
from agents.aggregators.window import WindowState
from agents.alerts import RuleState, Transition, applies, evaluate, evaluate_signal
from agents.closing import EventClock
from agents.messages import (
    ALERT,
    DRIFT,
    FORMAT,
    FORMAT_KEY,
    LIFECYCLE,
    PART,
    RETRAIN,
    WINDOW,
    Deployments,
    Heartbeats,
    Partial,
    StageRecord,
    alert_key,
    check_format,
    decode_stage_record,
    is_window_key,
    model_key,
    parse_part_key,
    parse_window_key,
    part_key,
    stage_key_kind,
    window_key,
    window_start,
)
from core.faust_internals import TableWrite, batches, make_durable, send_changelog
from core.settings import AlertRule, Settings
from schemas import entities
from schemas.fields import MAX_MAGNITUDE
from schemas.outputs import STREAMING_METRICS

log = logging.getLogger(__name__)

FACTORY = "_factory"
# Training runs started and not yet finished, per model: a run that never reports its end
# must not grow the model's state forever (its duration then comes from `duration_s` only).
MAX_OPEN_RUNS = 100
LIFECYCLE_PART = "lifecycle"
# What reading a malformed record raises (a forged one: only the shards write the topic).
DATA_ERRORS = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
               IndexError)


@dataclass
class Entry:
    """One (entity, window): the shards' partials, and what has been published (the table
    holds the latter under the window's key, each partial under `part_key`)."""

    parts: dict[str, Any] = field(default_factory=dict)
    rev: int = 0
    closed: bool = False
    dirty: bool = False

    def merged(self) -> WindowState:
        out = WindowState()
        for state in self.parts.values():
            out = out.merge(WindowState.from_state(state))
        return out

    def to_state(self) -> dict[str, Any]:
        return {"rev": self.rev, "closed": self.closed}


class SnapshotStage:
    """In-memory state of the snapshot stage, backed by its table (partition 0)."""

    def __init__(self, settings: Settings, table: Any, outputs: dict[str, Any], app: Any,
                 shards: Iterable[str] = ()) -> None:
        self.settings = settings
        self.table = table
        self.metrics = outputs["metrics"]
        self.alerts = outputs["alerts"]
        self.retraining = outputs["retraining"]
        self.app = app
        self.pinned = {model: pinned_reference(path)
                       for model, path in settings.drift.pinned.items()}
        self.alert_states: dict[str, Any] = {}
        self.drift: dict[str, Any] = {}
        # labels (count, wrong) that arrived since the last publication, per model and
        # window start: what the per-label detector reads next (`_detect`)
        self.labels: dict[str, dict[float, list[float]]] = {}
        # and the new values (count, sum) of the scores ("score") and of each feature
        # ("f:<name>"), for the per-value detectors
        self.values: dict[str, dict[float, dict[str, list[float]]]] = {}
        self.retrain: dict[str, Any] = {}
        self.entries: dict[str, Entry] = {}
        # every shard (family:partition) that reports heartbeats
        self.clock = EventClock(shards, settings.grace_s, time.monotonic())
        self.models: dict[str, Any] = {}
        self.sources: dict[str, int] = {}
        self.factory_revs: dict[str, int] = {}
        # Windows ending before this were published and forgotten: a partial for one of them
        # (re-sent, or from a shard far behind) must not start it again from nothing.
        self.forgotten_before = -math.inf
        self.ignored_partials = 0
        self.malformed = 0  # records of the partials topic skipped, partials dropped
        self.loaded = False
        self.writes: dict[str, Any] = {}
        self.deletes: set[str] = set()

    def load(self) -> None:
        self.entries.clear()
        parts: dict[str, dict[str, Any]] = {}
        for key, value in self.table.items():
            kind, rest = stage_key_kind(key)
            if kind == WINDOW:
                # "parts" inside the value: written by a version before `part_key`
                self.entries[key] = Entry(dict(value.get("parts", {})), value["rev"],
                                          value["closed"])
            elif kind == PART:
                part, window = parse_part_key(key)
                parts.setdefault(window, {})[part] = value
            elif kind == LIFECYCLE:
                self.models[rest] = value
            elif kind == "sources":
                self.sources = dict(value)
            elif kind == "factory":
                self.factory_revs = dict(value)
            elif kind == "horizon":
                self.forgotten_before = value
            elif kind == ALERT:
                self.alert_states[key] = value
            elif kind == DRIFT:
                self.drift[rest] = value
            elif kind == RETRAIN:
                self.retrain[rest] = value
            elif kind == FORMAT_KEY:
                check_format(value, "the snapshot stage's table")
        self.writes[FORMAT_KEY] = FORMAT  # what this release writes from now on
        for window, found in parts.items():  # a partial written before its window's first
            self.entries.setdefault(window, Entry()).parts.update(found)  # publication
        self.loaded = True

    def forget(self) -> None:
        """Drop what the table holds (it is read again at the next batch), and what was
        about to be written to it."""
        self.loaded = False
        for held in (self.entries, self.alert_states, self.drift, self.retrain, self.models,
                     self.sources, self.factory_revs, self.labels, self.values, self.writes):
            held.clear()
        self.deletes.clear()
        self.forgotten_before = -math.inf

    # -- inputs -----------------------------------------------------------------------------

    def on_partial(self, shard: str, key: str, state: dict[str, Any]) -> None:
        entry = self.entries.get(key)
        if entry is None:
            _, size, start = parse_window_key(key)
            if start + size < self.forgotten_before:
                self.ignored_partials += 1
                return
            entry = self.entries[key] = Entry()
        previous = entry.parts.get(shard)
        if previous != state:
            entity, size, start = parse_window_key(key)
            # one window size is enough for the detectors (every event is in each)
            if size == self.settings.window_sizes[0] and entity.startswith("m:"):
                model = entities.names(entity)["model"]
                self._count_labels(model, start, previous or {}, state)
                self._count_values(model, start, previous or {}, state)
            entry.parts[shard] = state
            entry.dirty = True
            self.writes[part_key(shard, key)] = state

    def _count_labels(self, model: str, start: float, previous: dict[str, Any],
                      state: dict[str, Any]) -> None:
        """Add what a new partial adds to its model's labelled and wrong counts, for the
        per-label detector. Partials hold a shard's whole window, so the difference from the
        one before is what arrived since: late labels count when they arrive, each shard's
        once. Regressors have no right or wrong."""
        new, old = state.get("quality"), previous.get("quality") or {}
        if not isinstance(new, dict) or not isinstance(old, dict):
            return
        labelled = float(new.get("n", 0)) - float(old.get("n", 0))
        correct = float(new.get("ok", 0)) - float(old.get("ok", 0))
        if (0 < labelled <= MAX_MAGNITUDE and 0 <= correct <= labelled
                and model not in self.settings.regressors):
            counts = self.labels.setdefault(model, {}).setdefault(start, [0.0, 0.0])
            counts[0] += labelled
            counts[1] += labelled - correct

    def _count_values(self, model: str, start: float, previous: dict[str, Any],
                      state: dict[str, Any]) -> None:
        """Add the new scores and feature values of a partial (count and sum, the
        difference from the one before), for the per-value detectors. Scores come from the
        histogram (to its 0.01 resolution, as the reference's do), features from their
        sketches' exact sums; a part written without sums is skipped."""
        found: dict[str, list[float]] = {}
        new, old = state.get("scores"), previous.get("scores") or {}
        if isinstance(new, dict) and isinstance(old, dict):
            n, total = _histogram_sums(new)
            n0, total0 = _histogram_sums(old)
            found["score"] = [n - n0, total - total0]
        new, old = state.get("features"), previous.get("features") or {}
        if isinstance(new, dict) and isinstance(old, dict):
            for name, sketch in new.items():
                n, total = _sketch_sums(sketch)
                n0, total0 = _sketch_sums(old[name]) if name in old else (0.0, 0.0)
                found[f"f:{name}"] = [n - n0, total - total0]
        counted = {name: v for name, v in found.items()
                   if 0 < v[0] <= MAX_MAGNITUDE and math.isfinite(v[1])}
        if counted:
            window = self.values.setdefault(model, {}).setdefault(start, {})
            for name, (n, total) in counted.items():
                sums = window.setdefault(name, [0.0, 0.0])
                sums[0] += n
                sums[1] += total

    def on_heartbeat(self, shard: str, watermark: float | None, idle: bool) -> None:
        self.clock.heard(shard, watermark, idle, time.monotonic())

    def on_deployments(self, src: str, offset: int, events: list[dict[str, Any]]) -> None:
        if offset <= self.sources.get(src, -1):
            return  # re-sent after a crash upstream: already applied
        self.sources[src] = offset
        self.writes["sources"] = self.sources
        for event in events:
            self._lifecycle(event)

    def _lifecycle(self, event: dict[str, Any]) -> None:
        model = event["model"]
        info = self.models.setdefault(model, {"runs": {}, "retrains": []})
        kind, ts, run_id = event["kind"], event["ts"], event.get("run_id")
        duration = event.get("duration_s")
        if kind == "training_started" and run_id:
            info["runs"][run_id] = ts
            if len(info["runs"]) > MAX_OPEN_RUNS:  # runs that never finish: forget the oldest
                del info["runs"][min(info["runs"], key=info["runs"].__getitem__)]
        elif kind in ("training_finished", "training_failed") and run_id:
            started = info["runs"].pop(run_id, None)
            if duration is None and started is not None:
                duration = max(ts - started, 0.0)
        lead = None
        if kind == "deployed":
            info["version"] = event["version"]
            # a new version starts a new reference (or the pinned), and new detectors
            self.drift.pop(model, None)
            self.writes[model_key(DRIFT, model)] = _fresh_drift()
            pending = self.retrain.get(model, {}).get("pending")
            if pending is not None and event.get("trigger") == "drift":
                lead = max(ts - pending["end"], 0.0)
                self.retrain[model]["pending"] = None
                self.writes[model_key(RETRAIN, model)] = self.retrain[model]
        if kind == "training_finished":
            bisect.insort(info["retrains"], ts)
            cutoff = bisect.bisect_left(info["retrains"], ts - self.settings.retention_s)
            del info["retrains"][:max(cutoff - 1, 0)]  # keep one retrain older than retention
        self.writes[model_key(LIFECYCLE, model)] = info
        for size in self.settings.window_sizes:
            start = window_start(ts, size)
            key = window_key(entities.model(model), size, start)
            entry = self.entries.get(key)
            if entry is None:
                if start + size < self.forgotten_before:
                    continue  # counted in the lifecycle above; its window is gone
                entry = self.entries[key] = Entry()
            state = WindowState.from_state(entry.parts.get(LIFECYCLE_PART, {}))
            state.family("lifecycle").add(kind, event.get("change"), duration, lead)
            entry.parts[LIFECYCLE_PART] = state.to_state()
            entry.dirty = True
            self.writes[part_key(LIFECYCLE_PART, key)] = entry.parts[LIFECYCLE_PART]

    # -- outputs ----------------------------------------------------------------------------

    async def publish(self) -> int:
        """Publish what closed or changed; return the number of snapshots sent."""
        watermark = self.clock.time(time.monotonic())
        if watermark is None:
            return 0
        sent = 0
        await self._detect(watermark)
        touched: set[tuple[float, float]] = set()
        expired_keys: list[str] = []
        # in window order: drift references and alert rules read windows one after another
        for key, entry in sorted(self.entries.items(), key=lambda kv: _start_of(kv[0])):
            entity, size, start = parse_window_key(key)
            end = start + size
            if not self.clock.closed(end, watermark):
                continue
            expired = end < watermark - self.settings.retention_s
            if not entry.closed or entry.dirty:
                entry.closed = True
                entry.dirty = False
                entry.rev += 1
                self.writes[key] = entry
                await self._send(entity, size, start, entry.rev, self._merged(key, entry))
                sent += 1
                if entity.startswith("m:"):
                    touched.add((size, start))
            if expired:  # published above if it never was: a backlog can outrun retention
                expired_keys.append(key)
        for size, start in sorted(touched):
            sent += await self._publish_factory(size, start)
        for key in expired_keys:
            entry = self.entries.pop(key)
            for gone in (key, *(part_key(part, key) for part in entry.parts)):
                self.writes.pop(gone, None)
                self.deletes.add(gone)
        if watermark - self.settings.retention_s > self.forgotten_before:
            self.forgotten_before = watermark - self.settings.retention_s
            self.writes["horizon"] = self.forgotten_before
        self._prune_factory(self.forgotten_before)
        return sent

    def _prune_factory(self, cutoff: float) -> None:
        """Forget the rollup revisions of windows past retention (one table value holds all)."""
        old = [k for k in self.factory_revs
               if float(k.split("|")[1]) + float(k.split("|")[0]) < cutoff]
        for key in old:
            del self.factory_revs[key]
        if old:
            self.writes["factory"] = self.factory_revs

    def _merged(self, key: str, entry: Entry) -> WindowState:
        """The window's parts merged. A part that cannot be read (only a forged record on
        the partials topic holds one: the shards write these) is dropped, counted and
        logged. The parts are checked one by one only when the whole fails, so a sound
        window costs nothing more, and a partial nothing more as it arrives."""
        try:
            merged = entry.merged()
            merged.value()
            return merged
        except DATA_ERRORS:
            bad = [part for part, state in entry.parts.items() if not _readable(state)]
            if not bad:
                raise  # every part reads on its own: not the data's fault
        for part in bad:
            del entry.parts[part]
            self.writes.pop(part_key(part, key), None)
            self.deletes.add(part_key(part, key))
            self.malformed += 1
            log.warning("dropped an unreadable partial of %s from %s", key, part)
        return entry.merged()

    async def _publish_factory(self, size: float, start: float) -> int:
        merged = WindowState()
        for key, entry in self.entries.items():
            if not is_window_key(key):
                continue
            entity, s, st = parse_window_key(key)
            if entity.startswith("m:") and s == size and st == start:
                merged = merged.merge(self._merged(key, entry))
        fkey = f"{size:g}|{start:.0f}"
        rev = self.factory_revs.get(fkey, 0) + 1
        self.factory_revs[fkey] = rev
        self.writes["factory"] = self.factory_revs
        await self._send(entities.model(FACTORY), size, start, rev, merged)
        return 1

    async def _send(self, entity: str, size: float, start: float, rev: int,
                    state: WindowState) -> None:
        values = state.value()
        if values is None:
            return
        scope, named = entity[0], entities.names(entity)
        name = named.get("model")
        if (name is not None and not name.startswith("_")  # the rollup, unattributed samples
                and size == self.settings.window_sizes[0]):
            values.update(self._drift(name, start, rev, state, values))
        snapshot: dict[str, Any] = {"scope": entities.SCOPES[scope],
                                    "window_s": size, "window_start": start,
                                    "window_end": start + size, "revision": rev,
                                    "ts": time.time()}
        snapshot.update(named)
        if name is not None:
            retrains = self.models.get(name, {}).get("retrains", [])
            before = bisect.bisect_right(retrains, start + size)
            if before:
                snapshot["days_since_retrain"] = (start + size - retrains[before - 1]) / 86400
        snapshot.update(values)
        key = window_key(entity, size, start)[2:].encode()
        await self.metrics.send(key=key, value=orjson.dumps(snapshot))
        await self._judge(entity, size, start, snapshot)

    def _drift(self, model: str, start: float, rev: int, state: WindowState,
               values: dict[str, Any]) -> dict[str, Any]:
        """Score and feature PSI against the version's reference (first revision: the
        predictions are all there), Page-Hinkley on the window's error rate, and the
        per-label detector's shift.

        Page-Hinkley reads each window once, at the first revision with at least half as
        many labels as windows usually end with (the most any revision had, forgotten by 5 %
        a window read; the first window read needs `drift.min_predictions`): when labels come
        late, a window's first revisions hold a handful, whose error rate is noise."""
        drift = self.drift.setdefault(model, _fresh_drift())
        self.writes[model_key(DRIFT, model)] = drift
        config = self.settings.drift
        out: dict[str, Any] = {}
        if drift.get("shift") is not None:
            out["error_shift"] = drift["shift"]
        out.update(_value_shifts(drift.get("vshift") or {}))
        if rev == 1:
            out.update(self._psi(model, drift, state, values.get("predictions") or 0))
        last, labelled = drift.get("ph_last"), values.get("labelled") or 0
        usual = max(drift.get("ph_n") or 0, labelled)
        drift["ph_n"] = usual
        if (values.get("error_rate") is not None and (last is None or start > last)
                and labelled >= (usual / 2 if last is not None else config.min_predictions)):
            detector = PageHinkley(config.ph_delta, config.ph_threshold, config.ph_min_windows)
            out["error_drift"] = detector.restore(drift["ph"]).update(values["error_rate"])
            drift["ph"], drift["ph_last"], drift["ph_n"] = detector.to_state(), start, (
                0.95 * usual)
        return out

    def _psi(self, model: str, drift: dict[str, Any], state: WindowState,
             predictions: int) -> dict[str, Any]:
        config = self.settings.drift
        out: dict[str, Any] = {}
        current = WindowState()
        for name in ("scores", "features"):
            if name in state.families:
                current.families[name] = state.families[name]
        if model in self.pinned:
            drift["ref"], drift["n"] = self.pinned[model], config.reference_size
        if current.families and drift["n"] < config.reference_size:
            # the reference: the version's first `drift.reference_size` predictions
            ref = current if drift["ref"] is None else WindowState.from_state(
                drift["ref"]).merge(current)
            drift["ref"], drift["n"] = ref.to_state(), drift["n"] + predictions
        elif (current.families and drift["ref"] is not None
              and predictions >= config.min_predictions):
            reference = WindowState.from_state(drift["ref"])
            ref_scores, scores = reference.families.get("scores"), current.families.get("scores")
            if ref_scores is not None and scores is not None:
                out["drift_psi"] = psi(ref_scores.hist, scores.hist, config.psi_bins)
            ref_features = reference.families.get("features")
            features = current.families.get("features")
            if ref_features is not None and features is not None:
                per_feature = {name: psi(sketch, features.sketches[name], config.psi_bins)
                               for name, sketch in ref_features.sketches.items()
                               if name in features.sketches}
                scored = {k: v for k, v in per_feature.items() if v is not None}
                if scored:
                    drifted = sum(1 for v in scored.values() if v > config.feature_psi)
                    out["drift_psi_features"] = scored
                    out["drift_psi_max"] = max(scored.values())
                    out["drifted_feature_share"] = drifted / len(scored)
                    out["dataset_drift"] = drifted / len(scored) > 0.5
        return out

    async def _detect(self, watermark: float) -> None:
        """Feed each model's streaming detectors what arrived (window by window, oldest
        first: a backlog read in one batch is still a sequence), and judge the streaming
        rules on them (during the window of the stage's event time): drift is seen as the
        labels and predictions arrive, not when a window closes."""
        labels, self.labels = self.labels, {}
        values, self.values = self.values, {}
        size = self.settings.window_sizes[0]
        start = window_start(watermark, size)
        for model in sorted(labels.keys() | values.keys()):
            drift = self.drift.setdefault(model, _fresh_drift())
            signals: dict[str, float] = {}
            if model in labels:
                detector = Adwin(self.settings.drift.adwin_delta).restore(drift.get("adwin"))
                for _, (labelled, wrong) in sorted(labels[model].items()):
                    detector.update(labelled, wrong)
                drift["adwin"], drift["shift"] = detector.to_state(), detector.shift
                signals["error_shift"] = detector.shift
            if model in values and self._value_detectors(drift, values[model]):
                signals.update(_value_shifts(drift["vshift"]))
            self.writes[model_key(DRIFT, model)] = drift
            entity = entities.model(model)
            for rule in self.settings.alerts:
                value = signals.get(rule.metric)
                if value is not None and applies(rule, "model", model, size):
                    key = alert_key(rule.name, entity)
                    state = RuleState.from_state(self.alert_states.get(key))
                    transition = evaluate_signal(rule, state, start, start + size, value)
                    await self._record(rule, key, entity, state, transition, start, size,
                                       value)

    def _value_detectors(self, drift: dict[str, Any],
                         windows: dict[float, dict[str, list[float]]]) -> bool:
        """Feed the scores' and each feature's detector; False while the version's
        reference is still being gathered (there is nothing to compare with yet)."""
        config = self.settings.drift
        if drift.get("ref") is None or drift["n"] < config.reference_size:
            return False
        if drift.get("moments") is None:
            drift["moments"] = _reference_moments(WindowState.from_state(drift["ref"]))
        states, shifts = drift.setdefault("vs", {}), drift.setdefault("vshift", {})
        for _, found in sorted(windows.items()):
            for name, (n, total) in found.items():
                moments = drift["moments"].get(name)
                if moments is None:
                    continue  # not in the reference (or a constant there)
                detector = MeanShift(config.shift_sd, config.shift_threshold, *moments)
                detector.restore(states.get(name)).update(n, total)
                states[name], shifts[name] = detector.to_state(), detector.shift
        return True

    async def _judge(self, entity: str, size: float, start: float,
                     snapshot: dict[str, Any]) -> None:
        """Run the window rules over a window's revision; publish transitions."""
        scope, name = entity[0], entities.display(entity)
        for rule in self.settings.alerts:
            if rule.metric in STREAMING_METRICS or not applies(
                    rule, entities.SCOPES[scope], name, size):
                continue
            key = alert_key(rule.name, entity)
            state = RuleState.from_state(self.alert_states.get(key))
            raw = snapshot.get(rule.metric)
            value = None if raw is None else float(raw)
            transition = evaluate(rule, state, start, start + size, value)
            await self._record(rule, key, entity, state, transition, start, size, value)

    async def _record(self, rule: AlertRule, key: str, entity: str, state: RuleState,
                      transition: Transition | None, start: float, size: float,
                      value: float | None) -> None:
        """Store the rule's state; publish its transition, if any, and ask for retraining."""
        self.alert_states[key] = state.to_state()
        self.writes[key] = self.alert_states[key]
        if transition is None:
            return
        scope, name = entity[0], entities.display(entity)
        shown = state.recent[-1][2] if transition == "firing" and state.recent else value
        alert = {"alert_id": f"{name}:{state.alert_id}", "rule": rule.name, "model": name,
                 "scope": entities.SCOPES[scope], "state": transition,
                 "severity": rule.severity, "metric": rule.metric, "value": shown,
                 "threshold": rule.threshold, "relative": rule.relative,
                 "window_start": start, "window_end": start + size, "ts": time.time()}
        await self.alerts.send(key=f"{rule.name}|{entity}".encode(), value=orjson.dumps(alert))
        if (transition == "firing" and rule.action == "retrain" and scope == "m"
                and not name.startswith("_")):  # the rollup is not a model to retrain
            await self._request_retraining(name, rule, state, start, start + size)

    async def _request_retraining(self, model: str, rule: AlertRule, state: RuleState,
                                  start: float, end: float) -> None:
        """At most one request per model per `retraining.cooldown`, and per rule and model
        per the rule's `cooldown` (event time)."""
        info = self.retrain.setdefault(model, {"last_end": None, "pending": None})
        if info["last_end"] is not None and end - info["last_end"] < (
                self.settings.retrain_cooldown_s):
            return
        if state.requested_end is not None and end - state.requested_end < rule.cooldown_s:
            return
        state.requested_end = end
        key = alert_key(rule.name, entities.model(model))
        self.alert_states[key] = self.writes[key] = state.to_state()
        version = self.models.get(model, {}).get("version")
        request = {"request_id": f"{model}:{rule.name}:{start:.0f}", "model": model,
                   "version": version or "unknown", "rule": rule.name,
                   "reason": f"{rule.metric} {'changed by' if rule.relative else 'was'} "
                             f"{state.recent[-1][2]:.4g} {rule.op} {rule.threshold:g} for "
                             f"{rule.for_windows} window(s)",
                   "window_start": start, "window_end": end, "ts": time.time(),
                   "evidence": {"metric": rule.metric, "threshold": rule.threshold,
                                "relative": rule.relative,
                                "windows": [{"start": s, "end": e, "value": v}
                                            for s, e, v in state.recent],
                                "reference_version": version}}
        info["last_end"], info["pending"] = end, {"id": request["request_id"], "end": end}
        self.writes[model_key(RETRAIN, model)] = info
        await self.retraining.send(key=model.encode(), value=orjson.dumps(request))

    def write(self, event: Any) -> TableWrite:
        """Send each changed key once to the changelog (the local store follows after the
        producer's flush, see `core.faust_internals`)."""
        written = send_changelog(self.table, event, {
            key: value.to_state() if isinstance(value, Entry) else value
            for key, value in self.writes.items()}, list(self.deletes))
        self.deletes.clear()
        self.writes.clear()
        return written


def pinned_reference(path: Path) -> dict[str, Any]:
    """The reference state (scores and features) of the predictions recorded in `path`."""
    events = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            doc = orjson.loads(line)
            events.append(doc.get("event", doc))
    state = WindowState()
    scores = [e["score"] for e in events if e.get("score") is not None]
    if scores:
        state.family("scores").update(np.array(scores, dtype=np.float64))
    names = {name for e in events for name in (e.get("features") or {})}
    if names:
        state.family("features").update({
            name: np.array([(e.get("features") or {}).get(name, math.nan) for e in events],
                           dtype=np.float64) for name in names})
    return state.to_state()


def _fresh_drift() -> dict[str, Any]:
    """A model version's drift state: its reference (and the reference's mean and sd of the
    scores and each feature, once it is complete), and its detectors' states."""
    return {"ref": None, "n": 0, "ph": None, "ph_last": None, "adwin": None, "shift": None,
            "moments": None, "vs": {}, "vshift": {}}


def _value_shifts(shifts: dict[str, float]) -> dict[str, float]:
    """The streaming metrics of the per-value detectors' shifts: the scores', and the
    largest of any feature's (each only once its detector exists)."""
    out = {"score_shift": shifts["score"]} if "score" in shifts else {}
    features = [v for name, v in shifts.items() if name.startswith("f:")]
    if features:
        out["feature_shift"] = max(features)
    return out


def _histogram_sums(state: dict[str, Any]) -> tuple[float, float]:
    """Count and sum of the values in a score histogram's state."""
    weights = np.asarray(state.get("w", ()), dtype=np.float64)
    keys = np.asarray(state.get("k", ()), dtype=np.float64)
    return float(weights.sum()), float(np.dot(weights, keys) / float(state.get("n", 1)))


def _sketch_sums(state: Any) -> tuple[float, float]:
    """Count and exact sum of the values in a feature sketch's state (NaN sum: not kept)."""
    if not isinstance(state, list) or len(state) < 2:
        return 0.0, math.nan
    total = state[3][0] if len(state) > 3 and state[3][0] is not None else math.nan
    return float(sum(state[1])), float(total)


def _reference_moments(reference: WindowState) -> dict[str, list[float]]:
    """Mean and standard deviation of the reference's scores and of each of its features
    (those with a spread: a constant has no scale to measure a shift in)."""
    out: dict[str, list[float]] = {}
    scores = reference.families.get("scores")
    if scores is not None and scores.count > 0:
        hist = scores.hist
        keys = np.array(list(hist.buckets), dtype=np.float64) / hist.bins
        weights = np.array(list(hist.buckets.values()), dtype=np.float64)
        mean = float(np.dot(weights, keys) / weights.sum())
        sd = math.sqrt(max(float(np.dot(weights, (keys - mean) ** 2) / weights.sum()), 0.0))
        out["score"] = [mean, sd]
    features = reference.families.get("features")
    for name, sketch in (features.sketches.items() if features is not None else ()):
        n, (total, squares) = sketch.count, sketch.moments
        if n > 1 and math.isfinite(total) and math.isfinite(squares):
            mean = total / n
            out[f"f:{name}"] = [mean, math.sqrt(max(squares / n - mean * mean, 0.0))]
    return {name: m for name, m in out.items() if m[1] > 0}


def _start_of(key: str) -> float:
    return parse_window_key(key)[2] if is_window_key(key) else 0.0


def _readable(state: Any) -> bool:
    try:
        WindowState.from_state(state).value()
    except DATA_ERRORS:
        return False
    return True


def _apply(stage: SnapshotStage, record: StageRecord) -> None:
    """One record of the partials topic: a window's partial, heartbeats, or deployments."""
    if isinstance(record, Partial):
        stage.on_partial(record.shard, record.key, record.state)  # read when published
    elif isinstance(record, Heartbeats):
        for shard, (watermark, idle) in record.shards.items():
            stage.on_heartbeat(shard, watermark, idle)
    elif isinstance(record, Deployments):
        stage.on_deployments(record.source, record.offset, record.events)


async def run(stage: SnapshotStage, stream: Any) -> None:
    """The agent body: apply a batch of partials, heartbeats and deployments, then publish."""
    settings = stage.settings
    async for events in batches(stream, settings.max_batch, settings.flush_interval_s):
        try:
            await _step(stage, events)
        except BaseException:
            # The same rule as the shards': in-memory state may now be ahead of what was
            # written (revisions bumped, rule states moved, detectors fed), so it is dropped;
            # the stage reloads from its table and the unacknowledged records replay.
            stage.forget()
            raise


async def _step(stage: SnapshotStage, events: list[Any]) -> None:
    """Apply one batch of the partials topic, publish, write the table, acknowledge."""
    if not stage.loaded:
        stage.load()
    for event in events:
        try:
            _apply(stage, decode_stage_record(event.value))
        except DATA_ERRORS as exc:
            # Only the shards write here, but anyone who can reach the topic could: a
            # malformed record is skipped and counted, never let crash the stage.
            stage.malformed += 1
            log.warning("skipped a malformed record at partials offset %s: %s: %s",
                        event.message.offset, type(exc).__name__, str(exc)[:200])
    await stage.publish()
    await make_durable(stage.app, [stage.write(events[-1])])
    for event in events:
        event.ack()

