"""Sequential change detectors: Page-Hinkley over window error rates, ADWIN over labels,
CUSUM over a numeric input's values against its reference (scores, features).

Both take their parameters in the constructor, expose `update` and report a change when one
is seen, and keep a small JSON state (`to_state`/`from_state`) that the snapshot stage stores
in its table, so a restart neither forgets nor repeats a detection.

ADWIN here reads the labelled error stream of one model as chunks of counts (n labelled,
e of them wrong), not one event at a time: the shards send the stage their windows' counts
at each flush, and the stage feeds each model's detector the new counts of all shards
together. One detector per model, fed by every shard, tests each change once: detectors run
per shard would each see a share of the labels, detect later, and each raise its own false
alarms (four shards, four times as many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a sequence (window error rates).

    `delta` is the magnitude of change tolerated, `threshold` the alarm level, `min_points` the
    values seen before any alarm (the defaults are the settings': `[drift]` ph_*).

    >>> detector = PageHinkley(delta=0.01, threshold=0.15, min_points=5)
    >>> [detector.update(x) for x in [0.1] * 10 + [0.3] * 2]
    [False, False, False, False, False, False, False, False, False, False, True, False]
    """

    delta: float
    threshold: float
    min_points: int
    n: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0

    def update(self, x: float) -> bool:
        """Add one value; True when a change is detected (the test then restarts)."""
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

    def restore(self, state: list[float] | None) -> PageHinkley:
        """This detector (its parameters kept) at the stored `state`."""
        if state:
            self.n, self.mean, self.cumulative, self.minimum = int(state[0]), *state[1:]
        return self


# Buckets kept at most: at resolution 4 a million observations need about 62.
MAX_BUCKETS = 256
# Observations kept at most: the oldest buckets are dropped past this.
MAX_LENGTH = 1 << 22
# The stream's dispersion is measured over chunks of this many observations, the last
# DISPERSION_CHUNKS of them; a value under DISPERSION_MIN is chance (see
# `Adwin._measure_dispersion`). It is first measured once a quarter of them are in.
DISPERSION_CHUNK = 500
DISPERSION_CHUNKS = 64
DISPERSION_MIN = 2.5
DISPERSION_FADE = 0.97  # per chunk
# Observations before any change is reported: time to measure the dispersion once. A test
# that has not measured it alarms on overdispersed streams (fed 8 at a time, the 16th chunk
# of 504 closes at 8,064: 4 false alarms in 30 wobble streams came at 8,000), so the
# warm-up waits up to a quarter longer for it; chunks larger still (labels in large
# batches) would make it wait twice as long or more, and it does not.
WARM_UP = DISPERSION_CHUNK * DISPERSION_CHUNKS // 4
# The cut test's bar is lowered for cuts whose shorter side holds more than this many
# observations and raised for fewer (`Adwin._cut`).
SCALE_PIVOT = 256


