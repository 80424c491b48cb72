"""Rows of inference request and response bodies, in KServe's V1 protocol and the Open
Inference Protocol (V2, also KServe's and Seldon Core 2's).

V1: a request `{"instances": [...]}` (an instance is a list of numbers, read by position, or
an object, read by name), a response `{"predictions": [...]}`. V2: a request
`{"inputs": [tensor, ...]}`, a response `{"outputs": [tensor, ...], "model_version": ...}`, a
tensor `{"name", "shape", "datatype", "data"}` with `data` flat in row-major order (or
nested). A request with N rows answered with N rows gives N predictions.

A response row maps to what the service counts: a number, string or boolean is the predicted
value; a list of numbers is class probabilities, so the predicted class is its argmax and the
score the probability of class 1 for two classes, the highest probability otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.sources.mapping import NotMapped

Row = dict[str, float]


@dataclass(frozen=True, slots=True)
class Answer:
    """One response row: the predicted value and, for probabilities, the score."""

    predicted: str | int | float | bool | None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Tensors:
    """Which V2 tensors to read; None: the first one (features by position) and the first
    output."""

    input: str | None = None
    score_output: str | None = None
    class_output: str | None = None


def features(body: Any, names: Sequence[str], tensors: Tensors) -> list[Row]:
    """The configured numeric features of each request row (named ones only)."""
    if not isinstance(body, dict):
        raise NotMapped("the request body is not a JSON object", "data")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise NotMapped("'instances' is not a list", "data.instances")
        return [_instance(item, names, f"data.instances[{i}]") for i, item in
                enumerate(instances)]
    if isinstance(body.get("inputs"), list):
        return _v2_features(body["inputs"], names, tensors)
    raise NotMapped("the request has neither 'instances' (V1) nor 'inputs' (V2)", "data")


def answers(body: Any, tensors: Tensors) -> list[Answer]:
    """Each response row as the service counts it."""
    if not isinstance(body, dict):
        raise NotMapped("the response body is not a JSON object", "data")
    if "predictions" in body:
        predictions = body["predictions"]
        if not isinstance(predictions, list):
            raise NotMapped("'predictions' is not a list", "data.predictions")
        return [_answer(p, f"data.predictions[{i}]") for i, p in enumerate(predictions)]
    if isinstance(body.get("outputs"), list):
        return _v2_answers(body["outputs"], tensors)
    raise NotMapped("the response has neither 'predictions' (V1) nor 'outputs' (V2)", "data")


def failed(body: Any) -> bool:
    """A model server's error answer (`{"error": "..."}`, KServe's and MLServer's), which
    counts as one failed prediction."""
    return isinstance(body, dict) and "error" in body and not (
        "predictions" in body or "outputs" in body)


def model_version(body: Any) -> str | None:
    """A V2 response names the version that answered."""
    version = body.get("model_version") if isinstance(body, dict) else None
    return version if isinstance(version, str) and version else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _instance(item: Any, names: Sequence[str], where: str) -> Row:
    if isinstance(item, dict):
        return {n: float(item[n]) for n in names if _number(item.get(n))}
    if isinstance(item, list):
        return {n: float(v) for n, v in zip(names, item, strict=False) if _number(v)}
    if _number(item) and names:
        return {names[0]: float(item)}
    raise NotMapped("an instance is neither a list nor an object", where)


def _answer(value: Any, where: str) -> Answer:
    if isinstance(value, str | bool) or _number(value):
        return Answer(value)
    if isinstance(value, list) and value and all(_number(v) for v in value):
        if len(value) == 1:
            return Answer(value[0])
        best = max(range(len(value)), key=value.__getitem__)
        return Answer(best, float(value[1] if len(value) == 2 else value[best]))
    raise NotMapped("a prediction is neither a value nor a list of probabilities", where)


def _tensor(tensors: list[Any], name: str | None, where: str) -> tuple[dict[str, Any], int]:
    """The tensor (by name, else the first) and its index."""
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise NotMapped("a tensor is not an object", f"{where}[{index}]")
        if name is None or tensor.get("name") == name:
            return tensor, index
    raise NotMapped(f"no tensor named {name!r}" if name else "no tensors", where)


def _rows(tensor: dict[str, Any], where: str) -> list[list[Any]]:
    """A tensor's data as rows: shape [N] or [N, ...] gives N rows."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise NotMapped("'shape' is not a list of sizes", f"{where}.shape")
    data = _flat(tensor.get("data"), f"{where}.data")
    width = math.prod(shape[1:])
    if width == 0 or len(data) != shape[0] * width:
        raise NotMapped(f"'data' holds {len(data)} values, shape {shape} needs "
                        f"{shape[0] * width}", f"{where}.data")
    return [data[i * width:(i + 1) * width] for i in range(shape[0])]


def _flat(data: Any, where: str) -> list[Any]:
    """Nested lists flattened in row-major order (without recursion: JSON nests deep)."""
    if not isinstance(data, list):
        raise NotMapped("'data' is not a list", where)
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _v2_features(inputs: list[Any], names: Sequence[str], tensors: Tensors) -> list[Row]:
    by_name = {t["name"]: t for t in inputs if isinstance(t, dict) and isinstance(
        t.get("name"), str)}
    named = [n for n in names if n in by_name]
    if tensors.input is None and named:
        # tensors named after features: one per feature, each of shape [N] or [N, 1]
        columns = {n: _rows(by_name[n], f"data.inputs({n})") for n in named}
        count = {len(c) for c in columns.values()}
        if len(count) != 1:
            raise NotMapped("feature tensors have different row counts", "data.inputs")
        return [{n: float(c[i][0]) for n, c in columns.items() if c[i] and _number(c[i][0])}
                for i in range(count.pop())]
    tensor, index = _tensor(inputs, tensors.input, "data.inputs")
    return [{n: float(v) for n, v in zip(names, row, strict=False) if _number(v)}
            for row in _rows(tensor, f"data.inputs[{index}]")]


def _v2_answers(outputs: list[Any], tensors: Tensors) -> list[Answer]:
    if tensors.score_output is None and tensors.class_output is None:
        tensor, index = _tensor(outputs, None, "data.outputs")
        return [_answer(row, f"data.outputs[{index}].data")
                for row in _rows(tensor, f"data.outputs[{index}]")]
    scores = classes = None
    if tensors.score_output is not None:
        tensor, index = _tensor(outputs, tensors.score_output, "data.outputs")
        scores = [_answer(row, f"data.outputs[{index}].data")
                  for row in _rows(tensor, f"data.outputs[{index}]")]
    if tensors.class_output is not None:
        tensor, index = _tensor(outputs, tensors.class_output, "data.outputs")
        classes = [_answer(row, f"data.outputs[{index}].data")
                   for row in _rows(tensor, f"data.outputs[{index}]")]
    if scores is not None and classes is not None:
        if len(scores) != len(classes):
            raise NotMapped("the score and class outputs have different row counts",
                            "data.outputs")
        # a score tensor of one value per row is that score; of probabilities, as above
        return [Answer(c.predicted, s.score if s.score is not None else _score(s.predicted))
                for s, c in zip(scores, classes, strict=True)]
    if scores is not None:
        return [s if s.score is not None else Answer(None, _score(s.predicted)) for s in scores]
    assert classes is not None
    return classes


def _score(value: Any) -> float | None:
    return float(value) if _number(value) else None
