"""KServe's inference logger, read from Kafka: request and response CloudEvents, paired by
`ce_id` into prediction events.

KServe's logger (`pkg/logger/worker.go`, KServe 0.16) sends each logged request and response
as a CloudEvent 1.0 with the request's id as `id`, `type`
`org.kubeflow.serving.inference.request` or `.response`, `source`, `time`, and the extensions
`inferenceservicename`, `namespace`, `component`, `endpoint` and `metadata` (the logged HTTP
headers as JSON, `{"X-Model-Version": ["v3"]}`); the data is the V1 or V2 body. Knative's
KafkaSink or Kafka broker writes them to a topic in binary or structured mode.

A pair maps to one prediction per row: `model` is the InferenceService, `version` the
configured logged header, else the V2 response's `model_version`, else the component;
`ts` the response's time; `latency_ms` the pair's time difference; `predicted` and `score`
from the response, `features` from the request by the configured names. A response that is a
model server's error (`{"error": ...}`) is one prediction with `status` error.
"""

from __future__ import annotations

from typing import Any

import orjson

from agents.sources.cloudevents import CloudEvent, from_kafka, parse_time
from agents.sources.inference import model_version
from agents.sources.mapping import Half, NotMapped, Record
from agents.sources.predictions import build
from core.settings import Source

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


def read(record: Record) -> Half:
    """The KServe request or response in one Kafka record, or NotMapped."""
    event = from_kafka(record.headers, record.value)
    if event.type not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise NotMapped(f"CloudEvent type {event.type[:100]!r} is neither {REQUEST_TYPE} nor "
                        f"{RESPONSE_TYPE}", "type")
    return Half(event.id, event.type == REQUEST_TYPE, parse_time(event.require("time")),
                event.data, event)


def predictions(request: Half | None, response: Half, source: Source) -> list[dict[str, Any]]:
    """The prediction events of a pair (or of a response whose request never came)."""
    model = response.context.require("inferenceservicename")
    return build(request, response, model, _version(request, response, source), source)


def _version(request: Half | None, response: Half, source: Source) -> str:
    if source.version_header is not None:
        for side in (response, request):
            found = side and _logged_header(side.context, source.version_header)
            if found:
                return found
    version = model_version(response.body) or response.context.attributes.get("component")
    if not version:
        raise NotMapped("no version: neither the configured header, a V2 model_version nor "
                        "the component extension", "component")
    return version


def _logged_header(event: CloudEvent, name: str) -> str | None:
    """A header KServe logged into the `metadata` extension (names compared case-blind)."""
    try:
        metadata = orjson.loads(event.attributes.get("metadata") or "{}")
    except orjson.JSONDecodeError:
        raise NotMapped("the metadata extension is not JSON", "metadata") from None
    if not isinstance(metadata, dict):
        return None
    for key, values in metadata.items():
        if key.lower() == name.lower():
            value = values[0] if isinstance(values, list) and values else values
            return value if isinstance(value, str) and value else None
    return None
