"""Declarative field specs shared by validation and JSON Schema generation.

Records are frozen dataclasses whose field metadata carries the value constraints. From one
record class we derive both the fast validator used on the hot path (it works on the decoded
dict, never building instances) and the JSON Schema checked in for consumers in other
languages, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
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
    doc: str = "",
) -> dict[str, Any]:
    """Field metadata: numeric bounds and a description for the JSON Schema."""
    return {"ge": ge, "gt": gt, "le": le, "doc": doc}


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
    return value


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValidationError(name, f"expected an integer, got {_type_name(value)}")
    return value


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(name, f"expected a string, got {_type_name(value)}")
    if not value:
        raise ValidationError(name, "expected a non-empty string")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"expected true or false, got {_type_name(value)}")
    return value


def _check_scalar(name: str, value: Any) -> Scalar:
    if isinstance(value, bool | str):
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

    def check(name: str, value: Any) -> Any:
        # `1 == True` in Python: compare types too so thumbs=true is not taken for +1.
        if not any(value == c and type(value) is type(c) for c in choices):
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


def _base_checker(tp: Any) -> Checker:
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
        check = _bounded(_base_checker(tp), meta)
        specs.append(FieldSpec(f.name, tp, required, nullable, default, meta, check))
    return tuple(specs)


def compile_validator(record: type[Any]) -> Callable[[JSON], JSON]:
    """Build a validator that checks a decoded event in place and fills in defaults.

    Unknown extra fields stay in the dict untouched: the contract keeps and ignores them.
    """
    specs = field_specs(record)
    required = tuple(s for s in specs if s.required)
    optional = tuple(s for s in specs if not s.required)

    def validate(event: JSON) -> JSON:
        for spec in required:
            if spec.name not in event:
                raise ValidationError(spec.name, "required field is missing")
            value = event[spec.name]
            if value is None:
                raise ValidationError(spec.name, "required field is null")
            event[spec.name] = spec.check(spec.name, value)
        for spec in optional:
            value = event.get(spec.name)
            if value is None:
                event[spec.name] = spec.default
            else:
                event[spec.name] = spec.check(spec.name, value)
        return event

    return validate
