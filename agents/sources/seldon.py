"""Seldon Core 2's model topics, read from Kafka: a model's requests on
`<topicPrefix>.<namespace>.model.<model>.inputs` and its answers on `.outputs`, paired by
the request id.

Seldon Core 2's model gateway (`scheduler/pkg/kafka/gateway`) consumes `.inputs`, calls the
model and produces the answer to `.outputs` under the same record key, the request id, with
the request's headers; bodies are Open Inference Protocol messages, protobuf
(`ModelInferRequest` / `ModelInferResponse`, what Seldon documents for Kafka) or JSON (what
its REST path writes). A record carries no event time of its own: its Kafka timestamp is
taken, so `latency_ms` spans the queue and the model. The model is the one the topic names;
the version the configured header, else the response's `model_version`, else "unknown".
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from agents.sources.inference import model_version
from agents.sources.mapping import Half, NotMapped, Record
from agents.sources.oip_proto import decode
from agents.sources.predictions import build
from core.settings import Source

_TOPIC = re.compile(r"\.model\.(?P<model>[^.]+)\.(?P<side>inputs|outputs)$")
REQUEST_ID_HEADER = "x-request-id"


def read(record: Record) -> Half:
    """A Seldon model's request or response in one Kafka record, or NotMapped."""
    match = _TOPIC.search(record.topic)
    if match is None:
        raise NotMapped(f"topic {record.topic!r} is not a Seldon model's .inputs or .outputs",
                        "topic")
    headers = {name.lower(): value for name, value in record.headers}
    raw_id = record.key or headers.get(REQUEST_ID_HEADER)
    if not raw_id:
        raise NotMapped("no request id: neither a record key nor an x-request-id header", "key")
    is_request = match.group("side") == "inputs"
    value = record.value or b""
    if value.lstrip().startswith(b"{"):
        try:
            body: Any = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise NotMapped(f"the value is not JSON: {exc}", "value") from None
    else:
        body = decode(value, response=not is_request)
    return Half(raw_id.decode("utf-8", "replace"), is_request, record.timestamp / 1000, body,
                (match.group("model"), headers))


def predictions(request: Half | None, response: Half, source: Source) -> list[dict[str, Any]]:
    """The prediction events of a pair (or of a response whose request never came)."""
    model, headers = response.context
    version = None
    if source.version_header is not None:
        raw = headers.get(source.version_header.lower())
        version = raw.decode("utf-8", "replace") if raw else None
    return build(request, response, model,
                 version or model_version(response.body) or "unknown", source)
