"""Declarative field specs shared by validation and JSON Schema generation.

Records are frozen dataclasses whose field metadata carries the value constraints. From one
record class we derive both the fast validator used on the hot path (it works on the decoded
dict, never building instances) and the JSON Schema checked in for consumers in other
languages, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

JSON = dict[str, Any]
Scalar = str | int | bool | float

_ANY_SCALAR_PROBLEM = "expected a string, number or boolean"


class ValidationError(ValueError):
    """One field of one event is wrong; `field` names it so dead letters say exactly what."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def constraint(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    name: bool = False,
    doc: str = "",
) -> dict[str, Any]:
    """Field metadata: numeric bounds, whether the string names an entity (a model, host,
    device, pipeline or stage: names starting with `_` are reserved for the service's own,
    such as the `_factory` rollup), and a description for the JSON Schema."""
    return {"ge": ge, "gt": gt, "le": le, "name": name, "doc": doc}


# Every number is within +-2**53, where doubles still hold every integer exactly: a larger
# "integer" is not one any more, and sums of such values overflow what JSON encoders accept
# (64-bit integers). Fields whose sums or products feed a metric have tighter limits.
MAX_MAGNITUDE = float(2**53)


def bounds(meta: dict[str, Any]) -> tuple[float, float]:
    """A number field's inclusive bounds (`ge`, `le`) folded into +-2**53; `gt`, when set,
    is tested on its own."""
    low = max(-MAX_MAGNITUDE, meta["ge"]) if meta.get("ge") is not None else -MAX_MAGNITUDE
    high = min(MAX_MAGNITUDE, meta["le"]) if meta.get("le") is not None else MAX_MAGNITUDE
    return low, high

# Characters no name may hold: C0/C1 controls, line and paragraph separators, and the
# invisible format characters (zero-width spaces and joiners, bidirectional overrides and
# isolates, the byte-order mark, interlinear annotation and tag characters) that make two
# different names look the same, or one name look like another, on a dashboard.
_INVISIBLE = ("\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e"
              "\u2060-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f")
INVISIBLE_CHARS = re.compile(f"[{_INVISIBLE}]")
# The same set as an ECMA-262 pattern for the JSON Schema files (which other languages read).
INVISIBLE_PATTERN = ("[\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f"
                     "\\u2028-\\u202e\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb]")


Checker = Callable[[str, Any], Any]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_number(name: str, value: Any) -> float:
    # bool is an int subclass in Python but never a number in the contract.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise ValidationError(name, f"expected a finite number, got {value!r}")
    if abs(value) > MAX_MAGNITUDE:
        raise ValidationError(name, f"outside +-2**53, got {value!r}")
    return value


def _check_int(name: str, value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, int)) and not (
            isinstance(value, float) and value.is_integer()):
        raise ValidationError(name, f"expected an integer, got {_type_name(value)}")
    if abs(value) > MAX_MAGNITUDE:
        raise ValidationError(name, f"outside +-2**53, got {value!r}")
    return int(value)


# Names and ids are keys of state and of Kafka messages: a megabyte "model name" would make
# every record that carries it too large to write, so strings are capped.
MAX_STRING = 512


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(name, f"expected a string, got {_type_name(value)}")
    if not value:
        raise ValidationError(name, "expected a non-empty string")
    if len(value) > MAX_STRING:
        raise ValidationError(name, f"longer than {MAX_STRING} characters ({len(value)})")
    bad = INVISIBLE_CHARS.search(value)
    if bad:
        raise ValidationError(name, f"holds the control or invisible character "
                                    f"U+{ord(bad.group()):04X}")
    return value


def _check_name(name: str, value: Any) -> str:
    text = _check_str(name, value)
    if text.startswith("_"):
        raise ValidationError(name, "names starting with '_' are reserved")
    return text


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"expected true or false, got {_type_name(value)}")
    return value


def _check_scalar(name: str, value: Any) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:  # a class name is held by the label join, per prediction
            raise ValidationError(name, f"longer than {MAX_STRING} characters ({len(value)})")
        return value
    if isinstance(value, int | float):
        return _check_number(name, value)
    raise ValidationError(name, f"{_ANY_SCALAR_PROBLEM}, got {_type_name(value)}")


