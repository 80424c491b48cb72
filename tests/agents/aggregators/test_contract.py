"""The contract every aggregator passes: round trip, associative merge, pure update, no data."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from agents.aggregators.feedback import Feedback
from agents.aggregators.lifecycle import Lifecycle
from agents.aggregators.quality import Quality
from agents.aggregators.throughput import Throughput
from agents.aggregators.traffic import Traffic
from agents.aggregators.usage import Usage
from agents.aggregators.window import WindowState

RNG = np.random.default_rng(7)


def _traffic(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    latency = rng.lognormal(3, 1, n)
    latency[rng.random(n) < 0.1] = np.nan
    return rng.random(n) < 0.1, latency, np.where(rng.random(n) < 0.5, rng.random(n), np.nan)


def _quality(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    return (rng.integers(0, 3, n).tolist(), rng.integers(0, 3, n).tolist(),
            rng.exponential(60, n), False)


def _regression(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    return rng.normal(size=n).tolist(), rng.normal(size=n).tolist(), rng.exponential(9, n), True


def _usage(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    return (rng.uniform(0, 100, n), rng.uniform(1, 10, n), rng.random(n), rng.uniform(0, 700, n),
            rng.uniform(0, 4, n), 0.12, rng.random(n) < 0.8)


def _throughput(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    return (rng.integers(0, 10_000, n).astype(float), rng.integers(0, 10**6, n).astype(float),
            rng.uniform(0.1, 5, n), rng.random(n) < 0.05)


def _feedback(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    rating = np.where(rng.random(n) < 0.5, rng.integers(1, 6, n), np.nan)
    thumbs = np.where(rng.random(n) < 0.5, rng.choice([-1.0, 1.0], n), np.nan)
    return rating, thumbs, rng.random(n) < 0.3


def _lifecycle(seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    kinds = ["training_finished", "deployed", "rolled_back", "training_failed"]
    return ([kinds[int(k)] for k in rng.integers(0, 4, 6)],
            [["new_model", "retrain", None][int(c)] for c in rng.integers(0, 3, 6)],
            rng.uniform(10, 5000, 6).tolist())


def _apply_lifecycle(agg: Lifecycle, kinds: list[str], changes: list[Any],
                     durations: list[float]) -> None:
    for kind, change, duration in zip(kinds, changes, durations, strict=True):
        agg.add(kind, change, duration)


FAMILIES: dict[str, tuple[type[Any], Callable[[int], tuple[Any, ...]], Callable[..., None]]] = {
    "traffic": (Traffic, _traffic, lambda a, *b: a.update(*b)),
    "quality": (Quality, _quality, lambda a, *b: a.update(*b)),
    "regression": (Quality, _regression, lambda a, *b: a.update(*b)),
    "usage": (Usage, _usage, lambda a, *b: a.update(*b)),
    "throughput": (Throughput, _throughput, lambda a, *b: a.update(*b)),
    "feedback": (Feedback, _feedback, lambda a, *b: a.update(*b)),
    "lifecycle": (Lifecycle, _lifecycle, _apply_lifecycle),
}


def _filled(name: str, seed: int) -> Any:
    kind, data, apply = FAMILIES[name]
    agg = kind()
    apply(agg, *data(seed))
    return agg


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return bool(a == b)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_empty_aggregator_reports_no_data(name: str) -> None:
    assert FAMILIES[name][0]().value() is None


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("seed", range(5))
def test_state_round_trips_through_the_changelog_form(name: str, seed: int) -> None:
    agg = _filled(name, seed)
    state = orjson.loads(orjson.dumps(agg.to_state()))
    back = type(agg).from_state(state)
    assert _close(back.value(), agg.value())
    assert _close(back.to_state(), agg.to_state())
    assert agg.value() is not None


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("seed", range(5))
def test_merge_is_associative_and_matches_one_big_update(name: str, seed: int) -> None:
    a, b, c = (_filled(name, seed * 3 + i) for i in range(3))
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    assert _close(left.value(), right.value())
    whole = FAMILIES[name][0]()
    for i in range(3):
        FAMILIES[name][2](whole, *FAMILIES[name][1](seed * 3 + i))
    assert _close(left.value(), whole.value())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_merge_with_empty_is_identity_and_leaves_operands_alone(name: str) -> None:
    a = _filled(name, 11)
    before = copy.deepcopy(a.to_state())
    merged = a.merge(type(a)())
    assert _close(merged.value(), a.value())
    assert a.to_state() == before


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_update_leaves_its_input_alone(name: str) -> None:
    kind, data, apply = FAMILIES[name]
    args = data(3)
    snapshot = copy.deepcopy(args)
    apply(kind(), *args)
    for got, want in zip(args, snapshot, strict=True):
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want


def test_window_state_round_trip_and_merge() -> None:
    a, b = WindowState(), WindowState()
    FAMILIES["traffic"][2](a.family("traffic"), *_traffic(1))
    FAMILIES["quality"][2](b.family("quality"), *_quality(2))
    FAMILIES["traffic"][2](b.family("traffic"), *_traffic(3))
    merged = a.merge(b)
    back = WindowState.from_state(orjson.loads(orjson.dumps(merged.to_state())))
    assert _close(back.value(), merged.value())
    assert WindowState().value() is None
    assert len(orjson.dumps(merged.to_state())) < 4096
