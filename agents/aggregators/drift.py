"""Drift statistics: score histograms, the population stability index, and Page-Hinkley.

The score of each window is kept as a 100-bin histogram on [0, 1] (a mergeable family like the
others). PSI compares a window with the model version's reference over 10 bins cut at the
reference's deciles (to the histogram's 0.01 resolution). Page-Hinkley watches the sequence
of per-window error rates for an upward change in their mean (concept drift).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from agents.aggregators.sketch import FloatArray, LinearHistogram

SCORE_BINS = 100
PSI_BINS = 10
EPSILON = 1e-4


class Scores:
    """Histogram of the model's scores in one window."""

    __slots__ = ("hist",)

    def __init__(self) -> None:
        self.hist = LinearHistogram(SCORE_BINS)

    def update(self, scores: FloatArray) -> None:
        present = scores[~np.isnan(scores)]
        self.hist.update(np.clip(present, 0.0, 1.0), np.ones(present.size))

    def merge(self, other: Self) -> Self:
        out = type(self)()
        out.hist = self.hist.merge(other.hist)
        return out

    def to_state(self) -> dict[str, Any]:
        return self.hist.to_state()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        out.hist = LinearHistogram.from_state(state)
        return out

    @property
    def count(self) -> float:
        return self.hist.weight

    def value(self) -> dict[str, Any] | None:
        return None  # drift is reported against a reference, by the snapshot stage


def _dense(hist: LinearHistogram) -> FloatArray:
    dense = np.zeros(hist.bins + 1)
    for key, weight in hist.buckets.items():
        dense[key] += weight
    return dense


def psi(reference: LinearHistogram, current: LinearHistogram) -> float | None:
    """Population stability index of `current` against `reference`, over 10 bins cut at the
    reference's deciles; None when either side is empty."""
    if reference.weight <= 0 or current.weight <= 0:
        return None
    ref, cur = _dense(reference), _dense(current)
    cum = np.cumsum(ref) / ref.sum()
    cuts = sorted({int(np.searchsorted(cum, q / PSI_BINS)) + 1 for q in range(1, PSI_BINS)})
    edges = [0, *[c for c in cuts if 0 < c < ref.size], ref.size]
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        p = max(ref[lo:hi].sum() / ref.sum(), EPSILON)
        q = max(cur[lo:hi].sum() / cur.sum(), EPSILON)
        total += (q - p) * math.log(q / p)
    return total


@dataclass
class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a sequence (here, window error rates).

    `delta` is the magnitude of change tolerated, `threshold` the alarm level, `min_points` the
    windows seen before any alarm.
    """

    delta: float = 0.01
    threshold: float = 0.15
    min_points: int = 5
    n: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0

    def update(self, x: float) -> bool:
        """Add one observation; True when a change is detected (the test then restarts)."""
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.cumulative += x - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        if self.n >= self.min_points and self.cumulative - self.minimum > self.threshold:
            self.n, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0
            return True
        return False

    def to_state(self) -> list[float]:
        return [self.n, self.mean, self.cumulative, self.minimum]

    @classmethod
    def from_state(cls, state: list[float] | None, **params: float) -> PageHinkley:
        out = cls(**params)  # type: ignore[arg-type]
        if state:
            out.n, out.mean, out.cumulative, out.minimum = int(state[0]), *state[1:]
        return out
