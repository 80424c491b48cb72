from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from schemas import columnar
from schemas import jsonschema as generator
from tests.events import INVALID_FIELDS, REQUIRED, VALID, with_field, without


def _schema(topic: str) -> dict[str, Any]:
    return orjson.loads((generator.SCHEMA_DIR / f"input.{topic}.schema.json").read_bytes())


def test_checked_in_schema_files_are_current() -> None:
    assert generator.main(["--check"]) == 0, "run: python -m schemas.jsonschema"


def test_every_topic_has_a_file() -> None:
    names = {p.name for p in generator.SCHEMA_DIR.glob("*.schema.json")}
    assert names == set(generator.rendered())
    assert len(names) == 16  # 6 inputs, their columnar batches, 4 outputs


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


def _columnar(topic: str) -> jsonschema.Draft202012Validator:
    schema = orjson.loads(
        (generator.SCHEMA_DIR / f"input.{topic}.columnar.schema.json").read_bytes())
    return jsonschema.Draft202012Validator(schema)


def _other(topic: str) -> dict[str, Any]:
    """A second valid event that differs from the first, so that columns stay arrays."""
    return dict(VALID[topic], ts=VALID[topic]["ts"] + 1)


@pytest.mark.parametrize("topic", sorted(VALID))
def test_the_clients_columnar_batches_validate_against_the_published_schema(
        topic: str) -> None:
    """What the client library sends (`columnar.encode`): arrays, and one value for all."""
    validator = _columnar(topic)
    validator.validate(columnar.encode([VALID[topic], _other(topic)]))
    validator.validate(columnar.encode([VALID[topic]] * 3))
    sparse = [VALID[topic], without(topic, sorted(set(VALID[topic]) - set(REQUIRED[topic]))[0])]
    validator.validate(columnar.encode(sparse))  # an optional field null in one event


@pytest.mark.parametrize(("topic", "name", "value", "words"), INVALID_FIELDS)
def test_the_columnar_schema_rejects_a_batch_holding_an_event_the_service_rejects(
        topic: str, name: str, value: Any, words: str) -> None:
    batch = columnar.encode([VALID[topic], with_field(topic, name, value)])
    assert not _columnar(topic).is_valid(batch)


@pytest.mark.parametrize(("topic", "name"), [(t, f) for t, fs in REQUIRED.items() for f in fs])
def test_the_columnar_schema_requires_the_required_columns(topic: str, name: str) -> None:
    validator = _columnar(topic)
    assert not validator.is_valid(columnar.encode([without(topic, name), _other(topic)]))
    lacking = columnar.encode([VALID[topic], _other(topic)])
    lacking[columnar.KEY][name] = [lacking[columnar.KEY][name][0]
                                   if isinstance(lacking[columnar.KEY][name], list)
                                   else lacking[columnar.KEY][name], None]
    assert not validator.is_valid(lacking)  # null in a required column: an event lacks it
