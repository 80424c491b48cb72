"""Alert rules over closed windows: when to fire, when to resolve, when to ask for retraining.

Each (rule, entity) has a small state machine evaluated once per closed window, in window
order: a rule fires after its condition held for `for` consecutive windows (and not within
`cooldown` of its last firing), stays firing while the condition holds or within
`keep_firing_for` windows of it failing, and resolves once the value is back past the resolve
threshold (hysteresis). Publication happens only on those two transitions; the states live in
the snapshot stage's table, so a restart neither repeats nor loses one.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.settings import AlertRule

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_OPPOSITE = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


@dataclass
class RuleState:
    """Where one rule stands for one entity."""

    firing: bool = False
    held: int = 0  # consecutive windows the condition held (while not firing)
    failed: int = 0  # consecutive windows it failed (while firing)
    last_start: float | None = None
    fired_end: float | None = None
    alert_id: str | None = None
    baseline: list[float] = field(default_factory=list)
    recent: list[tuple[float, float, float]] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return {"f": self.firing, "h": self.held, "x": self.failed, "s": self.last_start,
                "e": self.fired_end, "id": self.alert_id, "b": self.baseline, "r": self.recent}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> RuleState:
        if not state:
            return cls()
        return cls(state["f"], state["h"], state["x"], state["s"], state["e"], state["id"],
                   state["b"], [(r[0], r[1], r[2]) for r in state["r"]])


Transition = Literal["firing", "resolved"]


def applies(rule: AlertRule, scope: str, name: str, window_s: float) -> bool:
    return (rule.scope == scope and rule.window_s == window_s
            and any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.models))


def observed(rule: AlertRule, state: RuleState, value: float) -> float | None:
    """The value the rule compares: the metric, or its relative change over the baseline.

    The baseline is the trailing mean of the last `baseline` windows in which the rule was
    quiet: windows of a jump (pending or firing) do not pull the baseline up to meet it.
    """
    if not rule.relative:
        return value
    baseline = state.baseline
    if len(baseline) < rule.baseline_windows:
        state.baseline = [*baseline, value]
        return None  # not enough history to judge a jump yet
    mean = sum(baseline) / len(baseline)
    return None if mean == 0 else value / mean - 1.0


def evaluate(rule: AlertRule, state: RuleState, start: float, end: float,
             value: float | None) -> Transition | None:
    """Advance the state by one closed window; return the transition to publish, if any."""
    if state.last_start is not None and start <= state.last_start:
        return None  # a revision of a window already judged, or one out of order
    state.last_start = start
    if value is None:
        return None
    compared = observed(rule, state, value)
    if compared is None:
        return None
    holds = _OPS[rule.op](compared, rule.threshold)
    if rule.relative and not holds and not state.firing:
        state.baseline = [*state.baseline, value][-rule.baseline_windows:]
    if not state.firing:
        state.recent = [*state.recent, (start, end, compared)][-rule.for_windows:]
        state.held = state.held + 1 if holds else 0
        cooled = state.fired_end is None or end - state.fired_end >= rule.cooldown_s
        if state.held >= rule.for_windows and cooled:
            state.firing, state.failed, state.fired_end = True, 0, end
            state.alert_id = f"{rule.name}:{start:.0f}"
            return "firing"
        return None
    resolve_at = rule.threshold if rule.resolve is None else rule.resolve
    recovered = _OPS[_OPPOSITE[rule.op]](compared, resolve_at) if rule.resolve is None else (
        not _OPS[rule.op](compared, resolve_at) and compared != resolve_at)
    state.failed = state.failed + 1 if recovered else 0
    if state.failed > rule.keep_firing_for:
        state.firing, state.held = False, 0
        state.recent = []
        return "resolved"
    return None
