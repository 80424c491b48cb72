"""All metric families of one entity in one window, and the snapshot they make together.

Families without data are absent from the state, which keeps a typical (model, window) state
well under a few kilobytes. Metrics that span families (cost per prediction, label coverage,
engagement rate) are derived here, once, from the merged state.
"""

from __future__ import annotations

from typing import Any, Self

from agents.aggregators.base import ratio
from agents.aggregators.drift import Features, Scores
from agents.aggregators.feedback import Feedback
from agents.aggregators.lifecycle import Lifecycle
from agents.aggregators.quality import Quality
from agents.aggregators.throughput import Throughput
from agents.aggregators.traffic import Traffic
from agents.aggregators.usage import Usage

FAMILIES: dict[str, Any] = {
    "traffic": Traffic,
    "quality": Quality,
    "usage": Usage,
    "throughput": Throughput,
    "feedback": Feedback,
    "lifecycle": Lifecycle,
    "scores": Scores,
    "features": Features,
}


class WindowState:
    """The families of one entity in one window; absent families mean no data."""

    __slots__ = ("families",)

    def __init__(self) -> None:
        self.families: dict[str, Any] = {}

    def family(self, name: str) -> Any:
        """The family aggregator, created empty on first use."""
        agg = self.families.get(name)
        if agg is None:
            agg = self.families[name] = FAMILIES[name]()
        return agg

    def merge(self, other: Self) -> Self:
        out = type(self)()
        for name in self.families.keys() | other.families.keys():
            mine, theirs = self.families.get(name), other.families.get(name)
            out.families[name] = (mine.merge(theirs) if mine is not None and theirs is not None
                                  else mine if mine is not None else theirs)
        return out

    def to_state(self) -> dict[str, Any]:
        return {name: agg.to_state() for name, agg in sorted(self.families.items())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        for name, sub in state.items():
            out.families[name] = FAMILIES[name].from_state(sub)
        return out

    def value(self) -> dict[str, Any] | None:
        """The snapshot's metric fields, or None when no family has data."""
        out: dict[str, Any] = {}
        for agg in self.families.values():
            out.update(agg.value() or {})
        if not out:
            return None
        traffic, quality, usage = (self.families.get(n) for n in ("traffic", "quality", "usage"))
        predictions = traffic.predictions if traffic is not None else 0
        direct = traffic.cost_usd if traffic is not None else 0.0
        compute = usage.compute_usd if usage is not None else 0.0
        energy = usage.energy_j if usage is not None else 0.0
        if traffic is not None or usage is not None:
            out["cost_usd"] = direct + compute
            out["cost_per_prediction_usd"] = ratio(direct + compute, predictions)
            out["energy_j_per_prediction"] = ratio(energy, predictions) if usage else None
        if quality is not None:
            out["label_coverage"] = ratio(quality.labelled, predictions)
        feedback = self.families.get("feedback")
        if feedback is not None:
            out["engagement_rate"] = ratio(feedback.engaged, predictions)
        return out
