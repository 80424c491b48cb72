"""Predictions and labels: traffic, latency, cost, and quality from the label join.

Both topics are sharded by `event_id` (crc32 modulo the partition count), which puts a
prediction, its retries and its label in the same shard. Events that arrive on another
partition (a producer that keys differently) are forwarded once to the `byid` topic on the
right one; the client library partitions by the same hash, so it never pays for that hop.

The join keeps, per shard and for the label horizon, each prediction's model, time and
predicted value. It lives on the changelog as chunks (one table value per few thousand
predictions per flush, never one table write per event), and for lookups in an on-disk index
rebuilt from them when a shard loads, unless a clean stop kept it (`agents.join_index`):
memory does not grow with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, cast

import numpy as np
import orjson

from agents.join_index import Join, Memory
from agents.messages import parse_chunk_key
from agents.shard import FORWARDED, Batch, Message, Shard, ShardRuntime, retention_rejection
from core.settings import Settings
from core.topics import route
from schemas import entities
from schemas.codec import VALIDATORS, Rejection
from schemas.columnar import Columns
from schemas.fields import JSON, Validator

log = logging.getLogger(__name__)

FORWARD_EVENTS = 1000  # per forwarded message, and never more than half the message limit


@dataclass(frozen=True, slots=True)
class _Part:
    """New predictions of a batch as columns: numbers NaN where absent, features by name."""

    model: list[str]
    ts: np.ndarray
    msg: np.ndarray
    failed: np.ndarray
    latency: np.ndarray
    cost: np.ndarray
    score: np.ndarray
    features: dict[str, np.ndarray]

    @classmethod
    def of(cls, events: list[JSON], models: list[str], ts: list[float],
           msg: list[int]) -> _Part:
        """The columns of new, valid predictions (their models, times and message indices
        already read by the caller); None is NaN in a float64 array."""
        features = [e.get("features") for e in events]
        return cls(models, np.array(ts, dtype=np.float64), np.array(msg, dtype=np.int64),
                   np.array([e.get("status") == "error" for e in events], dtype=bool),
                   np.array([e.get("latency_ms") for e in events], dtype=np.float64),
                   np.array([e.get("cost_usd") for e in events], dtype=np.float64),
                   np.array([e.get("score") for e in events], dtype=np.float64),
                   _feature_columns(features) if any(features) else {})

    @classmethod
    def of_columns(cls, batch: Columns, mi: int) -> _Part:
        """The columns of one columnar message's predictions (`schemas.columnar`): numbers
        and features are the arrays its check made."""
        status = batch.values.get("status")
        failed = (np.full(batch.size, status == "error") if type(status) is not list else
                  np.fromiter(map("error".__eq__, status), bool, batch.size))
        return cls(batch.column("model"), batch.floats("ts"), np.full(batch.size, mi),
                   failed, batch.floats("latency_ms"), batch.floats("cost_usd"),
                   batch.floats("score"), batch.features)

    @classmethod
    def join(cls, parts: list[_Part]) -> _Part:
        if len(parts) == 1:
            return parts[0]
        names = sorted({name for part in parts for name in part.features})
        return cls(list(chain.from_iterable(part.model for part in parts)),
                   np.concatenate([part.ts for part in parts]),
                   np.concatenate([part.msg for part in parts]),
                   np.concatenate([part.failed for part in parts]),
                   np.concatenate([part.latency for part in parts]),
                   np.concatenate([part.cost for part in parts]),
                   np.concatenate([part.score for part in parts]),
                   {name: np.concatenate([part.features.get(name, np.full(len(part.ts), math.nan))
                                          for part in parts]) for name in names})


class _Columns:
    """The batch's new predictions, column by column, in message order: parts made by the
    runs applied at once (`_fast_predictions`), each while its events are still in the CPU's
    caches, and the events applied one by one or in short runs, held below and made a part
    when a run follows them or the batch ends. (Read field by field at the end of a flush,
    80,000 events' dicts cost twice what they do in runs of a few thousand.)"""

    __slots__ = ("events", "model", "msg", "parts", "ts")

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.events: list[JSON] = []
        self.model: list[str] = []
        self.ts: list[float] = []
        self.msg: list[int] = []

    def add(self, part: _Part) -> None:
        self._seal()
        self.parts.append(part)

    def extend(self, events: list[JSON], models: list[str], ts: list[float],
               msg: list[int]) -> None:
        """A few events, held (a part of their own would cost more than they do)."""
        self.events.extend(events)
        self.model.extend(models)
        self.ts.extend(ts)
        self.msg.extend(msg)

    def joined(self) -> _Part | None:
        self._seal()
        return _Part.join(self.parts) if self.parts else None

    def _seal(self) -> None:
        if self.events:
            self.parts.append(_Part.of(self.events, self.model, self.ts, self.msg))
            self.events, self.model, self.ts, self.msg = [], [], [], []


class _LabelColumns:
    __slots__ = ("delay", "labels", "msg", "predicted", "ts")

    def __init__(self) -> None:
        self.ts: list[float] = []
        self.predicted: list[Any] = []
        self.labels: list[Any] = []
        self.delay: list[float] = []
        self.msg: list[int] = []


def _feature_columns(rows: list[dict[str, float] | None]) -> dict[str, np.ndarray]:
    """Each numeric feature as a column, NaN where a prediction lacks it.

    Most producers send the same features in the same order in every prediction: then the
    values are read in one pass with no Python frame per row (a third of the time of the
    general case, which reads each name from each row)."""
    if rows and None not in rows:
        full = cast(list[dict[str, float]], rows)
        orders = set(map(tuple, full))  # (dicts: their keys in order)
        if len(orders) == 1:
            order = orders.pop()
            grid = np.fromiter(chain.from_iterable(map(dict.values, full)), np.float64,
                               len(full) * len(order)).reshape(len(full), len(order))
            return dict(zip(order, grid.T.copy(), strict=True))  # (each row contiguous)
    names = {name for row in rows if row for name in row}
    return {name: np.array([row.get(name, math.nan) if row else math.nan for row in rows],
                           dtype=np.float64) for name in names}


def _present(columns: dict[str, np.ndarray], rows: Any) -> dict[str, np.ndarray]:
    """The feature columns at `rows`, less those none of the rows has: the columns
    `_feature_columns` would make of those rows alone."""
    picked = {name: values[rows] for name, values in columns.items()}
    return {name: values for name, values in picked.items() if not np.isnan(values).all()}


def forward_messages(kind: str, events: list[JSON], max_bytes: int) -> Iterator[bytes]:
    """`{"k": kind, "e": [...]}` messages of at most FORWARD_EVENTS events and about half of
    `max_bytes` each (one event always fits: it came in a message under the limit)."""
    head, budget = b'{"k":' + orjson.dumps(kind) + b',"e":[', max_bytes // 2
    parts: list[bytes] = []
    size = 0
    for event in events:
        part = orjson.dumps(event)
        if parts and (len(parts) == FORWARD_EVENTS or size + len(part) > budget):
            yield head + b",".join(parts) + b"]}"
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield head + b",".join(parts) + b"]}"


# Most messages, and about the most events, a run of consecutive prediction messages applies
# at once (`_fast_predictions`): one-event messages share the join's lookups and the column
# work; a few thousand events' dicts stay in the CPU's caches while the run reads them field
# by field (python bench/ingest_cost.py: 4,000 a run cost 0.35 us an event for the nine
# fields, 80,000 cost 0.88).
RUN_MESSAGES = 1000
RUN_EVENTS = 4000
PART_EVENTS = 256  # a run of fewer goes to `_Columns`' lists, not a part of its own


def _run_end(messages: list[Message], first: int) -> int:
    """The end of the run of prediction messages with events, of one source and one form
    (columns or rows), from `first`."""
    src, end = messages[first].src, first + 1
    columnar = messages[first].columns is not None
    limit = min(len(messages), first + RUN_MESSAGES)
    events = messages[first].size
    while end < limit and events < RUN_EVENTS and messages[end].src == src \
            and messages[end].kind == "predictions" and messages[end].size \
            and (messages[end].columns is not None) == columnar:
        events += messages[end].size
        end += 1
    return end


def _reused(event: JSON, model: str) -> Rejection:
    return Rejection(f"event_id: already used by a prediction of model {model!r}",
                     "event_id", None, orjson.dumps(event))


def _misattributed(label: JSON, model: str) -> Rejection:
    """A label must not score another model's prediction (it could drive a victim's
    accuracy anywhere); one that arrived before its prediction is rejected when it comes."""
    return Rejection(f"model: the label names model {label['model']!r}, its prediction is "
                     f"of model {model!r}", "model", None, orjson.dumps(label))


class PredictionLogic:
    family = "predictions"

    def __init__(self, settings: Settings, sources: dict[str, str]) -> None:
        self.settings = settings
        self.sources = sources
        self._validators = {"predictions": VALIDATORS["predictions"],
                            "labels": VALIDATORS["labels"]}
        self.forwards: dict[int, dict[str, list[JSON]]] = {}
        self.joins: dict[int, Join] = {}  # by partition: each holds files open
        self.join_memory = Memory()

    def validator(self, src: str) -> Validator | None:
        return self._validators.get(src)

    def load(self, shard: Shard, items: Iterable[tuple[str, Any]],
             version: int | None = None) -> None:
        """Rebuild the join index from the chunks, streamed one at a time, or take up the
        one a clean stop kept at this changelog `version` (its id filter refilled from the
        chunks); one left open by an earlier load of the partition (a failed flush reloads)
        is closed first."""
        self.unload(shard)
        began = time.monotonic()
        join = self.joins[shard.partition] = Join(
            self.settings.data_dir / "join" / str(shard.partition), self.join_memory, version)
        load = join.refill if join.reused else join.restore
        for local, value in items:
            if parse_chunk_key(local) is not None:
                load(local, value)
        shard.extra = join
        log.info("predictions[%d]: join index %s in %.1fs: %d predictions held, %d labels "
                 "waiting", shard.partition, "kept by the last stop taken up" if join.reused
                 else "rebuilt from the changelog", time.monotonic() - began, join.joinable,
                 join.waiting)

    def unload(self, shard: Shard) -> None:
        join = self.joins.pop(shard.partition, None)
        if join is not None:
            join.destroy()

    def keep(self, shard: Shard, version: int) -> None:
        join = self.joins.pop(shard.partition, None)
        if join is not None:
            join.keep(version)

    def apply(self, shard: Shard, messages: list[Message]) -> list[tuple[Rejection, Message]]:
        join: Join = shard.extra
        n_parts = self.settings.partitions
        rejected: list[tuple[Rejection, Message]] = []
        cols = _Columns()
        labels: dict[str, _LabelColumns] = {}
        oldest = shard.expired_before
        newest: dict[str, float] = {}
        applied_until = single_until = 0
        join.prefetch([e["event_id"] for m in messages if m.kind == "labels"
                       for e in m.events if m.src == FORWARDED
                       or route(e["event_id"], n_parts) == shard.partition])
        for mi, message in enumerate(messages):
            if mi < applied_until:
                continue  # applied with the run of messages it belongs to
            local = message.src != FORWARDED
            if message.kind == "predictions" and message.size:
                fast = None
                if mi >= single_until:
                    end = _run_end(messages, mi)
                    if end - mi > 1:
                        fast = self._fast_predictions(shard, join, messages, mi, end, local,
                                                      oldest, cols)
                        applied_until = end if fast is not None else applied_until
                        single_until = end  # on failure, its messages are tried one by one
                if fast is None:
                    fast = self._fast_predictions(shard, join, messages, mi, mi + 1, local,
                                                  oldest, cols)
                if fast is not None:
                    newest[message.src] = max(newest.get(message.src, -math.inf), fast)
                    continue
            for event in message.events:
                eid = event["event_id"]
                ts = event["ts"]
                if local and route(eid, n_parts) != shard.partition:
                    # never forward below the floor this shard announces
                    if ts < shard.forward_floor:
                        rejected.append((retention_rejection(event, self.settings), message))
                        continue
                    target = self.forwards.setdefault(route(eid, n_parts), {})
                    target.setdefault(message.kind, []).append(event)
                    continue
                if ts < oldest:
                    rejected.append((retention_rejection(event, self.settings), message))
                    continue
                if ts > newest.get(message.src, -math.inf):
                    newest[message.src] = ts
                if message.kind == "predictions":
                    model = event["model"]
                    held = join.prediction(eid)
                    if held is not None:
                        if held[0] == model:
                            join.duplicates += 1  # a retry: counted once
                        else:
                            rejected.append((_reused(event, held[0]), message))
                        continue
                    refused = shard.admit((entities.model(model),), ts)
                    if refused is not None:
                        rejected.append((dataclasses.replace(refused, raw=orjson.dumps(event)),
                                         message))
                        continue
                    predicted = event.get("predicted")
                    join.add_prediction(eid, model, ts, predicted)
                    cols.extend([event], [model], [ts], [mi])
                    orphan = join.pop_orphan(eid)
                    if orphan is not None and orphan[2] in (None, model):
                        self._label(join, labels, eid, (model, ts, predicted), orphan[0],
                                    orphan[1], mi)
                    elif orphan is not None:
                        label = {"event_id": eid, "ts": orphan[1], "label": orphan[0],
                                 "model": orphan[2]}
                        rejected.append((_misattributed(label, model), message))
                elif join.answered(eid):
                    join.duplicates += 1  # the first label of a prediction is the one kept
                elif (held := join.prediction(eid)) is not None:
                    if event.get("model") in (None, held[0]):
                        self._label(join, labels, eid, held[:3], event["label"], ts, mi)
                    else:
                        rejected.append((_misattributed(event, held[0]), message))
                else:
                    join.add_orphan(eid, event["label"], ts, event.get("model"))
        shard.observe(newest)
        batch = Batch.of(messages)
        self._update_traffic(shard, batch, cols)
        self._update_quality(shard, batch, labels)
        return rejected

    def _fast_predictions(self, shard: Shard, join: Join, messages: list[Message], first: int,
                          end: int, local: bool, oldest: float, cols: _Columns) -> float | None:
        """Apply the new, well-routed predictions of messages `first` to `end` (a run of one
        source, see `_run_end`) column by column, all at once.

        Returns the newest event time, or None (nothing applied) when the run holds a
        duplicate, an event of another shard, one past retention, one an orphan label
        waits for or a model new to the shard: those take the event-by-event path. Applied
        together, the messages of a run count exactly as they would one by one: each would
        pass the same checks against what the ones before it added.
        """
        batches = [m.columns for m in messages[first:end] if m.columns is not None]
        if batches:  # (a run is all columns or all rows: `_run_end`)
            ids, ts, models, predicted = (
                list(chain.from_iterable([c.column(name) for c in batches]))
                if len(batches) > 1 else batches[0].column(name)
                for name in ("event_id", "ts", "model", "predicted"))
        else:
            if end - first == 1:
                events = messages[first].events
                msg = [first] * len(events)
            else:
                events = list(chain.from_iterable([m.events for m in messages[first:end]]))
                msg = list(range(first, end)) if len(events) == end - first else [
                    mi for mi in range(first, end) for _ in messages[mi].events]
            ids = [e["event_id"] for e in events]
            ts = [e["ts"] for e in events]
            models = [e["model"] for e in events]
            predicted = [e.get("predicted") for e in events]
        if local:
            n_parts, mine = self.settings.partitions, shard.partition
            crcs = np.fromiter(map(zlib.crc32, map(str.encode, ids)), np.int64, len(ids))
            if not (crcs % n_parts == mine).all():  # (`core.topics.route`, in bulk)
                return None
        if min(ts) < oldest or len(set(ids)) != len(ids):
            return None
        if not {entities.model(m) for m in set(models)} <= shard.entity_ends.keys():
            return None  # a model new to this shard: admitted (or refused) one by one
        if join.holds_any(ids):
            return None
        join.add_predictions(ids, models, ts, predicted)
        if batches:
            for mi, batch in enumerate(batches, first):
                cols.add(_Part.of_columns(batch, mi))
        elif len(events) < PART_EVENTS:
            cols.extend(events, models, ts, msg)
        else:
            cols.add(_Part.of(events, models, ts, msg))
        return float(max(ts))

    @staticmethod
    def _label(join: Join, labels: dict[str, _LabelColumns], eid: str,
               held: tuple[str, float, Any], label: Any, label_ts: float, mi: int) -> None:
        model, ts, predicted = held
        join.label(eid, ts)
        cols = labels.get(model)
        if cols is None:
            cols = labels[model] = _LabelColumns()
        cols.ts.append(ts)
        cols.predicted.append(predicted)
        cols.labels.append(label)
        cols.delay.append(label_ts - ts)
        cols.msg.append(mi)

    def _update_traffic(self, shard: Shard, batch: Batch, cols: _Columns) -> None:
        new = cols.joined()
        if new is None:
            return
        codes = {model: code for code, model in enumerate(dict.fromkeys(new.model))}
        names = list(codes)
        which = np.fromiter(map(codes.__getitem__, new.model), np.int64, len(new.model))
        for k, model in enumerate(names):
            mine = np.flatnonzero(which == k) if len(names) > 1 else slice(None)
            ts, msg = new.ts[mine], new.msg[mine]
            failed, latency, cost = new.failed[mine], new.latency[mine], new.cost[mine]
            score = new.score[mine]
            scored = not np.isnan(score).all()
            features = _present(new.features, mine) if new.features else new.features
            for state, rows in shard.windows(entities.model(model), ts, msg, batch):
                state.family("traffic").update(failed[rows], latency[rows], cost[rows])
                if scored:
                    state.family("scores").update(score[rows])
                if features:
                    state.family("features").update(_present(features, rows))

    def _update_quality(self, shard: Shard, batch: Batch,
                        labels: dict[str, _LabelColumns]) -> None:
        for model, cols in labels.items():
            ts = np.array(cols.ts)
            msg = np.array(cols.msg, dtype=np.int64)
            delay = np.array(cols.delay)
            regressor = model in self.settings.regressors
            for state, rows in shard.windows(entities.model(model), ts, msg, batch):
                picked = rows.tolist()
                state.family("quality").update([cols.predicted[i] for i in picked],
                                               [cols.labels[i] for i in picked],
                                               delay[rows], regressor)

    async def before_flush(self, shard: Shard, runtime: ShardRuntime) -> None:
        # Forwarded events must be on the broker before this shard records the offsets
        # that include them: wait for each delivery (a failure raises, nothing is recorded).
        limit = self.settings.max_message_bytes
        sent = [await runtime.byid.send(value=value, partition=partition)
                for partition, kinds in self.forwards.items()
                for kind, events in kinds.items()
                for value in forward_messages(kind, events, limit)]
        oldest = min((e["ts"] for kinds in self.forwards.values() for events in kinds.values()
                      for e in events), default=None)
        self.forwards.clear()
        await asyncio.gather(*sent)
        if oldest is not None:
            shard.forwarded(oldest)
        join: Join = shard.extra
        self._write_chunks(shard, join)
        self._expire(shard, join)

    def _write_chunks(self, shard: Shard, join: Join) -> None:
        for key, value in join.write_chunks():
            shard.put(key, value, 1)

    def _expire(self, shard: Shard, join: Join) -> None:
        """Forget what is older than the label horizon; unmatched labels are counted."""
        for key in join.expire(shard.watermark - self.settings.label_horizon_s):
            shard.delete(key)
