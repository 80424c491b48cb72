from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import VALIDATORS
from schemas.fields import ValidationError
from tests.events import INVALID_FIELDS, REQUIRED, VALID, with_field, without


@pytest.mark.parametrize("topic", sorted(VALID))
def test_valid_event_passes_and_keeps_unknown_fields(topic: str) -> None:
    event = copy.deepcopy(VALID[topic])
    event["unknown_extra"] = {"nested": True}
    out = VALIDATORS[topic](event)
    assert out["unknown_extra"] == {"nested": True}
    for name, value in VALID[topic].items():
        assert out[name] == value


@pytest.mark.parametrize(("topic", "name"), [(t, f) for t, fs in REQUIRED.items() for f in fs])
def test_missing_required_field_is_named(topic: str, name: str) -> None:
    with pytest.raises(ValidationError) as err:
        VALIDATORS[topic](without(topic, name))
    assert err.value.field == name
    assert str(err.value) == f"{name}: required field is missing"


@pytest.mark.parametrize(("topic", "name", "value", "words"), INVALID_FIELDS)
def test_wrong_value_is_named_with_the_problem(topic: str, name: str, value: Any,
                                               words: str) -> None:
    with pytest.raises(ValidationError) as err:
        VALIDATORS[topic](with_field(topic, name, value))
    assert err.value.field.split(".")[0] == name
    assert words in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(("topic", "name"), [("predictions", "ts"), ("predictions", "score"),
                                             ("telemetry", "util"), ("pipeline", "duration_s")])
def test_non_finite_numbers_are_rejected(topic: str, name: str, bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        VALIDATORS[topic](with_field(topic, name, bad))


def test_absent_optional_fields_stay_absent() -> None:
    event = {"event_id": "x", "ts": 1.0, "model": "m", "version": "1"}
    assert VALIDATORS["predictions"](dict(event)) == event


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.lists(st.integers(0, len(INVALID_FIELDS) + 3),
                                                 min_size=1, max_size=12))
def test_batch_check_agrees_with_event_by_event(topic: str, picks: list[int]) -> None:
    cases = [case for case in INVALID_FIELDS if case[0] == topic]
    events: list[Any] = []
    for pick in picks:
        if pick < len(cases) and pick % 2:
            _, name, value, _ = cases[pick]
            events.append(with_field(topic, name, value))
        elif pick == len(INVALID_FIELDS) + 3:
            events.append(without(topic, REQUIRED[topic][0]))
        else:
            events.append(copy.deepcopy(VALID[topic]))
    validator = VALIDATORS[topic]
    valid, errors = validator.batch(copy.deepcopy(events))
    expected_errors = []
    for index, event in enumerate(copy.deepcopy(events)):
        try:
            validator.one(event)
        except ValidationError as exc:
            expected_errors.append((index, str(exc)))
    assert [(i, str(e)) for i, e in errors] == expected_errors
    assert len(valid) == len(events) - len(expected_errors)


def test_integral_float_is_accepted_as_integer_and_bool_is_not_a_number() -> None:
    assert VALIDATORS["pipeline"](with_field("pipeline", "records", 10.0))["records"] == 10
    with pytest.raises(ValidationError, match="expected an integer"):
        VALIDATORS["pipeline"](with_field("pipeline", "records", True))
    with pytest.raises(ValidationError, match="expected one of"):
        VALIDATORS["feedback"](with_field("feedback", "thumbs", True))


def test_predicted_and_label_take_any_scalar() -> None:
    for value in ("cat", 3, 2.5, False):
        assert VALIDATORS["labels"](with_field("labels", "label", value))["label"] == value
