"""Predictions: counts, failures, latency quantiles and direct cost."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from agents.aggregators.base import ratio
from agents.aggregators.sketch import FloatArray, LogSketch


class Traffic:
    """Prediction volume and serving quality of one model in one window."""

    __slots__ = ("cost_usd", "failures", "latency", "predictions")

    def __init__(self) -> None:
        self.predictions = 0
        self.failures = 0
        self.cost_usd = 0.0
        self.latency = LogSketch()

    def update(self, failed: np.ndarray, latency_ms: FloatArray, cost_usd: FloatArray) -> None:
        """One batch: `failed` booleans, latencies and costs with NaN where absent."""
        self.predictions += int(failed.size)
        self.failures += int(np.count_nonzero(failed))
        self.cost_usd += float(np.nansum(cost_usd)) if cost_usd.size else 0.0
        self.latency.update(latency_ms)

    def merge(self, other: Self) -> Self:
        out = type(self)()
        out.predictions = self.predictions + other.predictions
        out.failures = self.failures + other.failures
        out.cost_usd = self.cost_usd + other.cost_usd
        out.latency = self.latency.merge(other.latency)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"n": self.predictions, "f": self.failures, "c": self.cost_usd,
                "l": self.latency.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        out.predictions, out.failures, out.cost_usd = state["n"], state["f"], state["c"]
        out.latency = LogSketch.from_state(state["l"])
        return out

    def value(self) -> dict[str, Any] | None:
        if not self.predictions:
            return None
        return {
            "predictions": self.predictions,
            "failures": self.failures,
            "failure_rate": ratio(self.failures, self.predictions),
            "latency_p50_ms": self.latency.quantile(0.50),
            "latency_p95_ms": self.latency.quantile(0.95),
            "latency_p99_ms": self.latency.quantile(0.99),
        }
