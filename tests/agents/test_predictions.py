"""The label join through PredictionLogic, without a broker: a shard, its pending table
writes as the table, flushes, a reload from those writes, and expiry."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from agents.aggregators.window import WindowState
from agents.predictions import RUN_EVENTS, PredictionLogic, _feature_columns, _present
from agents.shard import Message, Shard, ShardRuntime, SimpleLogic
from core.settings import Settings
from schemas.codec import VALIDATORS, decode_message
from schemas.columnar import Columns, encode

SOURCES = {"t.predictions": "predictions", "t.labels": "labels"}


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(state_dir=tmp_path, partitions=1, label_horizon_s=1000.0)
        self.logic = PredictionLogic(self.settings, SOURCES)
        self.table: dict[str, Any] = {}
        self.offset = 0
        self.shard = self.load()

    def load(self) -> Shard:
        shard = Shard("predictions", 0, self.settings)
        self.logic.load(shard, iter(list(self.table.items())))
        return shard

    def send(self, kind: str, *events: dict[str, Any]) -> list[str]:
        """Apply one message and flush; the reasons of what was rejected."""
        self.offset += 1
        message = Message(kind, self.offset, list(events), kind)
        rejected = self.logic.apply(self.shard, [message])
        asyncio.run(self.logic.before_flush(self.shard, None))  # type: ignore[arg-type]
        for writes in self.shard.pending_writes:
            self.table.update(writes)
            writes.clear()
        for key in self.shard.pending_deletes:
            self.table.pop(key, None)
        self.shard.pending_deletes.clear()
        return [r.reason for r, _ in rejected]

    def labelled(self) -> int:
        return sum(slot.state.family("quality").labelled for slot in self.shard.slots.values())


def prediction(eid: str, ts: float, model: str = "churn") -> dict[str, Any]:
    return {"event_id": eid, "ts": ts, "model": model, "predicted": 1, "status": "ok"}


def label(eid: str, ts: float, model: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": eid, "ts": ts, "label": 1}
    if model is not None:
        event["model"] = model
    return event


def test_the_join_keeps_its_rules_across_a_reload_and_expires(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.send("predictions", *(prediction(f"p{i}", 100.0 + i) for i in range(3))) == []
    # the next message is new, well-routed predictions of a known model: the batched path
    assert rig.send("predictions", *(prediction(f"q{i}", 110.0) for i in range(5))) == []
    assert rig.send("predictions", prediction("q0", 110.0), prediction("q1", 110.0)) == []
    assert rig.logic.joins[0].duplicates == 2
    assert rig.send("predictions", prediction("q2", 111.0, model="other")) == [
        "event_id: already used by a prediction of model 'churn'"]
    assert rig.send("labels", label("early", 120.0), label("wrong", 120.0, "other"),
                    label("never", 120.0)) == []
    assert rig.logic.joins[0].waiting == 3
    assert rig.send("predictions", prediction("early", 119.0), prediction("wrong", 119.0)) == [
        "model: the label names model 'other', its prediction is of model 'churn'"]
    assert rig.send("labels", label("p0", 130.0), label("p0", 131.0), label("q1", 130.0)) == []
    join = rig.logic.joins[0]
    assert (join.joinable, join.waiting, join.duplicates) == (10, 1, 3)
    assert rig.labelled() == 3  # early, p0, q1

    rig.shard = rig.load()  # the index is rebuilt from the table's chunks alone
    join = rig.logic.joins[0]
    # The misattributed label of "wrong" was taken off the waiting ones in memory only (no
    # chunk says so): after a reload it waits again, until the horizon (as it always has).
    assert (join.joinable, join.waiting, join.duplicates) == (10, 2, 0)
    assert rig.send("labels", label("p0", 140.0), label("early", 140.0), label("p1", 140.0),
                    label("p2", 140.0, "other")) == [
        "model: the label names model 'other', its prediction is of model 'churn'"]
    assert rig.send("predictions", prediction("q4", 110.0), prediction("p1", 101.0)) == []
    assert join.duplicates == 4
    assert rig.labelled() == 1  # p1 (the reloaded shard's slots start from the table)

    # past the horizon: every chunk before 200 goes, "never" and "wrong" count as unmatched
    assert rig.send("predictions", prediction("late", 1200.0)) == []
    assert (join.joinable, join.waiting, join.unmatched_expired) == (1, 0, 2)
    assert sorted(k for k in rig.table if k.startswith("c|")) == ["c|P|3"]
    assert rig.send("predictions", prediction("p0", 1201.0)) == []  # forgotten: new again
    assert join.joinable == 2


def test_unload_deletes_the_files(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.send("predictions", prediction("a", 1.0))
    where = rig.logic.joins[0].path
    assert where == rig.settings.data_dir / "join" / "0"
    assert where.exists()
    rig.logic.unload(rig.shard)
    assert not where.exists()
    assert rig.logic.joins == {}


class NoOffsetStore(dict[str, Any]):
    """Faust's memory store: no changelog offset kept."""

    def persisted_offset(self, tp: Any) -> int | None:
        return None


