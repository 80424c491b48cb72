"""Seldon Core 2's model topics (protobuf and JSON Open Inference Protocol) mapped to
predictions."""

from __future__ import annotations

import base64
import contextlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.sources import seldon
from agents.sources.mapping import NotMapped
from agents.sources.oip_proto import decode
from core.settings import Source
from tests.agents.sources.recorded import PAYLOADS, Rec
from tests.agents.sources.recorded import seldon as recorded

IRIS = Source(name="iris", kind="seldon", topic="seldon.seldon-mesh.model.iris",
              features=("sepal_length", "sepal_width", "petal_length", "petal_width"))
FRAUD = Source(name="fraud", kind="seldon", topic="seldon.seldon-mesh.model.fraud",
               features=("amount", "age"))


def test_protobuf_request_and_raw_response_decode_to_the_json_form() -> None:
    request, response = recorded()[:2]
    assert request.value is not None
    assert response.value is not None
    body = decode(request.value, response=False)
    assert body["model_name"] == "iris"
    (tensor,) = body["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("predict", "FP32", [2, 4])
    assert tensor["data"] == pytest.approx([6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6])
    answer = decode(response.value, response=True)
    assert answer["model_version"] == "1"
    assert answer["outputs"][0]["data"] == [2, 1]  # raw little-endian INT64


def test_typed_bytes_doubles_and_negative_ints_decode() -> None:
    doc = orjson.loads((PAYLOADS / "seldon_model_topics.json").read_bytes())
    body = decode(base64.b64decode(doc["typed_response_base64"]), response=True)
    assert {t["name"]: t["data"] for t in body["outputs"]} == {
        "label": ["fraud"], "proba": [0.25, 0.75], "delta": [-5]}


def test_a_protobuf_pair_maps_to_one_prediction_per_row() -> None:
    request, response = (seldon.read(r) for r in recorded(now_ms=1_000_000)[:2])
    assert request.is_request
    assert not response.is_request
    assert request.id == response.id == "d3f0b1c2-0000-4000-8000-1234567890ab"
    events = seldon.predictions(request, response, IRIS)
    assert [e["event_id"] for e in events] == [f"{request.id}.0", f"{request.id}.1"]
    assert [e["predicted"] for e in events] == [2, 1]
    first = events[0]
    assert first["model"] == "iris"
    assert first["version"] == "1"
    assert first["latency_ms"] == pytest.approx(9.0, abs=0.001)
    assert first["ts"] == pytest.approx(1000.009)
    assert first["features"]["petal_width"] == pytest.approx(1.4)


def test_a_json_pair_maps_with_probabilities() -> None:
    request, response = (seldon.read(r) for r in recorded()[2:])
    (event,) = seldon.predictions(request, response, FRAUD)
    assert event["model"] == "fraud"
    assert event["version"] == "3"
    assert event["predicted"] == 0
    assert event["score"] == pytest.approx(0.07)
    assert event["features"] == {"amount": 129.5, "age": 41.0}


@pytest.mark.parametrize(("record", "field"), [
    (Rec([], b"{}", topic="seldon.ns.pipeline.p.inputs", key=b"1"), "topic"),
    (Rec([], b"{}", topic="seldon.ns.model.m.inputs"), "key"),
    (Rec([], b"\xff\xff\xff", topic="seldon.ns.model.m.outputs", key=b"1"), "value"),
    (Rec([], b"{nope", topic="seldon.ns.model.m.outputs", key=b"1"), "value"),
])
def test_records_that_are_not_seldon_inferences_name_what_is_wrong(
        record: Rec, field: str) -> None:
    with pytest.raises(NotMapped) as caught:
        seldon.read(record)
    assert caught.value.field == field


def test_the_request_id_header_stands_in_for_a_missing_key() -> None:
    half = seldon.read(Rec([("x-request-id", b"abc")], b"{}", topic="s.ns.model.m.inputs"))
    assert half.id == "abc"


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_or_are_refused_with_a_reason(data: bytes) -> None:
    for response in (False, True):
        with contextlib.suppress(NotMapped):
            decode(data, response)
