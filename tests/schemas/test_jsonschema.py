from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from schemas import jsonschema as generator
from tests.events import INVALID_FIELDS, REQUIRED, VALID, with_field, without


def _schema(topic: str) -> dict[str, Any]:
    return orjson.loads((generator.SCHEMA_DIR / f"input.{topic}.schema.json").read_bytes())


def test_checked_in_schema_files_are_current() -> None:
    assert generator.main(["--check"]) == 0, "run: python -m schemas.jsonschema"


def test_every_topic_has_a_file() -> None:
    names = {p.name for p in generator.SCHEMA_DIR.glob("*.schema.json")}
    assert names == set(generator.rendered())
    assert len(names) == 10


@pytest.mark.parametrize("topic", sorted(VALID))
def test_valid_examples_validate_against_the_published_schema(topic: str) -> None:
    jsonschema.Draft202012Validator(_schema(topic)).validate(VALID[topic])


@pytest.mark.parametrize(("topic", "name", "value", "words"), INVALID_FIELDS)
def test_published_schema_rejects_what_the_service_rejects(topic: str, name: str, value: Any,
                                                           words: str) -> None:
    validator = jsonschema.Draft202012Validator(_schema(topic))
    assert not validator.is_valid(with_field(topic, name, value))


@pytest.mark.parametrize(("topic", "name"), [(t, f) for t, fs in REQUIRED.items() for f in fs])
def test_published_schema_requires_the_required_fields(topic: str, name: str) -> None:
    assert not jsonschema.Draft202012Validator(_schema(topic)).is_valid(without(topic, name))
