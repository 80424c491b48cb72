"""Mergeable quantile sketches with bounded size.

`LogSketch` is a DDSketch-style log-bucketed histogram: every value in bucket i lies within
`alpha` relative error of the bucket's representative, so any quantile it reports is within
1 % of the true rank-q sample, in a few hundred buckets for values spanning six decades. It
never holds more than `LOG_SKETCH_MAX_BUCKETS` buckets, whatever the data: past that, the
lowest buckets are collapsed into one, as DDSketch's CollapsingLowestDenseStore does (see
`LogSketch`). `LinearHistogram` does the same for bounded values (utilisation shares) with
weights, at absolute resolution, in at most `bins + 1` buckets.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _merge_counts(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    out = dict(a)
    for key, count in b.items():
        out[key] = out.get(key, 0) + count
    return out


def _add_counts(into: dict[int, float], keys: npt.NDArray[Any], weights: FloatArray | None,
                ) -> None:
    if keys.size == 0:
        return
    low = int(keys.min())
    span = int(keys.max()) - low + 1
    if span <= 4 * keys.size + 64:  # (most batches: a counting pass, not unique()'s sort)
        sums = np.bincount(keys - low, weights=weights, minlength=span)
        uniq = np.flatnonzero(np.bincount(keys - low, minlength=span)) if weights is not None \
            else np.flatnonzero(sums)
        pairs = zip((uniq + low).tolist(), sums[uniq].tolist(), strict=True)
    elif weights is None:
        uniq, counts = np.unique(keys, return_counts=True)
        pairs = zip(uniq.tolist(), counts.tolist(), strict=True)
    else:
        uniq, inverse = np.unique(keys, return_inverse=True)
        pairs = zip(uniq.tolist(), np.bincount(inverse, weights=weights).tolist(), strict=True)
    for key, count in pairs:
        into[key] = into.get(key, 0) + count


# 1024 buckets of 2 % width cover 8.9 decades at full resolution (a microsecond to 13 minutes
# in milliseconds); in the changelog form about 13 bytes each, so about 13 KiB per sketch.
LOG_SKETCH_MAX_BUCKETS = 1024


class LogSketch:
    """Quantiles of non-negative values with relative error `alpha` (default 1 %).

    Bounded: at most `max_buckets` buckets (besides the count of zeros). When more keys are
    present, every bucket below the `max_buckets` highest is collapsed into the lowest bucket
    kept, as DDSketch's CollapsingLowestDenseStore does (its bound is on present keys here, not
    on a key range, so sparse data keeps more resolution). The effect:

    - counts are preserved (`count`, and the rank of every value, are exact);
    - a quantile whose rank lies above the collapsed bucket is still within `alpha`;
    - a quantile whose rank lies in the collapsed bucket is reported as that bucket's value,
      an overestimate that may be far above the true (lower) value. It only happens when the
      values span more than `max_buckets` buckets, 8.9 decades with the defaults, between the
      quantile asked and the maximum.

    Collapsing is a function of the set of keys seen, so merging stays exact: merging sketches
    (in any order, any grouping) gives what one sketch fed all the values gives.
    """

    __slots__ = ("_log_gamma", "alpha", "buckets", "count", "max_buckets", "zeros")

    def __init__(self, alpha: float = 0.01, max_buckets: int = LOG_SKETCH_MAX_BUCKETS) -> None:
        self.alpha = alpha
        self._log_gamma = math.log((1 + alpha) / (1 - alpha))
        self.max_buckets = max_buckets
        self.buckets: dict[int, float] = {}
        self.zeros = 0
        self.count = 0

    def update(self, values: FloatArray) -> None:
        """Add the finite, non-negative values of `values` (NaN means missing and is skipped)."""
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        positive = values[values > 0]
        self.zeros += int(values.size - positive.size)
        keys = np.ceil(np.log(positive) / self._log_gamma).astype(np.int64)
        _add_counts(self.buckets, keys, None)
        self.count += int(values.size)
        self._collapse()

    def merge(self, other: LogSketch) -> LogSketch:
        out = LogSketch(self.alpha, min(self.max_buckets, other.max_buckets))
        out.buckets = _merge_counts(self.buckets, other.buckets)
        out.zeros = self.zeros + other.zeros
        out.count = self.count + other.count
        out._collapse()
        return out

    def _collapse(self) -> None:
        """Fold every bucket below the `max_buckets` highest into the lowest one kept."""
        if len(self.buckets) <= self.max_buckets:
            return
        keys = sorted(self.buckets)
        cut = len(keys) - self.max_buckets
        folded = sum(self.buckets.pop(key) for key in keys[:cut])
        self.buckets[keys[cut]] += folded

    def quantile(self, q: float) -> float | None:
        """The value at rank floor(q * (n - 1)), within `alpha` relative error."""
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        if rank < self.zeros:
            return 0.0
        seen: float = self.zeros
        gamma = math.exp(self._log_gamma)
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen > rank:
                return 2 * gamma**key / (gamma + 1)
        return 2 * gamma ** max(self.buckets) / (gamma + 1)

    def to_state(self) -> dict[str, Any]:
        keys = sorted(self.buckets)
        return {"a": self.alpha, "z": self.zeros, "k": keys,
                "c": [int(self.buckets[k]) for k in keys]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LogSketch:
        out = cls(state["a"])
        out.zeros = state["z"]
        out.buckets = dict(zip(state["k"], state["c"], strict=True))
        out.count = out.zeros + sum(state["c"])
        out._collapse()  # a state written before the bound
        return out


class LinearHistogram:
    """Weighted quantiles of values in [0, 1] at resolution 1/bins (utilisation p95)."""

    __slots__ = ("bins", "buckets", "weight")

    def __init__(self, bins: int = 1000) -> None:
        self.bins = bins
        self.buckets: dict[int, float] = {}
        self.weight = 0.0

    def update(self, values: FloatArray, weights: FloatArray) -> None:
        if values.size == 0:
            return
        keys = np.clip(np.rint(values * self.bins), 0, self.bins).astype(np.int64)
        _add_counts(self.buckets, keys, weights)
        self.weight += float(weights.sum())

    def merge(self, other: LinearHistogram) -> LinearHistogram:
        out = LinearHistogram(self.bins)
        out.buckets = _merge_counts(self.buckets, other.buckets)
        out.weight = self.weight + other.weight
        return out

    def quantile(self, q: float) -> float | None:
        """Smallest value whose cumulative weight reaches q of the total."""
        if self.weight <= 0:
            return None
        target = q * self.weight
        seen = 0.0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= target - 1e-12 * self.weight:
                return key / self.bins
        return max(self.buckets) / self.bins

    def to_state(self) -> dict[str, Any]:
        keys = sorted(self.buckets)
        return {"n": self.bins, "k": keys, "w": [self.buckets[k] for k in keys]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LinearHistogram:
        out = cls(state["n"])
        out.buckets = dict(zip(state["k"], state["w"], strict=True))
        out.weight = float(sum(state["w"]))
        return out
