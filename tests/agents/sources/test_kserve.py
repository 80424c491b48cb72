"""KServe's logged CloudEvents (binary and structured, V1 and V2) mapped to predictions."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.sources import kserve
from agents.sources.cloudevents import from_kafka, parse_time
from agents.sources.mapping import NotMapped
from core.settings import Source
from tests.agents.sources.recorded import Rec, load

IRIS = Source(name="iris", kind="kserve", topic="kserve-logs", version_header="x-model-version",
              features=("sepal_length", "sepal_width", "petal_length", "petal_width"))


def _pairs(name: str, source: Source) -> list[dict[str, object]]:
    halves = [kserve.read(Rec(headers, value)) for headers, value in load(name)]
    out = []
    for response in (h for h in halves if not h.is_request):
        request = next(h for h in halves if h.is_request and h.id == response.id)
        out += kserve.predictions(request, response, source)
    return out


def test_binary_v1_pairs_map_to_one_prediction_per_instance() -> None:
    iris, churn = _pairs("kserve_v1_binary", IRIS)[:2], _pairs("kserve_v1_binary", IRIS)[2:]
    assert [p["event_id"] for p in iris] == ["0009174a-24a8-4603-b098-09c8799950e9.0",
                                             "0009174a-24a8-4603-b098-09c8799950e9.1"]
    first = iris[0]
    assert first["model"] == "sklearn-iris"
    assert first["version"] == "v3"
    assert first["predicted"] == 1
    assert "score" not in first
    assert first["ts"] == pytest.approx(parse_time("2026-11-30T02:10:00.034567891Z"))
    assert first["latency_ms"] == pytest.approx(13.222, abs=0.002)
    assert first["features"] == {"sepal_length": 6.8, "sepal_width": 2.8, "petal_length": 4.8,
                                 "petal_width": 1.4}
    # churn: no X-Model-Version logged, so the component; probabilities give class and score
    assert churn == [{"event_id": "5b3e2f3c-6a0f-4e0b-9d43-4f3e1b8a2c11",
                      "ts": pytest.approx(parse_time("2026-11-30T02:10:01.5Z")),
                      "model": "churn", "version": "predictor",
                      "latency_ms": pytest.approx(12.0, abs=0.001), "predicted": 1,
                      "score": 0.82}]  # none of the configured features in the request


def test_structured_v2_pairs_map_with_tensors_by_position_and_by_name() -> None:
    source = Source(name="v2", kind="kserve", topic="t",
                    features=("sepal_length", "sepal_width", "petal_length", "petal_width"))
    iris = _pairs("kserve_v2_structured", source)[:2]
    assert [p["predicted"] for p in iris] == [1, 1]
    assert iris[1]["features"]["petal_width"] == 1.6
    assert iris[0]["version"] == "predictor"  # model_version is null in the response
    fraud = _pairs("kserve_v2_structured", Source(name="f", kind="kserve", topic="t",
                                                   features=("amount", "age")))[2]
    assert fraud["version"] == "7"
    assert fraud["features"] == {"amount": 129.5, "age": 41.0}
    assert fraud["predicted"] == 0
    assert fraud["score"] == pytest.approx(0.07)


def test_a_response_alone_maps_without_features_or_latency() -> None:
    headers, response = load("kserve_v1_binary")[1]
    half = kserve.read(Rec(headers, response))
    events = kserve.predictions(None, half, IRIS)
    assert len(events) == 2
    assert "latency_ms" not in events[0]
    assert "features" not in events[0]


@pytest.mark.parametrize(("headers", "value", "field"), [
    ([], b'{"instances": [[1]]}', "specversion"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"s"),
      ("ce_type", b"com.example.other")], b"{}", "type"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"s"),
      ("ce_type", kserve.RESPONSE_TYPE.encode())], b"{}", "time"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"s"),
      ("ce_type", kserve.RESPONSE_TYPE.encode()), ("ce_time", b"yesterday")], b"{}", "time"),
    ([("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"s")], b"not json", "data"),
    ([("content-type", b"application/cloudevents+json")], b'{"id": "x"}', "specversion"),
])
def test_records_that_are_not_kserve_events_name_what_is_wrong(
        headers: list[tuple[str, bytes]], value: bytes, field: str) -> None:
    with pytest.raises(NotMapped) as caught:
        kserve.read(Rec(headers, value))
    assert caught.value.field == field


def test_a_response_without_an_inference_service_is_refused() -> None:
    headers, value = load("kserve_v1_binary")[1]
    headers = [(k, v) for k, v in headers if k != "ce_inferenceservicename"]
    with pytest.raises(NotMapped, match="inferenceservicename"):
        kserve.predictions(None, kserve.read(Rec(headers, value)), IRIS)


def test_structured_data_base64_is_read() -> None:
    import base64

    doc = {"specversion": "1.0", "id": "1", "source": "s", "type": kserve.REQUEST_TYPE,
           "time": "2026-11-30T02:10:00Z",
           "data_base64": base64.b64encode(b'{"instances": [[1, 2]]}').decode()}
    event = from_kafka([], orjson.dumps(doc))
    assert event.data == {"instances": [[1, 2]]}
    assert "data_base64" not in event.attributes


def test_times_with_nanoseconds_and_offsets() -> None:
    assert parse_time("2026-11-30T02:10:00.123456789Z") == pytest.approx(
        parse_time("2026-11-30T03:10:00.123456+01:00"))


HEADER_NAMES = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time",
                                "content-type", "ce_inferenceservicename", "ce_metadata", "x"])
TYPES = st.sampled_from([kserve.REQUEST_TYPE.encode(), kserve.RESPONSE_TYPE.encode(),
                         b"2026-11-30T02:10:00Z", b"{}", b"1.0", b"\xff"])


@given(st.lists(st.tuples(HEADER_NAMES, st.none() | TYPES | st.binary(max_size=8)),
                max_size=8),
       st.none() | st.binary(max_size=40) | st.sampled_from([
           b'{"specversion": "1.0", "id": 1, "data": [1]}', b'{"predictions": [[0.5]]}']))
@settings(max_examples=500, deadline=None)
def test_any_record_maps_or_is_refused_with_a_reason(
        headers: list[tuple[str, bytes | None]], value: bytes | None) -> None:
    with contextlib.suppress(NotMapped):
        half = kserve.read(Rec(headers, value))  # type: ignore[arg-type]
        kserve.predictions(None, half, IRIS)
