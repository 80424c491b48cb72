"""Columnar batches: the fast column check against the events they explode into."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from agents.predictions import _feature_columns
from schemas import columnar
from schemas.codec import EXPLODE_SLICE, KEPT_ERRORS, MAX_REJECTIONS, VALIDATORS, decode_message
from schemas.columnar import Columns
from schemas.fields import MAX_STRING
from tests.events import VALID
from tests.schemas.test_validation import _ANY_VALUE, _EDGES

PREDICTION = {key: value for key, value in VALID["predictions"].items() if key != "extra_field"}


def _predictions(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row = {**copy.deepcopy(PREDICTION), "event_id": f"p-{i}", "ts": PREDICTION["ts"] + i}
        if i % 3 == 0:
            row.pop("score")
        if i % 4 == 1:
            row["features"] = {"tenure": i}
        rows.append(row)
    return rows


def _decode(doc: Any, topic: str = "predictions") -> tuple[Any, list[Any]]:
    return decode_message(orjson.dumps(doc), VALIDATORS[topic])


def test_a_good_batch_stays_columns_and_means_its_events() -> None:
    rows = _predictions(7)
    decoded, rejected = _decode(columnar.encode(rows))
    assert rejected == []
    assert isinstance(decoded, Columns)
    assert decoded.size == 7
    assert decoded.rows() == rows
    assert decoded.values["model"] == "churn"  # one value for every event
    assert decoded.column("model") == ["churn"] * 7
    assert np.isnan(decoded.floats("score")[[0, 3, 6]]).all()
    assert decoded.floats("score")[1] == PREDICTION["score"]
    assert decoded.features["tenure"].tolist() == [3, 1, 3, 3, 3, 5, 3]


def test_encode_keeps_one_array_and_mixed_types_apart() -> None:
    same = [{"ts": 1.0, "model": "m"}, {"ts": 1.0, "model": "m"}]
    assert columnar.encode(same) == {"_columns": {"ts": [1.0, 1.0], "model": "m"}}
    mixed = [{"predicted": 1}, {"predicted": True}, {"predicted": 1.0}]
    assert columnar.encode(mixed)["_columns"]["predicted"] == [1, True, 1.0]


def test_a_bad_event_is_rejected_alone_with_its_index_and_field() -> None:
    rows = _predictions(5)
    rows[3]["latency_ms"] = -4.0
    rows[4]["model"] = "_factory"
    events, rejected = _decode(columnar.encode(rows))
    assert [e["event_id"] for e in events] == ["p-0", "p-1", "p-2"]
    assert [(r.batch_index, r.field) for r in rejected] == [(3, "latency_ms"), (4, "model")]
    assert orjson.loads(rejected[0].raw) == rows[3]


@pytest.mark.parametrize(("doc", "words"), [
    ({"_columns": [1, 2]}, "must be an object of columns"),
    ({"_columns": {"model": "m"}}, "holds no array"),
    ({"_columns": {"event_id": ["a", "b"], "ts": [1.0]}}, "_columns.ts has 1 values, others 2"),
    ({"_columns": {"event_id": ["a"], "features": {"f": [1.0, 2.0]}}},
     "_columns.event_id has 1 values, others 2"),
])
def test_a_batch_of_the_wrong_shape_is_rejected_whole(doc: Any, words: str) -> None:
    events, rejected = _decode(doc)
    assert events == []
    assert len(rejected) == 1
    assert rejected[0].batch_index is None
    assert words in rejected[0].reason


def test_values_that_stand_for_every_event_cannot_explode_past_the_message_size() -> None:
    """A single value counts once per event: 100,000 events of 40 such columns would be four
    million fields from a message of 200 KB."""
    doc = {"_columns": {"ts": [0] * 100_000, **{f"x{i}": "y" for i in range(40)}}}
    events, rejected = _decode(doc)
    assert events == []
    assert "more values than a message of its size may hold" in rejected[0].reason


def test_columns_the_record_does_not_define_are_ignored() -> None:
    rows = _predictions(2)
    doc = columnar.encode(rows)
    doc["_columns"]["unknown"] = [{"deep": 1}, None]
    decoded, rejected = _decode(doc)
    assert rejected == []
    assert decoded.rows() == rows


@pytest.mark.parametrize(("name", "value"), [
    ("ts", 2**53 + 1), ("predicted", 2**53 + 1), ("latency_ms", 86_400_000.5),
    ("model", "a\u200bb"), ("event_id", "x" * (MAX_STRING + 1)), ("status", "maybe"),
    ("score", True), ("ts", None), ("ts", 2**63 - 1), ("features", [1.0, "x"]),
])
def test_each_rule_holds_in_columns(name: str, value: Any) -> None:
    """One event's value is bad: that event is rejected naming the field, as in rows."""
    doc = columnar.encode(_predictions(2))["_columns"]
    if name == "features":
        doc["features"] = {"f": value}
    else:
        first = doc[name][0] if isinstance(doc[name], list) else doc[name]
        doc[name] = [first, value]
    events, rejected = _decode({"_columns": doc})
    assert [e["event_id"] for e in events] == ["p-0"]
    assert [(r.batch_index, r.field.split(".")[0]) for r in rejected] == [(1, name)]


# -- the fast check against the events, on anything -----------------------------------------

