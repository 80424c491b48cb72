"""CloudEvents read from Kafka records, as the CloudEvents Kafka protocol binding 1.0 writes
them (Knative's KafkaSink and Kafka broker write this binding).

Binary content mode: each attribute is a `ce_<name>` header (`ce_id`, `ce_type`,
`ce_source`, `ce_time`, extensions such as `ce_inferenceservicename`), the data content type
is the `content-type` header and the record value is the data itself. Structured mode: the
value is the whole event as JSON (`content-type: application/cloudevents+json`), its data
under `data` (or base64 under `data_base64`). Only JSON data is read: inference payloads are.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.sources.mapping import NotMapped

REQUIRED = ("id", "type", "source", "specversion")
# RFC 3339 as Go writes it: up to nanoseconds, `Z` or an offset
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", re.I)


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """Context attributes (extensions included, as strings) and the decoded JSON data."""

    attributes: dict[str, str]
    data: Any

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def type(self) -> str:
        return self.attributes["type"]

    def require(self, name: str) -> str:
        value = self.attributes.get(name)
        if not value:
            raise NotMapped(f"CloudEvent attribute '{name}' is missing", name)
        return value


def parse_time(text: str, field: str = "time") -> float:
    """Seconds since the epoch from an RFC 3339 timestamp (nanoseconds cut to micro)."""
    match = _RFC3339.match(text.strip())
    if not match:
        raise NotMapped(f"'{field}' is not an RFC 3339 timestamp: {text[:64]!r}", field)
    whole, fraction, zone = match.groups()
    stamp = f"{whole}.{(fraction or '0')[:6].ljust(6, '0')}{'+00:00' if zone in 'Zz' else zone}"
    try:
        return datetime.fromisoformat(stamp).astimezone(UTC).timestamp()
    except ValueError:
        raise NotMapped(f"'{field}' is not a valid time: {text[:64]!r}", field) from None


def from_kafka(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> CloudEvent:
    """The CloudEvent of one Kafka record, or NotMapped saying why it is not one."""
    by_name = {name.lower(): raw for name, raw in headers}
    content_type = _text(by_name.get("content-type", b""), "content-type")
    if "ce_specversion" in by_name or "ce_id" in by_name:
        attributes = {name[3:]: _text(raw, name) for name, raw in by_name.items()
                      if name.startswith("ce_")}
        if content_type:
            attributes["datacontenttype"] = content_type
        event = CloudEvent(attributes, _json(value, "data"))
    elif content_type.startswith("application/cloudevents") or (value or b"").lstrip(
            ).startswith(b"{"):
        doc = _json(value, "value")
        if not isinstance(doc, dict) or "specversion" not in doc:
            raise NotMapped("neither a binary CloudEvent (no ce_ headers) nor a structured "
                            "one (no specversion in the value)", "specversion")
        attributes = {k: v if isinstance(v, str) else orjson.dumps(v).decode()
                      for k, v in doc.items() if k not in ("data", "data_base64")}
        if "data_base64" in doc:
            try:
                data = _json(base64.b64decode(doc["data_base64"], validate=True), "data_base64")
            except (binascii.Error, TypeError, ValueError):
                raise NotMapped("data_base64 is not base64", "data_base64") from None
        else:
            data = doc.get("data")
        event = CloudEvent(attributes, data)
    else:
        raise NotMapped("not a CloudEvent: no ce_ headers and no structured event in the value",
                        "specversion")
    for name in REQUIRED:
        event.require(name)
    return event


def _text(raw: bytes | None, name: str) -> str:
    try:
        return (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise NotMapped(f"header {name} is not UTF-8", name) from None


def _json(value: bytes | None, field: str) -> Any:
    if not value:
        raise NotMapped(f"the {field} is empty", field)
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotMapped(f"the {field} is not JSON: {exc}", field) from None