def _check_number_map(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValidationError(name, f"expected an object of numbers, got {_type_name(value)}")
    for key, item in value.items():
        _check_number(f"{name}.{key}", item)
    return value


def _check_object(name: str, value: Any) -> JSON:
    if not isinstance(value, dict):
        raise ValidationError(name, f"expected an object, got {_type_name(value)}")
    return value


def _literal_checker(choices: tuple[Any, ...]) -> Checker:
    allowed = ", ".join(repr(c) for c in choices)
    # `1 == True` in Python: the type is part of the key so thumbs=true is not taken for +1
    keys = frozenset((type(c), c) for c in choices)

    def check(name: str, value: Any) -> Any:
        try:
            known = (type(value), value) in keys
        except TypeError:  # an array or an object: never one of the choices
            known = False
        if not known:
            raise ValidationError(name, f"expected one of {allowed}, got {value!r}")
        return value

    return check


def _bounded(check: Checker, name_meta: dict[str, Any]) -> Checker:
    ge, gt, le = name_meta.get("ge"), name_meta.get("gt"), name_meta.get("le")
    if ge is None and gt is None and le is None:
        return check

    def bounded(name: str, value: Any) -> Any:
        value = check(name, value)
        if ge is not None and value < ge:
            raise ValidationError(name, f"must be >= {ge:g}, got {value!r}")
        if gt is not None and value <= gt:
            raise ValidationError(name, f"must be > {gt:g}, got {value!r}")
        if le is not None and value > le:
            raise ValidationError(name, f"must be <= {le:g}, got {value!r}")
        return value

    return bounded


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return tp, False


def _base_checker(tp: Any, meta: dict[str, Any]) -> Checker:
    if tp is str and meta.get("name"):
        return _check_name
    if tp is float:
        return _check_number
    if tp is int:
        return _check_int
    if tp is str:
        return _check_str
    if tp is bool:
        return _check_bool
    if tp == Scalar:
        return _check_scalar
    if get_origin(tp) is Literal:
        return _literal_checker(get_args(tp))
    if tp == dict[str, float]:
        return _check_number_map
    if get_origin(tp) is dict:
        return _check_object
    raise TypeError(f"no checker for field type {tp!r}")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a record as validation and schema generation see it."""

    name: str
    type: Any
    required: bool
    nullable: bool
    default: Any
    meta: dict[str, Any]
    check: Checker


def field_specs(record: type[Any]) -> tuple[FieldSpec, ...]:
    """Field specs of a record dataclass, in declaration order."""
    hints = typing.get_type_hints(record)
    specs = []
    for f in dataclasses.fields(record):
        tp, nullable = _strip_optional(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required or f.default is dataclasses.MISSING else f.default
        meta = dict(f.metadata)
        check = _bounded(_base_checker(tp, meta), meta)
        specs.append(FieldSpec(f.name, tp, required, nullable, default, meta, check))
    return tuple(specs)


class Validator:
    """Checks decoded events of one record type without copying or filling them in.

    Good events, the hot path, pass one generated predicate each (`_compile_passes`): about
    1.1 µs for a prediction, against 4 µs through the field checkers. Only an event it does
    not pass goes through the checkers one field at a time, which name its first bad field.
    Absent optional fields stay absent; readers apply the contract's defaults with
    `event.get(name, default)`.
    """

    def __init__(self, record: type[Any]) -> None:
        self.specs = field_specs(record)
        self.names = tuple(spec.name for spec in self.specs)
        self._passes = _compile_passes(self.specs)

    def one(self, event: JSON) -> JSON:
        """Check one event; raise `ValidationError` naming the first bad field."""
        if self._passes(event):
            return event
        for spec in self.specs:
            value = event.get(spec.name)
            if value is None:
                if spec.required:
                    problem = "required field is null" if spec.name in event else (
                        "required field is missing")
                    raise ValidationError(spec.name, problem)
                continue
            checked = spec.check(spec.name, value)
            if checked is not value:
                event[spec.name] = checked  # an integral float taken as an integer
        return event

    __call__ = one

    def batch(self, events: list[Any], keep: int | None = None,
              ) -> tuple[list[JSON], list[tuple[int, ValidationError]], int]:
        """Split a batch into valid events, (index, error) of the first `keep` invalid ones
        (all by default), and the number of invalid ones.

        A hostile message of a million bad events must not hold a million exceptions, each
        with the frame that raised it (hundreds of MB): past `keep` they are only counted,
        and none keeps its traceback."""
        if all(map(self._passes, events)):
            return events, [], 0
        valid: list[JSON] = []
        errors: list[tuple[int, ValidationError]] = []
        bad = 0
        room = len(events) if keep is None else keep
        for index, event in enumerate(events):
            if type(event) is not dict:
                bad += 1
                if bad <= room:
                    errors.append((index, ValidationError("", "event must be a JSON object")))
                continue
            try:
                valid.append(self.one(event))
            except ValidationError as exc:
                bad += 1
                if bad <= room:
                    errors.append((index, exc.with_traceback(None)))
        return valid, errors, bad


def _compile_passes(specs: tuple[FieldSpec, ...]) -> Callable[[JSON], bool]:
    """A predicate, True only when `Validator.one` would accept the event as it is.

    One-event messages are most of what model servers send, and a Python call per field
    (`FieldSpec.check`) was most of their validation. Here the record's checks are written
    out as one function of inline type tests and comparisons, the way `dataclasses` writes
    `__init__`. False says no more than "look closer": `one` then runs the field checks,
    which name the problem (or take an integral float as an integer). The rules are the
    checkers' above; `tests/schemas/test_validation.py` holds both to the same answers.
    """
    names: dict[str, Any] = {"invisible": INVISIBLE_CHARS.search}
    top, length = repr(MAX_MAGNITUDE), repr(MAX_STRING)

    def number(x: str, meta: dict[str, Any], integer: bool = False) -> str:
        """The test that fails a number: one chained comparison, the record's bounds folded
        into +-2**53 (NaN fails it)."""
        low, high = bounds(meta)
        above = f" or {x} <= {meta['gt']!r}" if meta.get("gt") is not None else ""
        kind = (f"type({x}) is not int" if integer else
                f"(type({x}) is not float and type({x}) is not int)")
        return f"{kind} or not {low!r} <= {x} <= {high!r}{above}"

    lines = ["def passes(event):", "    if type(event) is not dict:", "        return False",
             "    get = event.get"]
    for i, spec in enumerate(specs):
        tp, meta = spec.type, spec.meta
        if any(meta.get(key) is not None for key in ("ge", "gt", "le")) and tp not in (float,
                                                                                     int):
            raise TypeError(f"bounds on a field of type {tp!r}")
        lines.append(f"    v = get({spec.name!r})")
        # A required field's test fails on None (absent or null) by its type test alone.
        when = "if " if spec.required else "if v is not None and "
        if tp is float:
            bad = number("v", meta)
        elif tp is int:
            bad = number("v", meta, integer=True)
        elif tp is str:
            name = " or v[0] == '_'" if meta.get("name") else ""
            # (printable ASCII holds no invisible character: the search is for the rest)
            bad = (f"type(v) is not str or not v or len(v) > {length}{name} or not "
                   "(v.isascii() and v.isprintable()) and invisible(v)")
        elif tp is bool:
            bad = "type(v) is not bool"
        elif tp == Scalar:
            bad = (f"not (type(v) is bool or (type(v) is str and len(v) <= {length}) or "
                   f"((type(v) is float or type(v) is int) and -{top} <= v <= {top}))")
        elif get_origin(tp) is Literal:
            kinds = {type(c) for c in get_args(tp)}
            if len(kinds) == 1:  # `1 == True`: the type test keeps thumbs=true from +1
                names[f"kind{i}"], names[f"choices{i}"] = kinds.pop(), frozenset(get_args(tp))
                bad = f"type(v) is not kind{i} or v not in choices{i}"
            else:
                names[f"keys{i}"] = frozenset((type(c), c) for c in get_args(tp))
                names[f"types{i}"] = frozenset(kinds)
                bad = f"type(v) not in types{i} or (type(v), v) not in keys{i}"
        elif tp == dict[str, float]:
            lines += [f"    {when}type(v) is not dict:", "        return False",
                      "    if v:", "        for x in v.values():",
                      f"            if {number('x', {})}:", "                return False"]
            continue
        elif get_origin(tp) is dict:
            bad = "type(v) is not dict"
        else:
            raise TypeError(f"no checker for field type {tp!r}")
        lines += [f"    {when}({bad}):", "        return False"]
    lines.append("    return True")
    exec("\n".join(lines), names)  # noqa: S102 (the source is made above, from field specs)
    passes: Callable[[JSON], bool] = names["passes"]
    return passes


def compile_validator(record: type[Any]) -> Validator:
    return Validator(record)