def _column(data: st.DataObject, n: int, good: Any, wild: bool, required: bool = False,
            ) -> Any:
    """A column's value: one for every event, or an array; good values (and nulls where the
    field is optional), or, in the one wild column, anything, often next to good ones."""
    goods = st.just(good) if required else st.sampled_from([good, good, None])
    values = (goods | _EDGES | _ANY_VALUE) if wild else goods
    if data.draw(st.booleans()):
        return data.draw(values)
    return [data.draw(values) for _ in range(n)]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.integers(1, 4), st.data())
def test_the_column_check_passes_only_batches_whose_events_all_pass_unchanged(
        topic: str, n: int, data: st.DataObject) -> None:
    """`check` is trusted when it says yes: every event of such a batch must pass the
    record's checks unchanged, and the columns it made must be those of the events."""
    validator = VALIDATORS[topic]
    wild = data.draw(st.sampled_from([spec.name for spec in validator.specs]))
    columns: dict[str, Any] = {}
    for spec in validator.specs:
        if not spec.required and data.draw(st.integers(0, 3)) == 0:
            continue
        if spec.name == "features" and data.draw(st.booleans()):
            columns["features"] = {name: _column(data, n, 1.5, wild == "features") for name in
                                   data.draw(st.lists(st.sampled_from("abc"), unique=True))}
        else:
            columns[spec.name] = _column(data, n, VALID[topic].get(spec.name), wild == spec.name,
                                         spec.required)
    if wild not in ("event_id", "ts"):
        columns["event_id" if topic in ("predictions", "labels") else "ts"] = (
            [f"e{i}" for i in range(n)] if topic in ("predictions", "labels")
            else [VALID[topic]["ts"]] * n)
    try:
        doc = orjson.loads(orjson.dumps({"_columns": columns}))  # what a message holds
    except TypeError:
        assume(False)  # past 64 bits: no JSON encoder writes it (the decoder: tested above)
    try:
        _, n = columnar.shape(doc)  # (n changes when the wild value is an array)
    except columnar.ShapeError:
        return  # rejected whole (an array drawn as the value for every event)
    names = validator.names
    checked = columnar.check(validator, doc["_columns"], n)
    rows = columnar.explode(doc["_columns"], n, names)
    valid, errors, _ = validator.batch(copy.deepcopy(rows))
    if checked is None:
        return
    event(f"fast: {wild}")
    assert errors == []
    assert valid == rows
    assert checked.rows() == rows
    for spec in validator.specs:
        column = [row.get(spec.name) for row in rows]
        assert checked.column(spec.name) == column or spec.name == "features"
        if spec.type in (float, int):
            expected = np.array([math.nan if v is None else v for v in column], np.float64)
            np.testing.assert_array_equal(checked.floats(spec.name), expected)
    if topic == "predictions":
        expected_features = _feature_columns([row.get("features") for row in rows])
        assert checked.features.keys() == expected_features.keys()
        for name, values in expected_features.items():
            np.testing.assert_array_equal(checked.features[name], values)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.integers(2, 6), st.data())
def test_good_events_in_columns_take_the_fast_check(topic: str, n: int,
                                                    data: st.DataObject) -> None:
    """The client library's batches of good events never need the one-by-one check."""
    rows = []
    for i in range(n):
        row = copy.deepcopy(VALID[topic])
        row.pop("extra_field", None)
        for name in list(row):
            if data.draw(st.integers(0, 4)) == 0 and name not in ("ts", "event_id", "label") \
                    and not any(s.required for s in VALIDATORS[topic].specs if s.name == name):
                del row[name]
        if "event_id" in row:
            row["event_id"] = f"e{i}"
        rows.append(row)
    decoded, rejected = _decode(columnar.encode(rows), topic)
    assert rejected == []
    assert isinstance(decoded, Columns)
    assert decoded.rows() == rows


def test_bad_events_keep_their_index_across_the_slices_they_are_checked_in() -> None:
    rows = _predictions(3 * EXPLODE_SLICE)
    bad = [0, EXPLODE_SLICE - 1, EXPLODE_SLICE, 3 * EXPLODE_SLICE - 1]
    for i in bad:
        rows[i]["score"] = "high"
    events, rejected = _decode(columnar.encode(rows))
    assert [e["event_id"] for e in events] == [r["event_id"] for i, r in enumerate(rows)
                                               if i not in bad]
    assert [r.batch_index for r in rejected] == bad
    assert [orjson.loads(r.raw) for r in rejected] == [rows[i] for i in bad]


def test_a_million_bad_events_hold_a_bounded_number_of_errors() -> None:
    """Past the first thousand or so, bad events are counted, not kept (with the frames
    that raised them: hundreds of MB for a 1 MB message)."""
    batch: list[Any] = [{}] * 50_000
    valid, errors, bad = VALIDATORS["predictions"].batch(batch, KEPT_ERRORS)
    assert (valid, len(errors), bad) == ([], KEPT_ERRORS, 50_000)
    assert all(exc.__traceback__ is None for _, exc in errors)
    events, rejected = _decode({"_columns": {"ts": [0] * 50_000}})
    assert events == []
    assert rejected[-1].count == 50_000 - MAX_REJECTIONS
    assert f"{50_000 - MAX_REJECTIONS:,} more bad events" in rejected[-1].reason
