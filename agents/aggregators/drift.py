"""Drift statistics: score histograms, feature sketches and the population stability index.

The score of each window is kept as a 100-bin histogram on [0, 1] (a mergeable family like the
others). PSI compares a window with the model version's reference over 10 bins (`drift.psi_bins`)
cut at the reference's deciles (to the histogram's 0.01 resolution). The change detectors over
error rates are in `agents.aggregators.change`.

Every state here is bounded whatever producers send: scores in 101 bins, at most MAX_FEATURES
features named in at most MAX_FEATURE_NAME characters, each in at most
VALUE_SKETCH_MAX_BUCKETS buckets. The drift reference
(a WindowState of scores and features) has the same bound.
"""

from __future__ import annotations

import hashlib
import itertools
import math
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
        # drift is reported against a reference, by the snapshot stage
        if self.hist.weight <= 0:
            return None
        total = sum(k * w for k, w in self.hist.buckets.items()) / self.hist.bins
        return {"score_mean": total / self.hist.weight}


# Buckets per feature: PSI needs ten bins cut at the reference's deciles (a normal feature
# over four decades each side of zero fits at level 3, its PSI within 0.01 of the unbounded
# sketch's), and 64 features x 48 buckets stay under 48 KiB in the changelog form.
VALUE_SKETCH_MAX_BUCKETS = 48


class ValueSketch:
    """Counts of an unbounded numeric feature in log buckets (5 % relative width), signed,
    ordered so that bucket keys sort like the values they hold.

    Bounded: at most `max_buckets` buckets. When more are present, the sketch coarsens
    uniformly, as UDDSketch does: every step to the next `level` merges each pair of
    neighbouring buckets of the same sign (the width ratio gamma becomes gamma**2), until the
    keys fit. Unlike collapsing one end, this keeps the whole distribution, which is what PSI
    compares: ordering is kept, values of the two signs and magnitudes below 1e-40 (the zero
    bucket) are never mixed, and each bucket still spans a bounded ratio of magnitudes (5 %
    at level 0, 10 % at 1, 21 % at 2, 2.2x at 3...). A feature whose magnitudes cover about
    three decades on each side of zero fits at level 2; values from 1e-300 to 1e300 end at a
    level where a bucket spans many decades (PSI then compares coarse bins, still in order).

    The level is always the lowest at which the keys seen fit, a function of the values seen
    only, so merging stays exact: merging sketches in any order or grouping gives the buckets
    one sketch fed every value gives. The sums beside them (`moments`, read by the
    mean-shift detector, never published) are exact to the doubles' rounding.
    """

    __slots__ = ("buckets", "level", "max_buckets", "moments")
    _LOG_GAMMA = math.log(1.05 / 0.95)
    _OFFSET = 1000  # keeps positive keys above zero down to |x| ~ 1e-43

    def __init__(self, max_buckets: int = VALUE_SKETCH_MAX_BUCKETS) -> None:
        self.buckets: dict[int, float] = {}
        self.level = 0
        # coarsening ends at five keys: zero, and magnitudes below or above 1 of either sign
        self.max_buckets = max(max_buckets, 5)
        # the values' sum and sum of squares: the per-value mean-shift detector reads the new
        # values of each partial as the difference of two sums; NaN when unknown (a state
        # written without them, or sums past the doubles' range: features are unbounded)
        self.moments = [0.0, 0.0]

    def update(self, values: FloatArray) -> None:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        with np.errstate(over="ignore"):  # past the doubles' range: inf, stored as unknown
            self.moments = [self.moments[0] + float(values.sum()),
                            self.moments[1] + float(np.dot(values, values))]
        magnitude = np.abs(values)
        keys = np.zeros(values.size, dtype=np.int64)
        big = magnitude > 1e-40
        index = np.ceil(np.log(magnitude[big]) / self._LOG_GAMMA).astype(np.int64)
        index = -((-index) >> self.level)  # ceil(index / 2**level)
        keys[big] = (index + self._OFFSET) * np.sign(values[big]).astype(np.int64)
        uniq, counts = np.unique(keys, return_counts=True)
        for key, count in zip(uniq.tolist(), counts.tolist(), strict=True):
            self.buckets[key] = self.buckets.get(key, 0) + count
        self._fit()

    def merge(self, other: ValueSketch) -> ValueSketch:
        out = ValueSketch(min(self.max_buckets, other.max_buckets))
        out.level = max(self.level, other.level)
        out.moments = [a + b for a, b in zip(self.moments, other.moments, strict=True)]
        for sketch in (self, other):
            for key, count in sketch.coarsened(out.level).items():
                out.buckets[key] = out.buckets.get(key, 0) + count
        out._fit()
        return out

    def coarsened(self, level: int) -> dict[int, float]:
        """The buckets as they are at `level` (at least this sketch's own level)."""
        steps = level - self.level
        if steps <= 0:
            return self.buckets
        out: dict[int, float] = {}
        for key, count in self.buckets.items():
            k = _coarser(key, steps, self._OFFSET)
            out[k] = out.get(k, 0) + count
        return out

    def _fit(self) -> None:
        while len(self.buckets) > self.max_buckets:
            self.buckets = self.coarsened(self.level + 1)
            self.level += 1

    @property
    def count(self) -> float:
        return float(sum(self.buckets.values()))

    def to_state(self) -> list[list[Any]]:
        keys = sorted(self.buckets)
        # a sum past the doubles' range (features are not bounded) is unknown: null
        moments = [v if math.isfinite(v) else None for v in self.moments]
        return [keys, [int(self.buckets[k]) for k in keys], [self.level], moments]

    @classmethod
    def from_state(cls, state: list[list[Any]]) -> ValueSketch:
        out = cls()
        out.buckets = dict(zip(state[0], state[1], strict=True))
        out.level = state[2][0] if len(state) > 2 else 0
        # NaN (stored as null): unknown, in a state written before the moments
        out.moments = [math.nan if v is None else float(v)
                       for v in (state[3] if len(state) > 3 else (None, None))]
        out._fit()  # a state written before the bound
        return out


