"""V1 and V2 (Open Inference Protocol) bodies read as rows of features and answers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents.sources.inference import Answer, Tensors, answers, features, model_version
from agents.sources.mapping import NotMapped

NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def test_v1_instances_by_position_and_by_name() -> None:
    body = {"instances": [[6.8, 2.8, 4.8, 1.4], {"sepal_length": 6.0, "petal_width": "x"}]}
    assert features(body, NAMES, Tensors()) == [
        dict(zip(NAMES, [6.8, 2.8, 4.8, 1.4], strict=True)), {"sepal_length": 6.0}]


def test_v1_predictions_values_and_probabilities() -> None:
    body = {"predictions": [1, "setosa", [0.2, 0.8], [0.1, 0.7, 0.2], 3.5]}
    assert answers(body, Tensors()) == [Answer(1), Answer("setosa"), Answer(1, 0.8),
                                        Answer(1, 0.7), Answer(3.5)]


def test_v2_one_tensor_read_by_position_nested_or_flat() -> None:
    nested = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                          "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
    flat = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "data": [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6]}]}
    assert features(nested, NAMES, Tensors()) == features(flat, NAMES, Tensors())
    assert features(flat, NAMES, Tensors())[1]["petal_width"] == 1.6


def test_v2_one_tensor_per_feature() -> None:
    body = {"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.5, 2]},
                       {"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [41, 30]}]}
    assert features(body, ("amount", "age"), Tensors()) == [
        {"amount": 1.5, "age": 41.0}, {"amount": 2.0, "age": 30.0}]


def test_v2_outputs_first_or_named() -> None:
    body = {"model_version": "7", "outputs": [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
        {"name": "proba", "shape": [2, 2], "datatype": "FP32", "data": [0.1, 0.9, 0.8, 0.2]}]}
    assert answers(body, Tensors()) == [Answer(1), Answer(0)]
    assert answers(body, Tensors(score_output="proba", class_output="label")) == [
        Answer(1, 0.9), Answer(0, 0.2)]
    assert answers(body, Tensors(score_output="proba")) == [Answer(1, 0.9), Answer(0, 0.2)]
    assert model_version(body) == "7"
    assert model_version({"model_version": None}) is None


@pytest.mark.parametrize(("body", "field"), [
    ({"predictions": {"a": 1}}, "data.predictions"),
    ({"outputs": [{"name": "o", "shape": [3], "data": [1, 2]}]}, "data.outputs[0].data"),
    ({"outputs": [{"name": "o", "shape": "3", "data": [1, 2, 3]}]}, "data.outputs[0].shape"),
    ({"something": 1}, "data"),
    ([1, 2], "data"),
])
def test_bodies_that_do_not_map_name_the_field(body: object, field: str) -> None:
    with pytest.raises(NotMapped) as caught:
        answers(body, Tensors())
    assert caught.value.field == field


def test_a_named_tensor_that_is_missing_is_refused() -> None:
    with pytest.raises(NotMapped, match="no tensor named 'scores'"):
        answers({"outputs": [{"name": "o", "shape": [1], "data": [1]}]},
                Tensors(score_output="scores"))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["instances", "predictions", "inputs", "outputs", "name", "shape",
                         "data", "datatype", "error", "a"]), children, max_size=4),
    max_leaves=20)


@given(JSONISH)
@settings(max_examples=1000, deadline=None)
@example({"inputs": [{"name": [1]}]})  # found: a tensor name that cannot key a dict
def test_any_body_maps_or_is_refused_with_a_reason(body: object) -> None:
    for tensors in (Tensors(), Tensors(score_output="data", class_output="name")):
        with contextlib.suppress(NotMapped):
            answers(body, tensors)
        with contextlib.suppress(NotMapped):
            features(body, NAMES, tensors)
