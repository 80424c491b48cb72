"""Generate (or check) the JSON Schema files of every input and output record.

`python -m schemas.jsonschema` rewrites `schemas/json/`; `--check` exits non-zero when a checked-in
file differs from what the records say, so CI catches a record changed without its schema.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import orjson

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
