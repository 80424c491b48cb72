"""Prediction events written as KServe's inference logger logs them, for `simulate --kserve`.

Each prediction becomes the two CloudEvents KServe's logger sends for one inference (see
`agents.sources.kserve`), in the binary content mode Knative's KafkaSink writes: the request
(an Open Inference Protocol body whose one tensor holds the features) at the prediction's time
minus its latency, and the response (the predicted value and the score as two output
tensors, `predict` and `score`) at its time; a failed prediction is answered
`{"error": ...}`. The matching `[[sources]]` entry is `SOURCE_CONFIG`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from core.kafka import client_kwargs
from core.settings import Settings
from schemas.fields import JSON

FEATURES = ("tenure", "spend", "tickets")
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

Record = tuple[list[tuple[str, bytes]], bytes]


def source_config(name: str, topic: str) -> str:
    """The `[[sources]]` entry that reads what `records` writes."""
    names = ", ".join(f'"{f}"' for f in FEATURES)
    return (f'[[sources]]\nname = "{name}"\nkind = "kserve"\ntopic = "{topic}"\n'
            f'features = [{names}]\nclass_output = "predict"\nscore_output = "score"\n')


def _time(ts: float) -> bytes:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z").encode()


def _datatype(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    return "FP64" if isinstance(value, float) else "BYTES"


def records(event: JSON) -> list[Record]:
    """The request and the response KServe would log for this prediction."""
    rid = str(event["event_id"])
    features = event.get("features") or {}
    request = {"id": rid, "inputs": [{"name": "input-0", "shape": [1, len(FEATURES)],
                                      "datatype": "FP64",
                                      "data": [float(features.get(f, 0.0)) for f in FEATURES]}]}
    response: dict[str, Any]
    if event.get("status") == "error":
        response = {"error": "model server error: inference failed"}
    else:
        outputs = [{"name": "predict", "shape": [1], "datatype": _datatype(event["predicted"]),
                    "data": [event["predicted"]]}]
        if event.get("score") is not None:
            outputs.append({"name": "score", "shape": [1], "datatype": "FP64",
                            "data": [event["score"]]})
        response = {"model_name": event["model"], "model_version": event["version"],
                    "id": rid, "parameters": None, "outputs": outputs}
    latency_s = float(event.get("latency_ms") or 0.0) / 1000

    def headers(kind: str, ts: float) -> list[tuple[str, bytes]]:
        return [("ce_specversion", b"1.0"), ("ce_id", rid.encode()),
                ("ce_source", b"http://localhost:9081/"), ("ce_type", kind.encode()),
                ("ce_time", _time(ts)), ("content-type", b"application/json"),
                ("ce_inferenceservicename", str(event["model"]).encode()),
                ("ce_namespace", b"factory-demo"), ("ce_component", b"predictor"),
                ("ce_endpoint", b"default"), ("ce_metadata", b"{}")]

    return [(headers(REQUEST_TYPE, event["ts"] - latency_s), orjson.dumps(request)),
            (headers(RESPONSE_TYPE, event["ts"]), orjson.dumps(response))]


class KServeLog:
    """Writes predictions to `topic` as KServe's logger would, or nothing when `topic` is
    None; records go to partitions at random, as KafkaSink puts unkeyed records."""

    def __init__(self, settings: Settings, topic: str | None) -> None:
        self.topic = topic
        self.producer = None if topic is None else AIOKafkaProducer(
            acks="all", linger_ms=20, **client_kwargs(settings))
        self.sent = 0

    async def __aenter__(self) -> KServeLog:
        if self.producer is not None:
            await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.producer is not None:
            await self.producer.stop()  # delivers what is queued first

    async def send(self, event: JSON) -> None:
        assert self.producer is not None
        assert self.topic is not None
        for headers, value in records(event):
            await self.producer.send(self.topic, value, headers=headers)
        self.sent += 1
