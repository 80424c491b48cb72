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


class ValueSketch:
    """Counts of an unbounded numeric feature in log buckets (5 % relative width), signed,
    ordered so that bucket keys sort like the values they hold."""

    __slots__ = ("buckets",)
    _LOG_GAMMA = math.log(1.05 / 0.95)
    _OFFSET = 1000  # keeps positive keys above zero down to |x| ~ 1e-43

    def __init__(self) -> None:
        self.buckets: dict[int, float] = {}

    def update(self, values: FloatArray) -> None:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        magnitude = np.abs(values)
        keys = np.zeros(values.size, dtype=np.int64)
        big = magnitude > 1e-40
        keys[big] = (np.ceil(np.log(magnitude[big]) / self._LOG_GAMMA).astype(np.int64)
                     + self._OFFSET) * np.sign(values[big]).astype(np.int64)
        uniq, counts = np.unique(keys, return_counts=True)
        for key, count in zip(uniq.tolist(), counts.tolist(), strict=True):
            self.buckets[key] = self.buckets.get(key, 0) + count

    def merge(self, other: ValueSketch) -> ValueSketch:
        out = ValueSketch()
        out.buckets = dict(self.buckets)
        for key, count in other.buckets.items():
            out.buckets[key] = out.buckets.get(key, 0) + count
        return out

    @property
    def count(self) -> float:
        return float(sum(self.buckets.values()))

    def to_state(self) -> list[list[int]]:
        keys = sorted(self.buckets)
        return [keys, [int(self.buckets[k]) for k in keys]]

    @classmethod
    def from_state(cls, state: list[list[int]]) -> ValueSketch:
        out = cls()
        out.buckets = dict(zip(state[0], state[1], strict=True))
        return out


MAX_FEATURES = 64


class Features:
    """Sketches of each numeric feature of the model's predictions in one window.

    At most MAX_FEATURES per window (the alphabetically first): feature names come from
    producers, and a window's state (a table value, a partial message) must stay bounded
    whatever they send. Keeping the first names is the same whichever shard saw what, so
    merging stays exact for the features kept.
    """

    __slots__ = ("sketches",)

    def __init__(self) -> None:
        self.sketches: dict[str, ValueSketch] = {}

    def update(self, columns: dict[str, FloatArray]) -> None:
        for name, values in columns.items():
            self.sketches.setdefault(name, ValueSketch()).update(values)
        self._cap()

    def merge(self, other: Self) -> Self:
        out = type(self)()
        for name in self.sketches.keys() | other.sketches.keys():
            mine, theirs = self.sketches.get(name), other.sketches.get(name)
            out.sketches[name] = (mine.merge(theirs) if mine and theirs else
                                  mine or theirs or ValueSketch())
        out._cap()
        return out

    def _cap(self) -> None:
        if len(self.sketches) > MAX_FEATURES:
            for name in sorted(self.sketches)[MAX_FEATURES:]:
                del self.sketches[name]

    def to_state(self) -> dict[str, Any]:
        return {name: sketch.to_state() for name, sketch in sorted(self.sketches.items())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        out.sketches = {name: ValueSketch.from_state(s) for name, s in state.items()}
        return out

    def value(self) -> dict[str, Any] | None:
        return None  # drift is reported against a reference, by the snapshot stage


def psi(reference: LinearHistogram | ValueSketch, current: LinearHistogram | ValueSketch,
        ) -> float | None:
    """Population stability index of `current` against `reference`, over 10 bins cut at the
    reference's deciles (to the sketches' resolution); None when either side is empty."""
    keys = sorted(reference.buckets.keys() | current.buckets.keys())
    ref = np.array([reference.buckets.get(k, 0.0) for k in keys], dtype=np.float64)
    cur = np.array([current.buckets.get(k, 0.0) for k in keys], dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return None
    cum = np.cumsum(ref) / ref.sum()
    cuts = sorted({int(np.searchsorted(cum, q / PSI_BINS)) + 1 for q in range(1, PSI_BINS)})
    edges = [0, *[c for c in cuts if 0 < c < ref.size], ref.size]
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        p = max(float(ref[lo:hi].sum() / ref.sum()), EPSILON)
        q = max(float(cur[lo:hi].sum() / cur.sum()), EPSILON)
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