@dataclass
class Adwin:
    """ADWIN (Bifet and Gavaldà, 2007) over a 0/1 stream that arrives as counts.

    The window holds the observations since the last change, summarised in buckets of
    (observations, ones), oldest first. Every `clock` observations it tests every cut
    between two buckets: when the older part's rate and the newer part's differ, the older part is
    dropped and the change reported. The test is the two-sample binomial likelihood ratio
    (signed root), against the normal quantile of ADWIN's confidence `delta` corrected for
    the ln(n) cuts tested, sqrt(2 ln(2 ln n / delta)): for 0/1 data it is sharper than
    ADWIN's Hoeffding-Bernstein bound, which River's `drift.ADWIN` uses: that is what
    makes it detect sooner (`bench/drift_eval.py`). Unlike ADWIN, the bar depends on how
    long the cut's shorter side is (`_cut`), which is what makes a slow ramp seen sooner.
    It also widens the test by the stream's measured overdispersion (`_measure_dispersion`)
    and reports nothing in its first WARM_UP observations, the time to measure that once.

    Bounded: a bucket merges with its older neighbour while together they hold at most
    1/`resolution` of the observations newer than them (cut points stay within that relative
    precision of any position), at most MAX_BUCKETS buckets and MAX_LENGTH observations.

    It remembers the level it left when it saw an increase (`baseline`) and the level it
    rose to (`peak`), and forgets both when the errors are back at least halfway down, by a
    decrease it detects or by the window's rate itself (a chance burst that stops: the
    labels after it dilute it, and no cut may separate it any more): `shift` is how far above
    the baseline the errors are now, 0 when no increase stands. An alert rule watches it
    (`error_shift`).

    >>> detector = Adwin(delta=0.002)
    >>> [detector.update(500, 40) for _ in range(20)].count(0)  # 8 % wrong
    20
    >>> detector.update(1000, 250)  # then 25 % wrong
    1
    >>> round(detector.shift, 3)
    0.17
    """

    delta: float  # the settings' `[drift]` adwin_delta
    resolution: int = 4
    min_side: int = 30
    # Observations gathered before they enter the window as one bucket and the cuts are
    # tested, as River's `clock`: the confidence holds per test and per cut, so buckets of a
    # handful of labels (a worker flushes every 0.5 s) would multiply the false alarms by
    # how often labels arrive, not by how many there are.
    clock: int = 32
    pending: list[float] = field(default_factory=lambda: [0.0, 0.0])
    buckets: list[list[float]] = field(default_factory=list)
    baseline: float | None = None
    peak: float = 0.0
    dispersion: float = 1.0
    chunk: list[float] = field(default_factory=lambda: [0.0, 0.0])
    chunks: list[list[float]] = field(default_factory=list)
    seen: float = 0.0  # observations, counted up to the longest warm-up

    def update(self, n: float, ones: float) -> int:
        """Add `n` observations of which `ones` are 1: +1 if an increase is detected, -1 a
        decrease, 0 neither."""
        if n <= 0:
            return 0
        self._measure_dispersion(n, ones)
        self.seen = min(self.seen + n, 1.25 * WARM_UP)
        self.pending = [self.pending[0] + n, self.pending[1] + ones]
        seen = 0
        if self.pending[0] < self.clock:
            return seen
        self.buckets.append(self.pending)
        self.pending = [0.0, 0.0]
        self._compress()
        if self.seen < WARM_UP or (self.seen < 1.25 * WARM_UP
                                   and len(self.chunks) < DISPERSION_CHUNKS // 4):
            return seen
        while (cut := self._cut()) is not None:
            older = self.buckets[:cut]
            before = sum(b[1] for b in older) / sum(b[0] for b in older)
            self.buckets = self.buckets[cut:]
            seen = 1 if self.mean > before else -1
            if seen > 0 and self.baseline is None:
                self.baseline, self.peak = before, self.mean
            elif seen < 0 and self.baseline is not None and (
                    self.mean <= (self.baseline + before) / 2):
                self.baseline = None  # back at least halfway: the increase has ended
        if self.baseline is not None and self.mean <= (self.baseline + self.peak) / 2:
            self.baseline = None
        return seen

    @property
    def mean(self) -> float:
        total = sum(b[0] for b in self.buckets)
        return sum(b[1] for b in self.buckets) / total if total else 0.0

    @property
    def shift(self) -> float:
        """The error rate now minus the level before the standing increase (0: none)."""
        return 0.0 if self.baseline is None else max(self.mean - self.baseline, 0.0)

    def _compress(self) -> None:
        buckets = self.buckets
        newer = 0.0
        i = len(buckets) - 1
        while i > 0:
            merged = buckets[i][0] + buckets[i - 1][0]
            if merged * self.resolution <= newer:
                buckets[i - 1] = [merged, buckets[i][1] + buckets[i - 1][1]]
                del buckets[i]
                i = min(i, len(buckets) - 1)
                continue
            newer += buckets[i][0]
            i -= 1
        while len(buckets) > MAX_BUCKETS or (
                len(buckets) > 1 and sum(b[0] for b in buckets) - buckets[0][0] >= MAX_LENGTH):
            if len(buckets) > MAX_BUCKETS:
                buckets[1] = [buckets[0][0] + buckets[1][0], buckets[0][1] + buckets[1][1]]
            del buckets[0]

    def _cut(self) -> int | None:
        """The oldest cut at which the two parts differ significantly (rising, or either way
        while an increase stands), if any."""
        if len(self.buckets) < 2:
            return None
        counts = np.array([b[0] for b in self.buckets])
        ones = np.array([b[1] for b in self.buckets])
        total = counts.sum()
        n0 = np.cumsum(counts)[:-1]
        s0 = np.cumsum(ones)[:-1]
        n1, s1 = total - n0, ones.sum() - s0
        usable = (n0 >= self.min_side) & (n1 >= self.min_side)
        if not usable.any():
            return None
        # two-sample binomial likelihood ratio, signed: its root is close to normal even
        # for a handful of errors, where the normal approximation of the difference is not
        pooled = ones.sum() / total
        g = 2 * (_kl_sum(s0, n0, pooled) + _kl_sum(s1, n1, pooled))
        root = np.sqrt(np.maximum(g, 0.0) / self.dispersion)
        d = math.log(2 * math.log(total) / self.delta)
        # ADWIN's bar is the same for every cut, yet the tests at a cut whose shorter side
        # is short are many and nearly independent (the next test, `clock` later, sees
        # mostly new observations), those at a long one few and alike: on a stable stream
        # nearly every chance alarm is at a cut of 64-224 observations. The bar moves with
        # the root of the shorter side's length, pivoting at SCALE_PIVOT: a stable stream
        # alarms as often as at a flat bar (12 against 13 in 6 million labels at delta
        # 0.005), and a change seen only over thousands of labels (a slow ramp, a small
        # step) is seen about 4 % sooner. The argument holds for independent labels: on
        # an overdispersed stream the long cuts carry the rate's wander, so the slope
        # shrinks by the measured dispersion. (A loose delta may take the bar of a long
        # cut below zero: it stays at zero.)
        bar = np.maximum(
            d - np.log(np.minimum(n0, n1) / SCALE_PIVOT) / (2 * self.dispersion), 0.0)
        # and the difference past the second term of ADWIN's bound, which is what keeps a
        # few observations on either side from deciding: with a handful of errors the
        # ratio's normal approximation is still light in the tail
        m = 1 / np.maximum(n0 - self.min_side + 1, 1) + 1 / np.maximum(n1 - self.min_side + 1, 1)
        wide = np.abs(s0 / n0 - s1 / n1) > 2 / 3 * d * m
        # a fall matters only to end a standing increase: cutting at a chance run of good
        # predictions would leave a window whose low rate makes the next normal stretch
        # look like an increase
        rising = s1 / n1 > s0 / n0
        watched = rising if self.baseline is None else np.ones_like(rising)
        found = np.flatnonzero(usable & wide & watched & (root > np.sqrt(2 * bar)))
        return int(found[0]) + 1 if found.size else None

    def _measure_dispersion(self, n: float, ones: float) -> None:
        """Add the counts to the current chunk of DISPERSION_CHUNK observations; when it
        is full, measure again how much more the error rate moves from chunk to chunk than
        independent 0/1 events would make it.

        ADWIN's bound assumes independent observations. Real error streams are often
        overdispersed (the error rate moves with the traffic mix), and there ADWIN reports
        every wobble as a change. The measure is the median, over the last DISPERSION_CHUNKS
        chunks, of each chunk's squared difference from the one before in units of its
        binomial variance, over the median of chi-square(1): a lasting change makes one
        large difference, which the median ignores; a wobble makes many. Below
        DISPERSION_MIN (what independent errors reach by chance) it counts as 1, so on
        independent errors the test stays as sensitive as ADWIN's. The likelihood ratio
        is divided by it.
        """
        self.chunk = [self.chunk[0] + n, self.chunk[1] + ones]
        if self.chunk[0] < DISPERSION_CHUNK:
            return
        self.chunks = [*self.chunks, self.chunk][-DISPERSION_CHUNKS:]
        self.chunk = [0.0, 0.0]
        if len(self.chunks) < DISPERSION_CHUNKS // 4:
            return  # too few to tell a wobble from chance
        counts = np.array([c[0] for c in self.chunks])
        rates = np.array([c[1] for c in self.chunks]) / counts
        p = float((rates * counts).sum() / counts.sum())
        if not 0 < p < 1:
            return
        # chunks one and two apart: a wobble whose steps fall mid-chunk makes neighbours
        # share a level (their difference halves), but not chunks two apart
        measured = max(float(np.median(
            (rates[lag:] - rates[:-lag]) ** 2
            / (p * (1 - p) * (1 / counts[lag:] + 1 / counts[:-lag])))) / 0.455
            for lag in (1, 2))
        # what was measured fades out over about DISPERSION_CHUNKS chunks rather than at
        # once: the median of a stretch of calm chunks must not unwiden the test overnight
        self.dispersion = max(measured if measured > DISPERSION_MIN else 1.0,
                              1.0 + (self.dispersion - 1.0) * DISPERSION_FADE)

    def to_state(self) -> dict[str, Any]:
        return {"b": self.buckets, "base": self.baseline, "peak": self.peak,
                "disp": self.dispersion,
                "c": self.chunk, "cs": self.chunks, "n": self.seen, "p": self.pending}

    def restore(self, state: dict[str, Any] | None) -> Adwin:
        """This detector (its parameters kept) at the stored `state`."""
        if state:
            self.buckets = [[float(n), float(s)] for n, s in state["b"]][-MAX_BUCKETS:]
            self.baseline = None if state["base"] is None else float(state["base"])
            # a state from before `peak`: the increase ends once back at its baseline
            self.peak = float(state.get("peak", self.baseline or 0.0))
            self.dispersion = max(float(state["disp"]), 1.0)
            self.chunk = [float(v) for v in state["c"]]
            self.chunks = [[float(n), float(s)] for n, s in state["cs"]][-DISPERSION_CHUNKS:]
            self.seen = min(float(state["n"]), 1.25 * WARM_UP)
            self.pending = [float(v) for v in state.get("p", (0.0, 0.0))]
        return self


def _kl_sum(ones: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """n * KL(ones / n || p) for Bernoulli rates, elementwise (0 log 0 = 0)."""
    q = ones / n
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, q * np.log(q / p), 0.0) if p > 0 else np.zeros_like(q)
        b = np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p)), 0.0) if p < 1 else (
            np.zeros_like(q))
    out: np.ndarray = n * (a + b)
    return out


