"""Every per-window state stays bounded by construction, whatever valid input arrives.

The bound checked: a model window's state, encoded as the shards encode it (the changelog value
`{"s", "o", "wm"}` and the partial message `{"t": "p", ...}`, both orjson), stays under
STATE_BOUND, far below Kafka's default 1 MiB message limit. Then the caps themselves: classes
per model window, the collapsing LogSketch, the coarsening feature sketch.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_fscore_support

from agents.aggregators.drift import (
    MAX_FEATURE_NAME,
    MAX_FEATURES,
    VALUE_SKETCH_MAX_BUCKETS,
    Features,
    ValueSketch,
    psi,
)
from agents.aggregators.quality import MAX_CLASS_TEXT, MAX_CLASSES, Quality, class_key
from agents.aggregators.sketch import LOG_SKETCH_MAX_BUCKETS, LogSketch
from agents.aggregators.throughput import Throughput
from agents.aggregators.window import WindowState

STATE_BOUND = 128 * 1024  # bytes per model window, in every encoded form
PREDICTION_FAMILIES = ("traffic", "quality", "scores", "features")  # what a predictions shard
# writes for a model window; the snapshot stage adds lifecycle, telemetry shards usage


def _every_magnitude(rng: np.random.Generator, n: int, signed: bool = False) -> np.ndarray:
    values = 10.0 ** rng.uniform(-300, 300, n)
    return values * rng.choice([-1.0, 1.0], n) if signed else values


def _worst_window(seed: int, families: tuple[str, ...] | None = None) -> WindowState:
    """The largest model window state valid input can make (and then some: values past the
    input limits, names and classes past every cap)."""
    rng = np.random.default_rng(seed)
    state = WindowState()
    n = 100_000
    want = families or ("traffic", "quality", "scores", "features", "usage", "lifecycle",
                        "throughput", "feedback")
    if "traffic" in want:
        state.family("traffic").update(rng.random(n) < 0.5, _every_magnitude(rng, n),
                                       rng.random(n))
    if "quality" in want:
        quality = state.family("quality")
        # the recommender of issue 11: every prediction a new item, every label another
        quality.update([f"item-{seed}-{i}" for i in range(n)],
                       [f"item-{seed}-{i + 1}" for i in range(n)], _every_magnitude(rng, n),
                       False)
        long = [f"{'x' * 5000}{i}" for i in range(200)]
        quality.update([*long, 1e20, 2**70, -1e300, 1.5, True, 0],
                       [*long[::-1], 1e20, 2**70, 1e300, 2.5, 1, False], np.zeros(206), False)
        quality.update(rng.normal(size=1000).tolist(), rng.normal(size=1000).tolist(),
                       np.zeros(1000), True)  # a regressor's pairs too
    if "scores" in want:
        state.family("scores").update(rng.random(n))
    if "features" in want:
        names = [f"feature-{j:03d}-{'long' * (j % 50)}" for j in range(3 * MAX_FEATURES)]
        state.family("features").update({
            name: _every_magnitude(rng, 6000, signed=True) for name in names})
    if "usage" in want:
        m = 50_000
        state.family("usage").update(rng.uniform(0, 100, m), rng.uniform(1e-3, 86400, m),
                                     rng.random(m), rng.uniform(0, 1e6, m),
                                     rng.uniform(0, 100, m), 0.1, np.ones(m, bool))
    if "lifecycle" in want:
        lifecycle = state.family("lifecycle")
        for duration in _every_magnitude(rng, 3000):
            lifecycle.add("training_finished", None, float(duration), 3.5)
        lifecycle.add("deployed", "new_model", None)
    if "throughput" in want:
        state.family("throughput").update(rng.uniform(0, 1e12, 100),
                                          rng.uniform(0, 1e15, 100), rng.uniform(0, 86400, 100),
                                          rng.random(100) < 0.5)
    if "feedback" in want:
        state.family("feedback").update(rng.integers(1, 6, 100).astype(float),
                                        rng.choice([-1.0, 1.0], 100), rng.random(100) < 0.5)
    return state


def _encodings(state: WindowState) -> dict[str, bytes]:
    """The window's state as agents.shard writes it: changelog value (Faust's json
    serializer is orjson) and partial message."""
    encoded = state.to_state()
    offsets = {f"factory.{topic}": 2**53 for topic in ("predictions", "labels")}
    return {
        "changelog": orjson.dumps({"s": encoded, "o": offsets, "wm": 1.7e9},
                                  option=orjson.OPT_NON_STR_KEYS),
        "partial": orjson.dumps({"t": "p", "shard": "predictions:1023",
                                 "key": "m:" + "m" * 512 + "|86400|1700000000",
                                 "s": encoded}),
    }


@pytest.fixture(scope="module")
def worst() -> WindowState:
    return _worst_window(1)


def test_the_worst_model_window_encodes_far_below_the_message_limit(worst: WindowState) -> None:
    heavy = worst
    for _ in range(20):  # 2**20 such windows merged: every count ~1e6 times larger (~1e11
        heavy = heavy.merge(heavy)  # events), so every number is written with more digits
    for state in (worst, heavy):
        sizes = {form: len(value) for form, value in _encodings(state).items()}
        per_family = {name: len(orjson.dumps(agg.to_state()))
                      for name, agg in state.families.items()}
        print(f"\nencoded {sizes}; per family {per_family}")
        assert max(sizes.values()) < STATE_BOUND, per_family
        back = WindowState.from_state(orjson.loads(orjson.dumps(state.to_state())))
        assert back.to_state() == state.to_state()
        assert back.value() == state.value()
    values = heavy.value()
    assert values is not None
    assert values["labelled"] == 2**20 * (100_000 + 206 + 1000)
    assert values["predictions"] == 2**20 * 100_000


def test_a_predictions_shard_partial_stays_bounded_merged_over_shards() -> None:
    """Four shards' worst partials (different classes and values each) merged, as the snapshot
    stage and the drift reference merge them."""
    merged = WindowState()
    for seed in range(4):
        part = _worst_window(10 + seed, PREDICTION_FAMILIES)
        assert max(map(len, _encodings(part).values())) < STATE_BOUND
        merged = merged.merge(part)
    assert max(map(len, _encodings(merged).values())) < STATE_BOUND
    quality = merged.families["quality"]
    assert len(quality.classes) == MAX_CLASSES
    # of each shard's pairs, 1e20 and 2**70 match; -1e300/1e300, 1.5/2.5, true/1 and 0/false
    # do not, nor does any item or long string
    assert quality.correct == 4 * 2
    features = merged.families["features"]
    assert len(features.sketches) == MAX_FEATURES
    assert all(len(name) <= MAX_FEATURE_NAME for name in features.sketches)
    assert all(len(s.buckets) <= VALUE_SKETCH_MAX_BUCKETS for s in features.sketches.values())
    assert all(s.count == 4 * 6000 for s in features.sketches.values())


# -- class keys and the class cap ------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(),
                 st.text(max_size=300), st.booleans()))
def test_class_keys_never_fail_and_are_short(value: Any) -> None:
    key = class_key(value)
    assert len(key) <= MAX_CLASS_TEXT
    orjson.dumps({key: [1, 2, 3]})
    quality = Quality()
    quality.update([value], [value], np.zeros(1), False)
    assert quality.value() is not None
    assert quality.correct == 1
    orjson.dumps(quality.to_state())


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_integral_floats_count_as_their_int_within_2_53(i: int) -> None:
    assert class_key(float(i)) == class_key(i) == str(i)


def test_integral_floats_past_2_53_keep_their_float_text() -> None:
    assert class_key(1e20) == "1e+20"
    assert class_key(2**70) == str(2**70)
    assert class_key(1e300) != class_key(-1e300)
    assert class_key("1") != class_key(1) != class_key(True)


def _pairs(rng: random.Random, n: int, classes: int) -> tuple[list[Any], list[Any]]:
    labels = [rng.randrange(classes) for _ in range(n)]
    predicted = [y if rng.random() < 0.6 else rng.randrange(classes) for y in labels]
    return [f"c{p}" for p in predicted], [f"c{y}" for y in labels]


def test_classes_past_the_cap_count_as_other_and_kept_classes_stay_exact() -> None:
    predicted, labels = _pairs(random.Random(4), 20_000, 3 * MAX_CLASSES)
    quality = Quality()
    for i in range(0, len(labels), 777):
        quality.update(predicted[i:i + 777], labels[i:i + 777], np.zeros(len(labels[i:i + 777])),
                       False)
    got = quality.value()
    assert got is not None
    assert len(quality.classes) == MAX_CLASSES
    assert any(quality.other)
    assert got["accuracy"] == pytest.approx(np.mean([p == y for p, y in zip(predicted, labels,
                                                                             strict=True)]))
    kept = sorted(quality.classes)
    assert len({orjson.loads(k) for k in kept}) == MAX_CLASSES
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=[orjson.loads(k) for k in kept], zero_division=0)
    for i, key in enumerate(kept):
        t, fp, fn = quality.classes[key]
        assert (t / (t + fp) if t + fp else 0.0) == pytest.approx(precision[i])
        assert (t / (t + fn) if t + fn else 0.0) == pytest.approx(recall[i])
        assert (2 * t / (2 * t + fp + fn) if t else 0.0) == pytest.approx(f1[i])
    tp = sum(c[0] for c in quality.classes.values()) + quality.other[0]
    fp = sum(c[1] for c in quality.classes.values()) + quality.other[1]
    fn = sum(c[2] for c in quality.classes.values()) + quality.other[2]
    assert tp == quality.correct
    assert tp + fp == tp + fn == len(labels)
    assert 0.0 < got["precision"] < 1.0


def test_under_the_cap_nothing_changes() -> None:
    predicted, labels = _pairs(random.Random(5), 3000, MAX_CLASSES)
    quality = Quality()
    quality.update(predicted, labels, np.zeros(len(labels)), False)
    got = quality.value()
    assert got is not None
    assert not any(quality.other)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="macro",
                                                               zero_division=0)
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((precision, recall, f1))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 6), st.integers(MAX_CLASSES // 2, 4 * MAX_CLASSES))
def test_capped_merges_are_exact_in_any_order_and_grouping(seed: int, parts: int,
                                                           classes: int) -> None:
    rng = random.Random(seed)
    predicted, labels = _pairs(rng, 2000, classes)
    whole = Quality()
    whole.update(predicted, labels, np.zeros(len(labels)), False)
    cuts = sorted(rng.sample(range(1, len(labels)), parts - 1)) if parts > 1 else []
    pieces = []
    for lo, hi in zip([0, *cuts], [*cuts, len(labels)], strict=True):
        piece = Quality()
        piece.update(predicted[lo:hi], labels[lo:hi], np.zeros(hi - lo), False)
        pieces.append(piece)
    rng.shuffle(pieces)
    while len(pieces) > 1:  # merge random neighbours: any grouping, any order
        i = rng.randrange(len(pieces) - 1)
        pieces[i:i + 2] = [pieces[i].merge(pieces[i + 1])]
    assert pieces[0].to_state() == whole.to_state()
    assert len(whole.classes) <= MAX_CLASSES


def test_a_confusion_map_written_before_the_cap_still_loads() -> None:
    legacy = {"n": 4, "ok": 2, "d": LogSketch().to_state(),
              "p": {'"a"\x1f"a"': 2, '"a"\x1f"b"': 1, '"b"\x1f"c"': 1}}
    quality = Quality.from_state(legacy)
    assert quality.classes == {'"a"': [2, 1, 0], '"b"': [0, 1, 1], '"c"': [0, 0, 1]}
    fresh = Quality()
    fresh.update(["a", "a", "a", "b"], ["a", "a", "b", "c"], np.zeros(4), False)
    assert (quality.classes, quality.correct) == (fresh.classes, fresh.correct)
    got, want = quality.value(), fresh.value()
    assert got is not None
    assert want is not None
    for name in ("accuracy", "precision", "recall", "f1"):
        assert got[name] == want[name]


# -- the collapsing LogSketch ----------------------------------------------------------------

def test_log_sketch_never_holds_more_than_its_bucket_count() -> None:
    sketch = LogSketch()
    sketch.update(_every_magnitude(np.random.default_rng(2), 200_000))
    assert len(sketch.buckets) == LOG_SKETCH_MAX_BUCKETS
    assert sketch.count == 200_000 == sum(sketch.buckets.values())
    assert len(orjson.dumps(sketch.to_state())) < 16 * 1024


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.floats(min_value=1e-300, max_value=1e300)),
                min_size=1, max_size=300),
       st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]),
       st.integers(1, 40))
def test_collapsed_sketch_keeps_the_top_within_alpha_and_overestimates_the_bottom(
        values: list[float], q: float, max_buckets: int) -> None:
    sketch = LogSketch(max_buckets=max_buckets)
    sketch.update(np.array(values))
    assert len(sketch.buckets) <= max_buckets
    assert sketch.count == len(values) == sketch.zeros + sum(sketch.buckets.values())
    exact = float(np.quantile(np.array(values), q, method="lower"))
    got = sketch.quantile(q)
    assert got is not None
    if exact == 0:
        assert got == 0
        return
    gamma = (1 + sketch.alpha) / (1 - sketch.alpha)
    collapsed_top = gamma ** min(sketch.buckets)  # the lowest bucket holds every value <= it
    if exact > collapsed_top * (1 + 1e-12):
        assert math.isclose(got, exact, rel_tol=sketch.alpha * (1 + 1e-9))
    else:  # in the collapsed bucket: reported as its value, never below the truth by > alpha
        assert got >= exact * (1 - sketch.alpha) * (1 - 1e-9)


def test_collapse_leaves_the_top_buckets_as_an_unbounded_sketch_has_them() -> None:
    values = _every_magnitude(np.random.default_rng(3), 50_000)
    bounded, unbounded = LogSketch(max_buckets=100), LogSketch(max_buckets=10**9)
    bounded.update(values)
    unbounded.update(values)
    top = sorted(unbounded.buckets)[-99:]
    assert {k: bounded.buckets[k] for k in top} == {k: unbounded.buckets[k] for k in top}
    for q in (0.999, 0.9999, 1.0):
        assert bounded.quantile(q) == unbounded.quantile(q)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60))
def test_collapsed_sketches_merge_exactly_in_any_order(seed: int, max_buckets: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [10.0 ** rng.uniform(-20, 20, int(rng.integers(0, 200))) for _ in range(3)]
    sketches = []
    for part in parts:
        sketch = LogSketch(max_buckets=max_buckets)
        sketch.update(part)
        sketches.append(sketch)
    whole = LogSketch(max_buckets=max_buckets)
    whole.update(np.concatenate(parts))
    a, b, c = sketches
    for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b)):
        assert merged.to_state() == whole.to_state()
        assert merged.count == whole.count


# -- the coarsening feature sketch -----------------------------------------------------------

def test_feature_sketch_is_bounded_over_every_magnitude_and_keeps_order() -> None:
    rng = np.random.default_rng(4)
    values = _every_magnitude(rng, 50_000, signed=True)
    sketch = ValueSketch()
    sketch.update(values)
    assert len(sketch.buckets) <= VALUE_SKETCH_MAX_BUCKETS
    assert sketch.count == values.size
    keys = sorted(sketch.buckets)
    assert keys[0] < 0 < keys[-1]
    back = ValueSketch.from_state(orjson.loads(orjson.dumps(sketch.to_state())))
    assert back.buckets == sketch.buckets
    assert back.level == sketch.level > 0


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.integers(5, 80), st.floats(1, 200))
def test_feature_sketches_merge_exactly_in_any_order(seed: int, max_buckets: int,
                                                     decades: float) -> None:
    rng = np.random.default_rng(seed)
    parts = [rng.choice([-1.0, 0.0, 1.0], n) * 10.0 ** rng.uniform(-decades / 2, decades / 2, n)
             for n in rng.integers(0, 300, 3)]
    sketches = []
    for part in parts:
        sketch = ValueSketch(max_buckets)
        sketch.update(part)
        sketches.append(sketch)
    whole = ValueSketch(max_buckets)
    whole.update(np.concatenate(parts))
    a, b, c = sketches
    for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b)):
        assert merged.to_state()[:3] == whole.to_state()[:3]
        # the sums (for the mean-shift detector, never published) to the doubles' rounding
        assert merged.moments == pytest.approx(whole.moments, rel=1e-12, abs=1e-9)
    assert len(whole.buckets) <= max_buckets


def test_psi_compares_sketches_at_different_levels() -> None:
    rng = np.random.default_rng(5)
    narrow, wide, shifted = ValueSketch(), ValueSketch(), ValueSketch()
    narrow.update(rng.normal(50, 5, 5000))  # level 0
    spread = rng.choice([-1.0, 1.0], 500) * 10.0 ** rng.uniform(-3, 3, 500)
    wide.update(np.concatenate([rng.normal(50, 5, 20_000), spread]))  # coarsened
    shifted.update(rng.normal(150, 5, 5000))
    assert narrow.level == 0 < wide.level
    same = psi(wide, narrow)
    assert same is not None
    assert same < 0.1
    moved = psi(wide, shifted)
    assert moved is not None
    assert moved > 0.25


def test_long_feature_names_are_shortened_distinctly() -> None:
    features = Features()
    long_a, long_b = "a" * 10_000 + "1", "a" * 10_000 + "2"
    features.update({long_a: np.ones(3), long_b: np.ones(2), "short": np.ones(1)})
    names = sorted(features.sketches)
    assert len(names) == 3
    assert all(len(name) <= MAX_FEATURE_NAME for name in names)
    assert "short" in names
    assert {features.sketches[n].count for n in names} == {3.0, 2.0, 1.0}


def test_sums_past_64_bits_still_encode() -> None:
    throughput = Throughput()
    throughput.records = 2**70  # no valid input gets here; a sum must still never crash
    back = Throughput.from_state(orjson.loads(orjson.dumps(throughput.to_state())))
    assert back.records == pytest.approx(2**70)