def _coarser(key: int, steps: int, offset: int) -> int:
    """The key, `steps` levels coarser: its magnitude index halved `steps` times, rounding
    up (ceil(ceil(i / 2) / 2) = ceil(i / 4), so steps compose)."""
    if key == 0:
        return 0
    index = abs(key) - offset
    index = -((-index) >> steps)
    return (index + offset) if key > 0 else -(index + offset)


MAX_FEATURES = 64
MAX_FEATURE_NAME = 64  # characters; a longer name is shortened, see `feature_name`


def feature_name(name: str) -> str:
    """The name a feature is kept under: itself, or when longer than MAX_FEATURE_NAME its
    first 40 characters, "#" and 16 hex digits of a hash of the whole name (names are not
    length-checked on input, and one name is in every state and drift output that has it)."""
    if len(name) <= MAX_FEATURE_NAME:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{name[:40]}#{digest}"


class Features:
    """Sketches of each numeric feature of the model's predictions in one window.

    At most MAX_FEATURES per window (the alphabetically first), each named in at most
    MAX_FEATURE_NAME characters and at most VALUE_SKETCH_MAX_BUCKETS buckets: feature names
    come from producers, and a window's state (a table value, a partial message) must stay
    bounded whatever they send. Keeping the first names is the same whichever shard saw what,
    so merging stays exact for the features kept.
    """

    __slots__ = ("sketches",)

    def __init__(self) -> None:
        self.sketches: dict[str, ValueSketch] = {}

    def update(self, columns: dict[str, FloatArray]) -> None:
        named: dict[str, list[FloatArray]] = {}
        for name, values in columns.items():
            named.setdefault(feature_name(name), []).append(values)
        last = max(self.sketches) if len(self.sketches) >= MAX_FEATURES else None
        for name in sorted(named)[:MAX_FEATURES]:
            if last is not None and name > last:
                break  # past the cap already: never kept
            parts = named[name]
            self.sketches.setdefault(name, ValueSketch()).update(
                parts[0] if len(parts) == 1 else np.concatenate(parts))
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
        out._cap()
        return out

    def value(self) -> dict[str, Any] | None:
        return None  # drift is reported against a reference, by the snapshot stage


def psi(reference: LinearHistogram | ValueSketch, current: LinearHistogram | ValueSketch,
        bins: int = PSI_BINS) -> float | None:
    """Population stability index of `current` against `reference`, over `bins` bins cut at
    the reference's quantiles (to the sketches' resolution); None when either side is empty.
    Feature sketches are compared at the coarser of their two levels."""
    ref_buckets, cur_buckets = reference.buckets, current.buckets
    if isinstance(reference, ValueSketch) and isinstance(current, ValueSketch):
        level = max(reference.level, current.level)
        ref_buckets, cur_buckets = reference.coarsened(level), current.coarsened(level)
    keys = sorted(ref_buckets.keys() | cur_buckets.keys())
    ref = np.array([ref_buckets.get(k, 0.0) for k in keys], dtype=np.float64)
    cur = np.array([cur_buckets.get(k, 0.0) for k in keys], dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return None
    cum = np.cumsum(ref) / ref.sum()
    cuts = sorted({int(np.searchsorted(cum, q / bins)) + 1 for q in range(1, bins)})
    edges = [0, *[c for c in cuts if 0 < c < ref.size], ref.size]
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        p = max(float(ref[lo:hi].sum() / ref.sum()), EPSILON)
        q = max(float(cur[lo:hi].sum() / cur.sum()), EPSILON)
        total += (q - p) * math.log(q / p)
    return total