@dataclass
class MeanShift:
    """Two-sided CUSUM (Page, 1954) of a numeric stream (a model's scores, one feature)
    against the model version's reference: its mean and standard deviation.

    Why against the reference and not, as ADWIN does, the stream's own past: the reference
    is what the model was validated on, so a slow daily cycle is not a change, and a
    reference known in advance is the most any detector can be told (CUSUM is the optimal
    test for a shift of a given size from a known level, Lorden 1971). Its cost is the
    smallest shift it looks for, `shift_sd` reference deviations: it accumulates each
    value's distance from the reference mean, less half that, and reports a shift when the
    sum passes `threshold`. A shift of d sd is then seen after about
    (threshold + 1.2) / (d - shift_sd / 2) values; a stream at its reference, or moving
    less than shift_sd / 2, reaches the threshold about once in
    exp(shift_sd * threshold) / shift_sd**2 values, astronomically rarely at the defaults
    (the settings' `[drift]` shift_sd and shift_threshold).

    Values arrive as sums: the stage reads each partial's new values of a feature as the
    difference of two exact sums, so a batch adds its count and total at once.

    Once a shift is seen it stands (`shift`, its size in reference sds: the mean distance
    of the values since the sum last left zero) until a second CUSUM, fed by how much
    closer than half the detected shift the values are, passes the threshold too: the
    values are back near the reference. A shift the other way ends it first.

    >>> detector = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0)
    >>> [detector.update(100, 0.0) for _ in range(50)].count(0)  # at the reference
    50
    >>> [detector.update(10, 10.0) for _ in range(5)]  # then a shift of 1 sd
    [0, 0, 0, 0, 1]
    >>> round(detector.shift, 2)
    1.0
    """

    shift_sd: float
    threshold: float
    mean: float
    sd: float
    high: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # sum, n, z since 0
    low: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    sign: int = 0  # the standing shift's direction; 0: none
    since: list[float] = field(default_factory=lambda: [0.0, 0.0])  # n and z since it began
    back: float = 0.0  # the evidence that it has ended

    def update(self, n: float, total: float) -> int:
        """Add `n` values summing to `total`: +1 if a rise is seen, -1 a fall, 0 neither
        (the end of a standing shift is not reported, `shift` falls to 0)."""
        if n <= 0 or not math.isfinite(total) or self.sd <= 0:
            return 0
        z = (total - n * self.mean) / self.sd
        allowance = n * self.shift_sd / 2
        if self.sign:
            self.since = [self.since[0] + n, self.since[1] + z]
            self.back = max(0.0, self.back + n * self.shift / 2 - self.sign * z)
            if self.back <= self.threshold:
                return 0
            self.sign, self.back, self.since = 0, 0.0, [0.0, 0.0]
        seen = 0
        for side, sign in ((self.high, 1), (self.low, -1)):
            step = sign * z - allowance
            side[:] = [side[0] + step, side[1] + n, side[2] + z] if side[0] + step > 0 else (
                [0.0, 0.0, 0.0])
            if side[0] > self.threshold:
                seen, self.since = sign, [side[1], side[2]]
        if seen:
            self.sign, self.back = seen, 0.0
            self.high, self.low = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        return seen

    @property
    def shift(self) -> float:
        """How far the values stand from the reference mean, in its sds (0: no shift)."""
        if not self.sign or not self.since[0]:
            return 0.0
        return max(self.sign * self.since[1] / self.since[0], 0.0)

    def to_state(self) -> dict[str, Any]:
        return {"ref": [self.mean, self.sd], "hi": self.high, "lo": self.low,
                "sign": self.sign, "since": self.since, "back": self.back}

    def restore(self, state: dict[str, Any] | None) -> MeanShift:
        """This detector (its parameters kept) at the stored `state`, unless that was
        against another reference."""
        if state and state["ref"] == [self.mean, self.sd]:
            self.high = [float(v) for v in state["hi"]]
            self.low = [float(v) for v in state["lo"]]
            self.sign, self.back = int(state["sign"]), float(state["back"])
            self.since = [float(v) for v in state["since"]]
        return self
