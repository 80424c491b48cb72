"""Generate (or check) the JSON Schema files of every input and output record, and of
each input's columnar batch.

`python -m schemas.jsonschema` rewrites `schemas/json/`; `--check` exits non-zero when a checked-in
file differs from what the records say, so CI catches a record changed without its schema.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import orjson

from schemas import columnar
from schemas.events import INPUT_RECORDS
from schemas.fields import INVISIBLE_PATTERN, MAX_MAGNITUDE, MAX_STRING, Scalar, field_specs
from schemas.outputs import OUTPUT_RECORDS

SCHEMA_DIR = Path(__file__).with_name("json")
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _type_schema(tp: Any) -> dict[str, Any]:
    if tp is float:
        return {"type": "number"}
    if tp is int:
        return {"type": "integer"}
    if tp is str:
        return {"type": "string", "minLength": 1}
    if tp is bool:
        return {"type": "boolean"}
    if tp == Scalar:
        return {"type": ["string", "number", "boolean"]}
    if get_origin(tp) is Literal:
        return {"enum": list(get_args(tp))}
    if tp == dict[str, float]:
        return {"type": "object", "additionalProperties": {"type": "number"}}
    if get_origin(tp) is dict:
        return {"type": "object"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def record_schema(record: type[Any], direction: str) -> dict[str, Any]:
    """The JSON Schema of one record class."""
    properties: dict[str, Any] = {}
    for spec in field_specs(record):
        prop = _type_schema(spec.type)
        if spec.type in (str, Scalar) and direction == "input":
            prop["maxLength"] = MAX_STRING  # for a Scalar, only its string case
        if spec.type is str and direction == "input":
            prop["pattern"] = (f"^(?!_)(?!.*{INVISIBLE_PATTERN})" if spec.meta.get("name")
                               else f"^(?!.*{INVISIBLE_PATTERN})")
        if direction == "input":
            number = prop["additionalProperties"] if spec.type == dict[str, float] else prop
            if spec.type in (float, int, Scalar, dict[str, float]):
                number["minimum"], number["maximum"] = -MAX_MAGNITUDE, MAX_MAGNITUDE
        for key, schema_key in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum")):
            if spec.meta.get(key) is not None:
                prop[schema_key] = spec.meta[key]
        if spec.meta.get("doc"):
            prop["description"] = spec.meta["doc"]
        if spec.nullable:
            prop = {"anyOf": [prop, {"type": "null"}], **_pop_description(prop)}
            if spec.default is not None:
                prop["default"] = spec.default
        properties[spec.name] = prop
    return {
        "$schema": _DRAFT,
        "$id": f"factory-pulse/{direction}/{record.TOPIC}.schema.json",
        "title": record.__name__,
        "description": (record.__doc__ or "").strip(),
        "x-topic": record.TOPIC,
        "type": "object",
        "properties": properties,
        "required": [s.name for s in field_specs(record) if s.required],
        "additionalProperties": True,
    }


def columnar_schema(record: type[Any]) -> dict[str, Any]:
    """The JSON Schema of a columnar batch of `record` (`schemas/columnar.py`): what
    `record_schema` says of a field, said of a column of it: an array of each event's value
    (null where an event lacks the field) or one value that every event has; `features` an
    object of such columns. A batch valid here explodes into events that each are. Beyond a
    schema's reach, the service also requires at least one array and all of one length."""
    event = record_schema(record, "input")
    required = event["required"]
    columns: dict[str, Any] = {}
    for name, prop in event["properties"].items():
        value, description = _non_null(prop)
        item = value if name in required else {"anyOf": [value, _NULL]}
        column: dict[str, Any] = {"anyOf": [{"type": "array", "items": item}, item]}
        if name == columnar.FEATURES and value.get("type") == "object" \
                and "additionalProperties" in value:
            number = value["additionalProperties"]
            per_feature = {"anyOf": [{"type": "array", "items": {"anyOf": [number, _NULL]}},
                                     number, _NULL]}
            column["anyOf"].insert(0, {"type": "object", "additionalProperties": per_feature})
        columns[name] = {**column, **description}
    return {
        "$schema": _DRAFT,
        "$id": f"factory-pulse/input/{record.TOPIC}.columnar.schema.json",
        "title": f"{record.__name__}, a columnar batch",
        "description": f"A batch of {record.TOPIC} events, field by field (arrays of one "
                       "length, or one value for every event; at least one array).",
        "x-topic": record.TOPIC,
        "type": "object",
        "properties": {columnar.KEY: {"type": "object", "properties": columns,
                                      "required": required, "additionalProperties": True}},
        "required": [columnar.KEY],
        "additionalProperties": True,
    }


_NULL = {"type": "null"}


def _non_null(prop: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A field's schema without its null alternative (and default), and its description."""
    prop = dict(prop)
    description = _pop_description(prop)
    prop.pop("default", None)
    if "anyOf" in prop and _NULL in prop["anyOf"]:
        [prop] = [alternative for alternative in prop["anyOf"] if alternative != _NULL]
    return prop, description


def _pop_description(prop: dict[str, Any]) -> dict[str, Any]:
    return {"description": prop.pop("description")} if "description" in prop else {}


def rendered() -> dict[str, bytes]:
    """File name -> content for every record."""
    files = {}
    for direction, records in (("input", INPUT_RECORDS), ("output", OUTPUT_RECORDS)):
        for record in records:
            doc = record_schema(record, direction)
            body = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            files[f"{direction}.{record.TOPIC}.schema.json"] = body
    for record in INPUT_RECORDS:
        body = orjson.dumps(columnar_schema(record),
                            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        files[f"input.{record.TOPIC}.columnar.schema.json"] = body
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if files are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, body in rendered().items():
        path = SCHEMA_DIR / name
        current = path.read_bytes() if path.exists() else None
        if current == body:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    if args.check and stale:
        print(f"stale JSON Schema files: {', '.join(stale)}; run python -m schemas.jsonschema")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
