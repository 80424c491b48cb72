"""A base for metric families made of plain sums.

Every family (`agents.aggregators.window.FAMILIES`) has `merge`, `to_state`, `from_state`
and `value`; `tests/agents/aggregators/test_contract.py` checks each against those rules.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self


class Sums:
    """Named counters merged by addition; subclasses list them in `FIELDS`."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, 0)

    def merge(self, other: Self) -> Self:
        out = type(self)()
        for name in self.FIELDS:
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def to_state(self) -> dict[str, Any]:
        return {name: json_number(getattr(self, name)) for name in self.FIELDS
                if getattr(self, name)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        for name, value in state.items():
            setattr(out, name, value)
        return out


_INT64 = 2**63


def json_number(value: float) -> float:
    """`value` as the changelog form can hold it: a sum of integers past 64 bits (which JSON
    encoders refuse) as the nearest float, anything else unchanged."""
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return float(value)
    return value


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None