class OnceTable:
    """A table whose items can be read once, as a stream (a list would hold them all)."""

    changelog_topic = SimpleNamespace(get_topic_name=lambda: "shards-predictions-changelog")

    def __init__(self, items: dict[str, Any]) -> None:
        self.data = NoOffsetStore(items)
        self.reads = 0

    def items(self) -> Any:
        self.reads += 1
        assert self.reads == 1
        yield from self.data.items()


def test_a_shard_loads_its_keys_and_the_join_from_one_pass(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.send("predictions", prediction("a", 100.0), prediction("b", 160.0))
    rig.send("labels", label("early", 150.0))
    window = {"s": WindowState().to_state(), "o": {"predictions": 3}, "wm": 160.0}
    table = OnceTable({"1|w|m%churn|60|120": window, "1|ingest|t.predictions": {
        "offset": 3, "messages": 4, "accepted": 5, "rejected": 0},
        "1|floors": {"0": None}, "0|w|m%churn|60|0": window,
        **{f"1|{key}": value for key, value in rig.table.items() if key.startswith("c|")}})
    for logic in (PredictionLogic(rig.settings, SOURCES), SimpleLogic(rig.settings, SOURCES)):
        table.reads = 0
        runtime = ShardRuntime(None, rig.settings, logic, table, None, None)
        shard = runtime.shard(1)
        assert list(shard.stored) == ["w|m%churn|60|120"]  # partition 1's only
        assert shard.watermark == 160.0
        assert shard.ingest["t.predictions"].offset == 3
        assert shard.floors == {0: None}
        if isinstance(logic, PredictionLogic):
            join = logic.joins[1]
            assert (join.joinable, join.waiting) == (2, 1)
            assert join.path == rig.settings.data_dir / "join" / "1"
            runtime.forget([1])
            assert not join.path.exists()


def test_one_event_messages_applied_as_a_run_count_as_they_would_one_by_one(
        tmp_path: Path) -> None:
    """A flush of one-event messages applies runs of them at once (`_fast_predictions`);
    a run holding a duplicate, a model new to the shard or a label's prediction falls back
    to message by message, so the counts and the join never depend on the flush."""
    def messages(first: int) -> list[Message]:
        events: list[tuple[str, dict[str, Any]]] = [
            *(("predictions", prediction(f"r{i}", 200.0 + i)) for i in range(5)),
            ("labels", label("r1", 210.0)),
            *(("predictions", prediction(f"s{i}", 205.0 + i)) for i in range(4)),
            ("predictions", prediction("s2", 209.0)),  # a retry inside a run
            ("predictions", prediction("s9", 209.0, model="new")),  # admitted one by one
            ("labels", label("late", 211.0)),
            ("predictions", prediction("late", 209.5)),  # its label waits already
            ("predictions", prediction("t0", 209.6)),
        ]
        return [Message(kind, first + n, [event], kind) for n, (kind, event) in enumerate(events)]

    def counts(rig: Rig) -> tuple[Any, ...]:
        join = rig.logic.joins[0]
        traffic = sorted((key, slot.state.family("traffic").predictions)
                         for key, slot in rig.shard.slots.items())
        return join.joinable, join.waiting, join.duplicates, rig.labelled(), traffic

    together, apart = Rig(tmp_path / "together"), Rig(tmp_path / "apart")
    for rig in (together, apart):
        assert rig.send("predictions", prediction("known", 199.0)) == []  # churn is known
    runs: list[int] = []
    fast = together.logic._fast_predictions

    def spy(shard: Shard, join: Any, batch: list[Message], first: int, end: int,
            *rest: Any) -> float | None:
        applied = fast(shard, join, batch, first, end, *rest)
        runs.append(end - first if applied is not None else 0)
        return applied

    together.logic._fast_predictions = spy  # type: ignore[method-assign]
    assert together.logic.apply(together.shard, messages(10)) == []
    assert max(runs) == 5  # r0..r4 at once; the run s0..s9 fell back to one by one
    for message in messages(10):
        assert apart.logic.apply(apart.shard, [message]) == []
    assert counts(together) == counts(apart)
    assert counts(together)[:4] == (13, 0, 1, 2)


def _columns_row_by_row(rows: list[dict[str, float] | None]) -> dict[str, list[float]]:
    names = {name for row in rows if row for name in row}
    return {name: [(row or {}).get(name, math.nan) for row in rows] for name in names}


@pytest.mark.parametrize("rows", [
    [{"a": 1.0, "b": 2}, {"a": 3.5, "b": -1.0}, {"a": 0, "b": 2.0**53}],  # one order: one pass
    [{"a": 1.0, "b": 2.0}, {"b": 3.0, "a": 4.0}],  # the same names in another order
    [{"a": 1.0}, None, {"a": 2.0, "c": 5.0}, {}],
    [{}, {}], [None], [{"z": 7.0}], []])
def test_feature_columns_are_those_read_row_by_row(rows: list[dict[str, float] | None]) -> None:
    got = _feature_columns(rows)
    want = _columns_row_by_row(rows)
    assert got.keys() == want.keys()
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], np.array(values))
        assert got[name].flags.c_contiguous
    # a window's rows: the columns of those rows alone, none that they all lack
    for picked in ([0], [1, 2], list(range(len(rows)))):
        picked = [i for i in picked if i < len(rows)]
        alone = _columns_row_by_row([rows[i] for i in picked])
        part = _present(got, np.array(picked, dtype=np.int64))
        assert part.keys() == alone.keys()
        for name, values in alone.items():
            np.testing.assert_array_equal(part[name], np.array(values))


