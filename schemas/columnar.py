"""Columnar batches: one message value holding a batch's events field by field.

    {"_columns": {"event_id": ["r-1", "r-2"], "ts": [1.7e9, 1.7e9], "model": "churn",
                  "version": "v3", "score": [0.8, null], "features": {"age": [31, 47]}}}

A field is an array (one value per event, `null` where the event lacks it) or a single value
that every event of the batch has. `features` is an object of such columns, one per feature
name. The batch means exactly the array of events it explodes into (`explode`): a checked
columnar batch is accepted, and its bad events rejected, as that array would be. Columns the
record does not define are ignored.

Why: parsing and checking rows is most of what a batched prediction costs in the worker
(`bench/ingest_cost.py`): 500 events as rows are 500 dicts, each field checked on each. As
columns, orjson makes a few lists, a name repeated in every event is one value, and each
column is checked at once, numbers with numpy (`check`). The client library sends this form.

`check` is only the fast answer for batches that are entirely good: on any doubt it returns
None, and the batch's events are exploded and checked one by one, which names each bad field.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import methodcaller
from typing import Any, Literal, get_args, get_origin

import numpy as np
import numpy.typing as npt

from schemas.fields import (
    INVISIBLE_CHARS,
    JSON,
    MAX_MAGNITUDE,
    MAX_STRING,
    FieldSpec,
    Scalar,
    ValidationError,
    Validator,
    bounds,
)

KEY = "_columns"
FEATURES = "features"
# A batch may describe at most this many values (events x columns) per byte of its message:
# a single value stands for every event, so without a bound a small message could explode
# into millions of fields. Rows need about 6 bytes a field; a dense columnar batch of
# predictions about 9 (bench/ingest_cost.py's: 0.11 fields per byte).
CELLS_PER_BYTE = 0.5

Floats = npt.NDArray[np.float64]
_NONE = type(None)


class ShapeError(ValueError):
    """The batch as a whole is malformed: not columns, or arrays of different lengths."""


@dataclass(frozen=True, slots=True)
class Columns:
    """A columnar batch whose every event passes its record's checks.

    `values` maps each field present to its column (a list of `size` values, None where an
    event lacks it) or to the one value all events share; `numbers` holds the numeric fields
    as float64 arrays (NaN where absent), made while checking; `features` each feature
    column likewise (features no event has are left out).
    """

    size: int
    names: tuple[str, ...]  # the record's fields
    values: dict[str, Any]
    numbers: dict[str, Floats]
    features: dict[str, Floats]
    raw: JSON  # the `_columns` object: explode it for the events themselves

    def column(self, name: str) -> list[Any]:
        """A field as one value per event (None where absent)."""
        value = self.values.get(name)
        return value if type(value) is list else [value] * self.size

    def floats(self, name: str) -> Floats:
        """A numeric field as float64, NaN where absent."""
        array = self.numbers.get(name)
        return array if array is not None else np.full(self.size, np.nan)

    def rows(self) -> list[JSON]:
        """The events themselves, as the batch's rows would have been decoded."""
        return explode(self.raw, self.size, self.names)


def encode(events: list[JSON]) -> JSON:
    """The columnar form of events (dicts of contract fields, None for absent): a field with
    one value in every event is that value once; `features` become one column per name.
    One field stays an array, as `shape` needs one to count the events."""
    names = dict.fromkeys(chain.from_iterable(events))
    columns: JSON = {}
    for name in names:
        if name == FEATURES:
            rows = [e.get(FEATURES) or {} for e in events]
            columns[FEATURES] = {feature: _squeezed([row.get(feature) for row in rows])
                                 for feature in dict.fromkeys(chain.from_iterable(rows))}
        else:
            columns[name] = _squeezed([e.get(name) for e in events])
    if names and not any(type(value) is list for value in columns.values()):
        first = next(iter(names))
        columns[first] = [e.get(first) for e in events]
    return {KEY: columns}


