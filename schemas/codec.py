"""Decoding of input messages, via orjson: one JSON event, a JSON array of events, or a
columnar batch (`schemas.columnar`).

A message is split into accepted events and rejections. Only a message that is not JSON at
all (or not an object or array, or a columnar batch of the wrong shape) is rejected whole; in
a batch each bad event is rejected on its own, so one bad event never costs the good ones
beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from schemas import columnar
from schemas.columnar import Columns
from schemas.events import INPUT_RECORDS
from schemas.fields import JSON, ValidationError, Validator, compile_validator

VALIDATORS: dict[str, Validator] = {r.TOPIC: compile_validator(r) for r in INPUT_RECORDS}


# Dead letters per message, one per bad event; the rest of a message's bad events share one
# record with their count. A hostile 1 MB message of 520,000 bad events made 520,000 dead
# letters (112 MB, 51 s of work, 4.8 GB of memory); now it makes 11.
MAX_REJECTIONS = 10
# Bad events of a message kept with their errors: the first MAX_REJECTIONS, and a thousand
# more whose reasons the last record sums up; the rest are only counted.
KEPT_ERRORS = MAX_REJECTIONS + 1000
EXPLODE_SLICE = 4096  # events of a columnar batch made and checked at a time, when one is bad


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event (or a whole message, when `batch_index` is None) was not accepted;
    `count` > 1 when it stands for that many bad events of one message."""

    reason: str
    field: str | None
    batch_index: int | None
    raw: bytes
    count: int = 1


def decode_message(value: bytes | None, validate: Validator, max_bytes: int | None = None,
                   ) -> tuple[list[JSON] | Columns, list[Rejection]]:
    """Split one Kafka message value into valid events and rejections. The events of a
    columnar batch that is entirely good stay columns.

    A message over `max_bytes` is rejected whole, before it is parsed: its size alone says
    the producer is not one of ours, and parsing it would cost memory out of proportion.
    """
    if not value:
        return [], [Rejection("empty message", None, None, value or b"")]
    if max_bytes is not None and len(value) > max_bytes:
        return [], [Rejection(f"message of {len(value):,} bytes is over the limit of "
                              f"{max_bytes:,} (kafka.max_message_bytes)", None, None, value)]
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [], [Rejection(f"invalid JSON: {exc}", None, None, value)]
    if isinstance(doc, dict):
        if columnar.KEY in doc:
            return decode_columns(doc, value, validate)
        try:
            return [validate.one(doc)], []
        except ValidationError as exc:
            return [], [Rejection(str(exc), exc.field, None, value)]
    if not isinstance(doc, list):
        kind = type(doc).__name__
        return [], [Rejection(f"expected a JSON object or array, got {kind}", None, None, value)]
    return validate_batch(doc, validate)


def decode_columns(doc: JSON, value: bytes, validate: Validator,
                   ) -> tuple[list[JSON] | Columns, list[Rejection]]:
    """A columnar batch: checked column by column, or, when that finds a doubt, exploded
    into its events and checked one by one (the same answers, with each bad field named),
    a slice at a time: a hostile batch's bad events are never all in memory at once."""
    try:
        columns, size = columnar.shape(doc, len(value) * columnar.CELLS_PER_BYTE)
    except columnar.ShapeError as exc:
        return [], [Rejection(f"columnar batch: {exc}", None, None, value)]
    checked = columnar.check(validate, columns, size)
    if checked is not None:
        return checked, []
    names = validate.names
    events: list[JSON] = []
    errors: list[tuple[int, ValidationError]] = []
    bad = 0
    for start in range(0, size, EXPLODE_SLICE):
        rows = columnar.explode(columns, size, names, start, start + EXPLODE_SLICE)
        valid, wrong, count = validate.batch(rows, max(0, KEPT_ERRORS - len(errors)))
        events += valid
        errors += [(start + index, exc) for index, exc in wrong]
        bad += count
    return events, _rejections(errors, bad, lambda i: columnar.explode(
        columns, size, names, i, i + 1)[0])


def validate_batch(doc: list[Any], validate: Validator) -> tuple[list[JSON], list[Rejection]]:
    """Split a decoded batch into valid events and rejections (at most MAX_REJECTIONS + 1)."""
    events, errors, bad = validate.batch(doc, KEPT_ERRORS)
    return events, _rejections(errors, bad, doc.__getitem__)


def _rejections(errors: list[tuple[int, ValidationError]], bad: int,
                event: Callable[[int], Any]) -> list[Rejection]:
    """A batch's first MAX_REJECTIONS bad events one by one, the rest in one record."""
    rejections = [Rejection(exc.problem if not exc.field else str(exc), exc.field or None, index,
                            orjson.dumps(event(index))) for index, exc in errors[:MAX_REJECTIONS]]
    rest = errors[MAX_REJECTIONS:]
    if rest:
        first = rest[0][0]
        kinds = sorted({e.problem if not e.field else str(e) for _, e in rest})
        rejections.append(Rejection(
            f"{bad - MAX_REJECTIONS:,} more bad events in this message, from index {first}; "
            f"first reasons: {'; '.join(kinds[:5])}", None, first,
            orjson.dumps([event(i) for i, _ in rest[:MAX_REJECTIONS]]), bad - MAX_REJECTIONS))
    return rejections


def message_events(value: bytes) -> list[JSON]:
    """The events of a well-formed input message, unchecked (a columnar batch as the events
    it explodes into): for tools and tests that read the input topics."""
    doc = orjson.loads(value)
    if type(doc) is dict and columnar.KEY in doc:
        columns, size = columnar.shape(doc)
        return columnar.explode(columns, size, tuple(columns))
    return doc if type(doc) is list else [doc]


def encode(value: Any) -> bytes:
    """Encode an output payload; numpy scalars and dataclasses are handled by orjson."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
