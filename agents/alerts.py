"""Alert rules: when to fire, when to resolve, when to ask for retraining.

Each (rule, entity) has a small state machine. A window rule is judged on closed windows, in
window order: it fires after its condition held for `for` consecutive windows, stays firing
while the condition holds or within `keep_firing_for` windows of it failing, and resolves
once the value is back past the resolve threshold (hysteresis). A resolved rule fires again
on the next episode: `cooldown` limits retraining requests, never detection.

Late labels revise windows already judged. A revision of one of the last `for` windows
judged replaces its value there, and can complete the run that fires the rule; a window
whose value was unknown (no labels yet) is judged when its first value arrives. A rule fires
once per episode, however many revisions arrive.

A streaming rule (its metric in `STREAMING_METRICS`) is judged each time its detector moves,
as the labels arrive, not per window: it fires when the condition holds and resolves when
it no longer does.

Publication happens only on transitions; the states live in the snapshot stage's table, so a
restart neither repeats nor loses one.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from core.settings import AlertRule

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_OPPOSITE = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


@dataclass
class RuleState:
    """Where one rule stands for one entity.

    `recent` holds the last `for` windows judged while not firing, as (start, end, value
    compared, value): what a revision can change and what a retraining request cites.
    """

    firing: bool = False
    failed: int = 0  # consecutive windows it failed (while firing)
    last_start: float | None = None
    requested_end: float | None = None  # end of the window of the last retraining request
    alert_id: str | None = None
    baseline: list[float] = field(default_factory=list)
    recent: list[tuple[float, float, float]] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return {"v": 2, "f": self.firing, "x": self.failed, "s": self.last_start,
                "q": self.requested_end, "id": self.alert_id, "b": self.baseline,
                "r": self.recent}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> RuleState:
        if not state:
            return cls()
        if state.get("v") != 2:  # written before revisions were judged: "e" was the last
            return cls(state["f"], state["x"], state["s"], state["e"], state["id"],  # firing
                       state["b"], [(r[0], r[1], r[2]) for r in state["r"]])
        return cls(state["f"], state["x"], state["s"], state["q"], state["id"], state["b"],
                   [(r[0], r[1], r[2]) for r in state["r"]])

    @property
    def held(self) -> int:
        """Windows in a row, up to the newest judged, whose value met the condition."""
        return len(self.recent)


Transition = Literal["firing", "resolved"]


def applies(rule: AlertRule, scope: str, name: str, window_s: float) -> bool:
    return (rule.scope == scope and rule.window_s == window_s
            and any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.models))


def _compared(rule: AlertRule, state: RuleState, value: float) -> float | None:
    """The value the rule compares: the metric, or its relative change over the baseline
    (the trailing mean of the last `baseline` windows in which the rule was quiet: windows
    of a jump, pending or firing, do not pull the baseline up to meet it)."""
    if not rule.relative:
        return value
    if len(state.baseline) < rule.baseline_windows:
        return None  # not enough history to judge a jump yet
    mean = sum(state.baseline) / len(state.baseline)
    return None if mean == 0 else value / mean - 1.0


def _holds(rule: AlertRule, compared: float) -> bool:
    return _OPS[rule.op](compared, rule.threshold)


def _recovered(rule: AlertRule, compared: float) -> bool:
    if rule.resolve is None:
        return _OPS[_OPPOSITE[rule.op]](compared, rule.threshold)
    return not _OPS[rule.op](compared, rule.resolve) and compared != rule.resolve


def evaluate(rule: AlertRule, state: RuleState, start: float, end: float,
             value: float | None) -> Transition | None:
    """Judge one window's value (a new window, or a revision of one); return the transition
    to publish, if any."""
    if value is None:
        return None  # unknown yet: judged when a revision brings a value
    if state.last_start is not None and start <= state.last_start:
        return _revise(rule, state, start, value)
    state.last_start = start
    compared = _compared(rule, state, value)
    if compared is None:  # a baseline still short, or one of zeros: it keeps its last values
        state.baseline = [*state.baseline, value][-rule.baseline_windows:]
        return None
    holds = _holds(rule, compared)
    if not state.firing:
        if not holds:
            state.recent = []
            if rule.relative:
                state.baseline = [*state.baseline, value][-rule.baseline_windows:]
            return None
        state.recent = [*state.recent, (start, end, compared)][-rule.for_windows:]
        return _fire(rule, state, start) if state.held >= rule.for_windows else None
    state.failed = state.failed + 1 if _recovered(rule, compared) else 0
    if state.failed > rule.keep_firing_for:
        state.firing, state.failed, state.recent = False, 0, []
        return "resolved"
    return None


def _revise(rule: AlertRule, state: RuleState, start: float, value: float,
            ) -> Transition | None:
    """A window judged before has a new value. While the rule is quiet, the run of windows
    that met the condition is counted again with it: a late label can complete the run (or
    break it). A window past the run, or a rule already firing, changes nothing."""
    if state.firing:
        return None
    compared = _compared(rule, state, value)
    if compared is None:
        return None
    in_run = [i for i, r in enumerate(state.recent) if r[0] == start]
    if in_run:
        i = in_run[0]
        if _holds(rule, compared):
            state.recent[i] = (start, state.recent[i][1], compared)
        else:
            state.recent = state.recent[i + 1:]
    elif start == state.last_start and _holds(rule, compared):
        # the newest window judged, which did not meet the condition then and does now
        state.recent = [*state.recent, (start, start + rule.window_s, compared)][
            -rule.for_windows:]
    else:
        return None
    return _fire(rule, state, start) if state.held >= rule.for_windows else None


def _fire(rule: AlertRule, state: RuleState, start: float) -> Transition:
    """Fire, under an id of the rule and the episode's first window (and a count, for a
    second episode that starts in the same window: a streaming rule can)."""
    state.firing, state.failed = True, 0
    alert_id = f"{rule.name}:{state.recent[0][0]:.0f}"
    if state.alert_id is not None and state.alert_id.split("#")[0] == alert_id:
        alert_id += f"#{int(state.alert_id.partition('#')[2] or 1) + 1}"
    state.alert_id = alert_id
    return "firing"


def evaluate_signal(rule: AlertRule, state: RuleState, start: float, end: float,
                    value: float) -> Transition | None:
    """Judge a streaming rule's value as its detector moved, during window [start, end)."""
    if not state.firing:
        if not _holds(rule, value):
            return None
        state.last_start = start
        state.recent = [(start, end, value)]
        return _fire(rule, state, start)
    if _recovered(rule, value):
        state.firing, state.recent = False, []
        return "resolved"
    return None