def _squeezed(values: list[Any]) -> Any:
    """One value for a column of equal scalars of one type (`1 == 1.0 == True`), else the
    column."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and kinds <= {str, int, float, bool, _NONE} and len(set(values)) == 1:
        return values[0]
    return values


def shape(doc: Any, max_cells: float | None = None) -> tuple[JSON, int]:
    """The `_columns` object of a columnar message and its number of events; raise
    `ShapeError` saying what is wrong with it."""
    columns = doc[KEY]
    if type(columns) is not dict:
        raise ShapeError(f"{KEY} must be an object of columns")
    sizes = {name: len(value) for name, value in columns.items() if type(value) is list}
    features = columns.get(FEATURES)
    if type(features) is dict:
        sizes.update((f"{FEATURES}.{name}", len(value)) for name, value in features.items()
                     if type(value) is list)
    if not sizes:
        raise ShapeError(f"{KEY} holds no array: the number of events is unknown")
    size = max(sizes.values())
    short = [name for name, n in sizes.items() if n != size]
    if short:
        raise ShapeError(f"{KEY}.{short[0]} has {sizes[short[0]]} values, others {size}")
    width = len(columns) + (len(features) - 1 if type(features) is dict else 0)
    if max_cells is not None and size * width > max_cells:
        raise ShapeError(f"{KEY}: {size:,} events x {width} columns are more values than a "
                         f"message of its size may hold ({max_cells:,.0f})")
    return columns, size


def explode(columns: JSON, size: int, names: tuple[str, ...], start: int = 0,
            stop: int | None = None) -> list[JSON]:
    """The events a (well-shaped) batch stands for, those from `start` to `stop`: fields
    `names` only, each event with the values that are not null; `features` from its
    columns when it is an object of them."""
    stop = size if stop is None else min(stop, size)
    rows: list[JSON] = [{} for _ in range(stop - start)]
    for name in names:
        value = columns.get(name)
        if name == FEATURES and type(value) is dict:
            features: list[JSON] = [{} for _ in rows]
            for feature, column in value.items():
                _spread(features, feature, column, start)
            for row, feature_row in zip(rows, features, strict=True):
                if feature_row:
                    row[FEATURES] = feature_row
        else:
            _spread(rows, name, value, start)
    return rows


def _spread(rows: list[JSON], name: str, value: Any, start: int) -> None:
    """Set field `name` of the events `rows` (from event `start` on) from its column, or
    from the one value for all; null sets nothing."""
    column = value[start:start + len(rows)] if type(value) is list else [value] * len(rows)
    for row, item in zip(rows, column, strict=True):
        if item is not None:
            row[name] = item


# -- the fast check ----------------------------------------------------------------------

_STARTS_RESERVED = methodcaller("startswith", "_")


def check(validator: Validator, columns: JSON, size: int) -> Columns | None:
    """The batch as `Columns` when every event passes its record's checks; None when one
    might not (its events are then checked one by one)."""
    values: dict[str, Any] = {}
    numbers: dict[str, Floats] = {}
    features: dict[str, Floats] = {}
    for spec in validator.specs:
        value = columns.get(spec.name)
        if type(value) is list:
            present = set(map(type, value))
            if _NONE in present:
                if spec.required:
                    return None
                if len(present) == 1:
                    continue  # absent from every event
            if not _column_passes(spec, value, present, numbers):
                return None
        elif spec.type == dict[str, float] and type(value) is dict:
            if not _features_pass(value, size, features):
                return None
        elif value is None:
            if spec.required:
                return None
            continue
        elif not _value_passes(spec, value):
            return None
        elif spec.type is float or spec.type is int:
            numbers[spec.name] = np.full(size, float(value))
        values[spec.name] = value
    return Columns(size, validator.names, values, numbers, features, columns)


def _value_passes(spec: FieldSpec, value: Any) -> bool:
    """One value for every event: the field's own checker (which names no one here)."""
    try:
        return spec.check(spec.name, value) is value  # (an integral float made an int: rows)
    except ValidationError:
        return False


def _column_passes(spec: FieldSpec, column: list[Any], present: set[type],
                   numbers: dict[str, Floats]) -> bool:
    present = present - {_NONE}
    tp, meta = spec.type, spec.meta
    if tp is float or tp is int:
        if not present <= ({int} if tp is int else {float, int}):
            return False
        array = _numbers(column, int in present, meta)
        if array is None:
            return False
        numbers[spec.name] = array
        return True
    if tp is str:
        return present <= {str} and _texts_pass(set(column) - {None}, bool(meta.get("name")))
    if tp is bool:
        return present <= {bool}
    if tp == Scalar:
        return _scalars_pass(column, present)
    if get_origin(tp) is Literal:
        choices = {(type(c), c) for c in get_args(tp)}
        return present <= {kind for kind, _ in choices} and all(
            (type(v), v) in choices for v in set(column) - {None})
    return False  # an object per event: checked one by one


def _numbers(column: list[Any], integers: bool, meta: dict[str, Any]) -> Floats | None:
    """The column as float64 (NaN where null) if every number is within the field's bounds.
    Integers past 2**53 do not survive the conversion exactly: any value that large is
    left to the one-by-one check, which compares the integer itself."""
    try:
        array = np.array(column, dtype=np.float64)
    except OverflowError:  # an integer too large for a double
        return None
    low, high = bounds(meta)
    known = array[~np.isnan(array)] if np.isnan(array).any() else array
    if known.size and not (low <= known.min() and known.max() <= high):
        return None
    if meta.get("gt") is not None and known.size and known.min() <= meta["gt"]:
        return None
    if integers and known.size and np.abs(known).max() >= MAX_MAGNITUDE:
        return None
    return array


def _texts_pass(distinct: set[str], name: bool) -> bool:
    """The rules of `schemas.fields._check_str` (and `_check_name`), each distinct value
    tested once, by C-level maps."""
    if "" in distinct:
        return False
    if distinct and max(map(len, distinct)) > MAX_STRING:
        return False
    if name and any(map(_STARTS_RESERVED, distinct)):
        return False
    if not (all(map(str.isascii, distinct)) and all(map(str.isprintable, distinct))):
        return not any(map(INVISIBLE_CHARS.search, distinct))
    return True


def _scalars_pass(column: list[Any], present: set[type]) -> bool:
    """`_check_scalar`'s rules: strings up to MAX_STRING, finite numbers within +-2**53,
    booleans."""
    if not present <= {str, bool, int, float}:
        return False
    if str in present and max(len(v) for v in column if type(v) is str) > MAX_STRING:
        return False
    if int in present or float in present:
        numeric = column if present <= {int, float} else [
            v for v in column if type(v) is int or type(v) is float]
        return _numbers(numeric, int in present, {}) is not None
    return True


def _features_pass(columns: JSON, size: int, features: dict[str, Floats]) -> bool:
    """Feature columns of numbers (null where an event lacks the feature)."""
    for name, value in columns.items():
        if type(value) is list:
            present = set(map(type, value)) - {_NONE}
            if not present <= {float, int}:
                return False
            array = _numbers(value, int in present, {})
            if array is None:
                return False
            if present:
                features[name] = array
        elif value is not None:
            if type(value) is not float and type(value) is not int:
                return False
            array = _numbers([value], type(value) is int, {})
            if array is None:
                return False
            features[name] = np.full(size, array[0])
    return True
