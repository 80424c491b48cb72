from __future__ import annotations

import base64

import jsonschema
import orjson

from core.deadletter import MAX_VALUE_BYTES, dead_letter
from schemas import jsonschema as generator
from schemas.codec import Rejection

SCHEMA = orjson.loads((generator.SCHEMA_DIR / "output.deadletter.schema.json").read_bytes())


def test_dead_letter_carries_reason_source_and_value() -> None:
    rejection = Rejection("ts: expected a number, got string", "ts", 3, b'{"ts":"x"}')
    payload = dead_letter(rejection, "factory.predictions", 2, 41, b"k1")
    assert payload["reason"] == "ts: expected a number, got string"
    assert (payload["topic"], payload["partition"], payload["offset"]) == (
        "factory.predictions", 2, 41)
    assert (payload["batch_index"], payload["field"], payload["key"]) == (3, "ts", "k1")
    assert payload["value"] == '{"ts":"x"}'
    assert payload["truncated"] is False
    jsonschema.validate(payload, SCHEMA)


def test_binary_value_is_base64_and_huge_value_is_truncated() -> None:
    raw = b"\xff" * (MAX_VALUE_BYTES + 10)
    payload = dead_letter(Rejection("invalid JSON", None, None, raw), "t", 0, 0, None)
    assert payload["value_encoding"] == "base64"
    assert payload["truncated"] is True
    assert base64.b64decode(payload["value"]) == raw[:MAX_VALUE_BYTES]
    jsonschema.validate(payload, SCHEMA)