def test_large_messages_go_in_runs_of_about_run_events_and_count_as_one_by_one(
        tmp_path: Path) -> None:
    """Runs are cut near RUN_EVENTS (so their events stay in cache); however a batch is cut,
    every window holds exactly what applying its messages one by one gives: traffic,
    scores and feature sketches, with optional fields and features missing here and there."""
    def event(i: int) -> dict[str, Any]:
        e = prediction(f"b{i}", 300.0 + i / 100, model=("churn", "intent")[i % 3 == 0])
        if i % 5:
            e["score"], e["latency_ms"] = (i % 89) / 89, float(i % 31)
        if i % 7:
            e["features"] = {"f0": i % 13, "f1": (i % 17) / 3} if i % 11 else {"f2": 1.0}
        if i >= 3 * size:  # the second run has features of its own
            e["features"] = {"f3": i % 5}
        if i % 50 == 0:
            e["status"] = "error"
        return e

    size = 1500
    batch = [Message("predictions", 10 + m, [event(m * size + i) for i in range(size)],
                     "predictions") for m in range(5)]
    new_model = {**prediction("n0", 301.0, "new"), "features": {"f9": 2.0}}
    batch.append(Message("predictions", 15, [new_model], "predictions"))  # one by one
    together, apart = Rig(tmp_path / "together"), Rig(tmp_path / "apart")
    for rig in (together, apart):  # both models known: none is admitted one by one
        rig.send("predictions", prediction("k1", 299.0), prediction("k2", 299.0, "intent"))
    runs: list[int] = []
    fast = together.logic._fast_predictions

    def spy(shard: Shard, join: Any, messages: list[Message], first: int, end: int,
            *rest: Any) -> float | None:
        runs.append(sum(len(m.events) for m in messages[first:end]))
        return fast(shard, join, messages, first, end, *rest)

    together.logic._fast_predictions = spy  # type: ignore[method-assign]
    assert together.logic.apply(together.shard, batch) == []
    # the second run holds the new model's message: its messages go one by one
    assert runs == [3 * size, 2 * size + 1, size, size, 1]
    assert RUN_EVENTS <= 3 * size < RUN_EVENTS + size
    for message in batch:
        assert apart.logic.apply(apart.shard, [message]) == []

    def states(rig: Rig) -> dict[Any, Any]:
        return {key: slot.state.to_state() for key, slot in rig.shard.slots.items()}

    # (a sketch's sum depends on how its values were split into updates, in the last bits)
    assert _rounded(states(together)) == _rounded(states(apart))
    assert len(states(together)) >= 2


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def test_columnar_messages_count_as_their_events_one_by_one(tmp_path: Path) -> None:
    """Columnar batches (the client library's) are applied from their columns; a batch the
    fast path cannot take (a retry inside it, a new model, a label waiting for one of its
    predictions, rows and columns mixed) is applied from its events. Either way every window
    and the join hold what the events applied one by one give."""
    def event(i: int) -> dict[str, Any]:
        e = {**prediction(f"c{i}", 400.0 + i / 10, model=("churn", "intent")[i % 4 == 0]),
             "version": "v1"}
        if i % 3:
            e["score"], e["latency_ms"], e["cost_usd"] = (i % 7) / 7, float(i % 5), 0.001
        if i % 5:
            e["features"] = {"f0": i % 13, "f1": i / 3} if i % 2 else {"f2": 1.5}
        if i % 9 == 0:
            e["status"] = "error"
        return e

    def columnar(offset: int, events: list[dict[str, Any]]) -> Message:
        decoded, rejected = decode_message(orjson.dumps(encode(events)),
                                           VALIDATORS["predictions"])
        assert rejected == []
        assert isinstance(decoded, Columns)  # (its events are made only if read)
        return Message("predictions", offset, decoded, "predictions")

    batch = [columnar(20 + m, [event(m * 300 + i) for i in range(300)]) for m in range(4)]
    batch.append(Message("predictions", 24, [event(1200 + i) for i in range(50)],
                         "predictions"))  # rows between columns
    batch.append(columnar(25, [event(1250 + i) for i in range(40)] + [event(1250)]))  # retry
    batch.append(Message("labels", 26, [label("c1400", 420.0)], "labels"))
    batch.append(columnar(27, [event(1400 + i) for i in range(30)]))  # its label waits
    batch.append(columnar(28, [{**event(1500 + i), "model": "new"} for i in range(20)]))
    batch.append(columnar(29, [event(1600 + i) for i in range(100)]))
    together, apart = Rig(tmp_path / "together"), Rig(tmp_path / "apart")
    for rig in (together, apart):  # both models known
        rig.send("predictions", prediction("k1", 399.0), prediction("k2", 399.0, "intent"))
    runs: list[tuple[int, bool]] = []
    fast = together.logic._fast_predictions

    def spy(shard: Shard, join: Any, messages: list[Message], first: int, end: int,
            *rest: Any) -> float | None:
        applied = fast(shard, join, messages, first, end, *rest)
        runs.append((end - first, applied is not None))
        return applied

    together.logic._fast_predictions = spy  # type: ignore[method-assign]
    assert [r.reason for r, _ in together.logic.apply(together.shard, batch)] == []
    assert runs[0] == (4, True)  # four columnar messages at once, from their columns
    assert batch[0].columns is not None
    assert batch[0]._events is None  # never exploded
    assert batch[5]._events is not None  # the one with a retry: applied event by event
    for message in batch:
        rows = Message(message.src, message.offset, message.events, message.kind)
        assert apart.logic.apply(apart.shard, [rows]) == []

    def states(rig: Rig) -> dict[Any, Any]:
        return {key: slot.state.to_state() for key, slot in rig.shard.slots.items()}

    assert _rounded(states(together)) == _rounded(states(apart))
    join, alone = together.logic.joins[0], apart.logic.joins[0]
    assert (join.joinable, join.duplicates, together.labelled()) == (
        alone.joinable, alone.duplicates, apart.labelled()) == (1442, 1, 1)
    # what the join holds for each prediction, in the flush and once written, is the same
    sample = [f"c{i}" for i in range(0, 1700, 97)] + ["k1", "k2", "c1400"]
    held = [join.prediction(eid) for eid in sample]
    assert held == [alone.prediction(eid) for eid in sample]
    for rig in (together, apart):
        asyncio.run(rig.logic.before_flush(rig.shard, None))  # type: ignore[arg-type]
    assert [join.prediction(eid) for eid in sample] == held
    assert [alone.prediction(eid) for eid in sample] == held
    assert held[1] == ("churn", 409.7, 1, 1)
