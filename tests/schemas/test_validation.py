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
    valid, errors, _ = validator.batch(copy.deepcopy(events))
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


def _checkers_accept_unchanged(topic: str, event: dict[str, Any]) -> bool:
    """What the field checkers say, without the generated predicate in front of them."""
    for spec in VALIDATORS[topic].specs:
        value = event.get(spec.name)
        if value is None:
            if spec.required:
                return False
            continue
        try:
            if spec.check(spec.name, value) is not value:
                return False  # taken, but changed (an integral float as an integer)
        except ValidationError:
            return False
    return True


# Values at each rule's edge, then anything.
_EDGES = st.sampled_from([
    "", "_x", "ok", "error", "a\u200bb", "\x00", "x" * 512, "x" * 513, "drift", "gpu", "cpu",
    float("nan"), float("inf"), -float("inf"), 2.0**53, 2**53 + 1, -(2**53) - 1, 0, -1, -0.5,
    1, 5, 6, 100.0, 100.5, 1e6, 1e6 + 1, 1e12 + 1, 86_400_000.5, 2.0, True, False, -1, None,
    {"a": 1.0}, {"a": True}, {"a": float("nan")}, {"a": "x"}, {"a": 2**54}, {}, [1]])
_ANY_VALUE = st.one_of(
    _EDGES, st.booleans(), st.integers(-2**54, 2**54), st.floats(),
    st.text(max_size=3) | st.text(min_size=510, max_size=514),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.floats() | st.integers() | st.booleans()
                    | st.text(max_size=2), max_size=3))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.data())
def test_the_generated_predicate_passes_exactly_what_the_checkers_accept_unchanged(
        topic: str, data: st.DataObject) -> None:
    """`Validator.one` trusts the predicate when it says yes: it must never pass an event the
    checkers refuse, and should pass every one they take as it is (or the fast path is lost)."""
    event = copy.deepcopy(VALID[topic])
    for spec in VALIDATORS[topic].specs:
        choice = data.draw(st.integers(0, 3))
        if choice == 0:
            event.pop(spec.name, None)
        elif choice == 1:
            event[spec.name] = data.draw(_ANY_VALUE)
    assert VALIDATORS[topic]._passes(event) == _checkers_accept_unchanged(topic, event)


def test_the_predicate_refuses_what_is_not_an_object() -> None:
    for value in ([], "x", 3, None, [VALID["predictions"]]):
        assert not VALIDATORS["predictions"]._passes(value)
