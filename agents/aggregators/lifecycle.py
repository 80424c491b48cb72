"""Training runs, deployments, rollbacks, retrains and innovations in a window."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np

from agents.aggregators.base import Sums, ratio
from agents.aggregators.sketch import LogSketch

INNOVATIONS = frozenset({"new_model", "new_features"})


class Lifecycle(Sums):
    """Lifecycle counts of one model in one window, with training durations."""

    FIELDS: ClassVar[tuple[str, ...]] = ("leads", "lead_s", "steps", "runs", "run_s",
                                         "run_max_s", "deployments",
                                         "rollbacks", "retrains", "innovations")
    leads: int
    lead_s: float
    steps: int
    runs: int
    run_s: float
    run_max_s: float
    deployments: int
    rollbacks: int
    retrains: int
    innovations: int

    def __init__(self) -> None:
        super().__init__()
        self.durations = LogSketch()

    def add(self, kind: str, change: str | None, duration_s: float | None,
            lead_s: float | None = None) -> None:
        """One lifecycle step; `duration_s` is a finished run's duration, `lead_s` the time
        from a retraining request to the deployment it produced."""
        self.steps += 1
        if lead_s is not None:
            self.leads += 1
            self.lead_s += lead_s
        if kind == "training_finished":
            self.retrains += 1
            if duration_s is not None:
                self.runs += 1
                self.run_s += duration_s
                self.run_max_s = max(self.run_max_s, duration_s)
                self.durations.update(np.array([duration_s]))
        elif kind == "deployed":
            self.deployments += 1
            self.innovations += change in INNOVATIONS
        elif kind == "rolled_back":
            self.rollbacks += 1

    def merge(self, other: Self) -> Self:
        out = super().merge(other)
        out.run_max_s = max(self.run_max_s, other.run_max_s)
        out.durations = self.durations.merge(other.durations)
        return out

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        if self.durations.count:
            state["d"] = self.durations.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = super().from_state({k: v for k, v in state.items() if k != "d"})
        if "d" in state:
            out.durations = LogSketch.from_state(state["d"])
        return out

    def value(self) -> dict[str, Any] | None:
        if not self.steps:
            return None
        return {
            "training_runs": self.runs,
            "training_time_mean_s": ratio(self.run_s, self.runs),
            "training_time_p50_s": self.durations.quantile(0.5),
            "training_time_max_s": self.run_max_s if self.runs else None,
            "deployments": self.deployments,
            "rollbacks": self.rollbacks,
            "change_failure_rate": ratio(self.rollbacks, self.deployments),
            "retrains": self.retrains,
            "innovations": self.innovations,
            "innovation_share": ratio(self.innovations, self.deployments),
            "retrain_lead_time_s": ratio(self.lead_s, self.leads),
        }
