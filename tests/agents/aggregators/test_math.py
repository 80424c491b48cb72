"""Each family's numbers against an independent computation (numpy, scikit-learn)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score

from agents.aggregators.drift import MAX_FEATURES, Features, Scores
from agents.aggregators.quality import Quality
from agents.aggregators.sketch import LinearHistogram, LogSketch
from agents.aggregators.throughput import Throughput
from agents.aggregators.usage import Usage


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), min_size=1,
                max_size=300), st.sampled_from([0.0, 0.01, 0.5, 0.95, 0.99, 1.0]))
def test_log_sketch_quantile_is_within_one_percent(values: list[float], q: float) -> None:
    sketch = LogSketch()
    sketch.update(np.array(values))
    exact = float(np.quantile(np.array(values), q, method="lower"))
    got = sketch.quantile(q)
    assert got is not None
    assert math.isclose(got, exact, rel_tol=0.01, abs_tol=1e-300) or (exact == 0 and got == 0)


def test_log_sketch_stays_small_over_six_decades() -> None:
    sketch = LogSketch()
    sketch.update(np.random.default_rng(1).uniform(0.01, 10_000, 100_000))
    assert len(sketch.buckets) < 800


def test_linear_histogram_weighted_quantile() -> None:
    hist = LinearHistogram()
    hist.update(np.array([0.1, 0.9]), np.array([95.0, 5.0]))
    assert hist.quantile(0.95) == pytest.approx(0.1)
    assert hist.quantile(0.96) == pytest.approx(0.9)


CASES: list[tuple[list[Any], list[Any], str]] = [
    ([1, 0, 1, 1, 0, 0, 1], [1, 1, 0, 1, 0, 1, 1], "binary"),
    ([True, False, True], [True, True, True], "binary"),
    ([0, 0, 0], [0, 0, 0], "binary"),
    (["cat", "dog", "bird", "dog", "cat"], ["cat", "cat", "bird", "dog", "bird"], "macro"),
    ([0, 1, 2, 2, 1, 0, 3], [0, 2, 2, 1, 1, 0, 0], "macro"),
]


@pytest.mark.parametrize(("predicted", "labels", "average"), CASES)
def test_precision_recall_f1_match_scikit_learn(predicted: list[Any], labels: list[Any],
                                                average: str) -> None:
    quality = Quality()
    half = len(labels) // 2  # two updates, to exercise accumulation
    quality.update(predicted[:half], labels[:half], np.zeros(half), False)
    quality.update(predicted[half:], labels[half:], np.zeros(len(labels) - half), False)
    got = quality.value()
    assert got is not None
    kwargs: dict[str, Any] = {"zero_division": 0}
    kwargs.update({"average": "binary", "pos_label": True if isinstance(labels[0], bool) else 1}
                  if average == "binary" else {"average": "macro"})
    assert got["precision"] == pytest.approx(precision_score(labels, predicted, **kwargs))
    assert got["recall"] == pytest.approx(recall_score(labels, predicted, **kwargs))
    assert got["f1"] == pytest.approx(f1_score(labels, predicted, **kwargs))
    accuracy = float(np.mean([p == y for p, y in zip(predicted, labels, strict=True)]))
    assert got["accuracy"] == pytest.approx(accuracy)
    assert got["error_rate"] == pytest.approx(1 - accuracy)


def test_regressor_gets_mae_and_rmse() -> None:
    rng = np.random.default_rng(5)
    y, p = rng.normal(size=100), rng.normal(size=100)
    quality = Quality()
    quality.update(p.tolist(), y.tolist(), np.full(100, 30.0), True)
    got = quality.value()
    assert got is not None
    assert got["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert "precision" not in got
    assert got["accuracy"] is None
    assert got["label_delay_p50_s"] == pytest.approx(30.0, rel=0.01)


def test_usage_weights_by_interval_and_prices_compute() -> None:
    usage = Usage()
    util = np.array([100.0, 0.0, 50.0])
    interval = np.array([10.0, 30.0, 20.0])
    mem = np.array([0.5, np.nan, 0.25])
    power = np.array([700.0, 100.0, np.nan])
    hourly = np.array([3.6, 3.6, np.nan])
    usage.update(util, interval, mem, power, hourly, 0.10, np.array([True, True, True]))
    got = usage.value()
    assert got is not None
    assert got["gpu_util_avg"] == pytest.approx((1.0 * 10 + 0 + 0.5 * 20) / 60)
    assert got["idle_share"] == pytest.approx(30 / 60)
    assert got["mem_util_avg"] == pytest.approx(0.375)
    assert got["energy_j"] == pytest.approx(700 * 10 + 100 * 30)
    energy_usd = (700 * 10 + 100 * 30) / 3.6e6 * 0.10
    assert usage.compute_usd == pytest.approx(40 / 3600 * 3.6 + energy_usd)


def test_throughput_is_records_over_busy_seconds() -> None:
    tp = Throughput()
    tp.update(np.array([100.0, 300.0]), np.array([1e3, np.nan]), np.array([1.0, 3.0]),
              np.array([False, True]))
    got = tp.value()
    assert got is not None
    assert got["records_per_s"] == pytest.approx(100.0)
    assert got["bytes_per_s"] == pytest.approx(250.0)
    assert got["pipeline_error_rate"] == 0.5


def test_feature_sketches_are_capped_the_same_whichever_shard_saw_which_name() -> None:
    names = [f"f{i:03d}" for i in range(3 * MAX_FEATURES)]
    left, right, whole = Features(), Features(), Features()
    rng = np.random.default_rng(3)
    for i, name in enumerate(names):
        values = rng.normal(size=20)
        (left if i % 2 else right).update({name: values})
        whole.update({name: values})
    merged = left.merge(right)
    assert sorted(merged.sketches) == names[:MAX_FEATURES] == sorted(whole.sketches)
    assert merged.to_state() == whole.to_state()


def test_score_mean_is_the_histograms_mean() -> None:
    scores = Scores()
    assert scores.value() is None
    values = np.random.default_rng(3).beta(2, 5, 10_000)
    scores.update(np.append(values, np.nan))
    out = scores.value()
    assert out is not None
    assert out["score_mean"] == pytest.approx(values.mean(), abs=0.005)
