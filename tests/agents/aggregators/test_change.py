"""The change detectors: Page-Hinkley, the per-label ADWIN against River's, and the per-value
CUSUM against its reference."""

from __future__ import annotations

import doctest

import numpy as np
import orjson
import pytest

from agents.aggregators import change
from agents.aggregators.change import MAX_BUCKETS, Adwin, MeanShift, PageHinkley
from core.settings import Drift


def test_the_docstring_examples_run() -> None:
    assert doctest.testmod(change).failed == 0


def test_page_hinkley_stays_quiet_on_noise_and_catches_a_step() -> None:
    rng = np.random.default_rng(1)
    detector = PageHinkley(0.01, 0.15, 5)
    assert not any(detector.update(x) for x in rng.normal(0.1, 0.02, 500).clip(0, 1))
    alarms = [i for i, x in enumerate([*rng.normal(0.1, 0.02, 20), *rng.normal(0.4, 0.02, 10)])
              if detector.update(float(x))]
    assert alarms
    assert 20 <= alarms[0] <= 22


@pytest.mark.parametrize("n", [0, 3])
def test_page_hinkley_state_round_trips_and_keeps_the_parameters(n: int) -> None:
    detector = PageHinkley(delta=0.02, threshold=0.3, min_points=5)
    for x in [0.1] * n:
        detector.update(x)
    back = PageHinkley(delta=0.02, threshold=0.3, min_points=5).restore(
        orjson.loads(orjson.dumps(detector.to_state())))
    assert back == detector


def _errors(rates: list[tuple[int, float]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(n) < p).astype(float) for n, p in rates])


def _first_increase(values: np.ndarray, chunk: int = 50) -> int | None:
    detector = Adwin(0.002)
    for i in range(0, values.size, chunk):
        if detector.update(chunk, float(values[i:i + chunk].sum())) > 0:
            return i + chunk
    return None


@pytest.mark.parametrize("seed", range(3))
def test_adwin_is_quiet_on_a_stable_stream_and_sees_steps_up_and_down(seed: int) -> None:
    assert _first_increase(_errors([(200_000, 0.08)], seed)) is None
    found = _first_increase(_errors([(20_000, 0.08), (5_000, 0.25)], seed))
    assert found is not None
    assert 20_000 < found <= 20_400
    detector = Adwin(0.002)
    values = _errors([(20_000, 0.08), (5_000, 0.25), (20_000, 0.08)], seed)
    seen = []
    for i in range(0, values.size, 100):
        if (move := detector.update(100, float(values[i:i + 100].sum()))) != 0:
            seen.append((move, round(detector.shift, 2)))
    assert seen[0][0] == 1
    assert seen[0][1] > 0.05
    assert seen[-1] == (-1, 0.0)  # the increase ended: nothing stands
    assert detector.baseline is None


def _rivers_delay(values: np.ndarray, change: int) -> int:
    """Labels after `change` to River's ADWIN's first alarm there (10**9: none)."""
    drift = pytest.importorskip("river.drift")
    river = drift.ADWIN()
    for i, x in enumerate(values.tolist()):
        river.update(x)
        if river.drift_detected and i >= change:
            return i - change
    return 10**9


def test_adwin_needs_no_more_labels_than_rivers() -> None:
    ours, theirs = [], []
    for seed in range(5):
        values = _errors([(20_000, 0.08), (20_000, 0.11)], seed)
        ours.append((_first_increase(values) or 10**9) - 20_000)
        theirs.append(_rivers_delay(values, 20_000))
    assert np.median(ours) <= np.median(theirs)


def test_adwin_widens_its_test_on_an_overdispersed_stream() -> None:
    rng = np.random.default_rng(7)
    wobble = np.repeat(rng.uniform(0.05, 0.15, 41), 500)
    values = (rng.random(wobble.size) < wobble).astype(float)
    detector = Adwin(0.002)
    for i in range(0, values.size, 50):
        detector.update(50, float(values[i:i + 50].sum()))
    assert detector.dispersion > 2.5
    steady = Adwin(0.002)
    for _ in range(0, 20_000, 50):
        steady.update(50, float((rng.random(50) < 0.1).sum()))
    assert steady.dispersion == 1.0


def test_adwin_state_is_bounded_and_round_trips_through_json() -> None:
    detector = Adwin(delta=0.01)
    rng = np.random.default_rng(8)
    for _ in range(20_000):
        n = int(rng.integers(1, 400))
        detector.update(n, float((rng.random(n) < 0.1).sum()))
    assert len(detector.buckets) <= 80 < MAX_BUCKETS
    assert len(orjson.dumps(detector.to_state())) < 8 * 1024
    back = Adwin(delta=0.01).restore(orjson.loads(orjson.dumps(detector.to_state())))
    assert back == detector
    assert back.update(100, 10) == detector.update(100, 10)


def _feed(detector: MeanShift, values: np.ndarray, batch: int) -> list[int]:
    """Feed `values` in batches as the stage does (count and sum); positions of alarms."""
    alarms = []
    for lo in range(0, values.size, batch):
        chunk = values[lo:lo + batch]
        if detector.update(chunk.size, float(chunk.sum())):
            alarms.append(lo + chunk.size)
    return alarms


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_shift_is_quiet_at_the_reference_and_under_slow_wandering(seed: int) -> None:
    """A million values at the reference, then a cycle of +-0.15 sd (below half the
    smallest shift looked for): no alarm at the defaults."""
    rng = np.random.default_rng(seed)
    detector = MeanShift(shift_sd=0.7, threshold=30.0, mean=2.0, sd=3.0)
    stable = rng.normal(2.0, 3.0, 1_000_000)
    cycle = rng.normal(2.0, 3.0, 500_000) + 0.45 * np.sin(np.arange(500_000) / 20_000)
    assert _feed(detector, stable, 10) == []
    assert _feed(detector, cycle, 10) == []
    assert detector.shift == 0.0


@pytest.mark.parametrize("shift", [0.5, 1.0, -2.0])
def test_mean_shift_sees_a_shift_within_the_cusum_delay_and_measures_it(shift: float) -> None:
    rng = np.random.default_rng(3)
    detector = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0)
    assert _feed(detector, rng.normal(0.0, 1.0, 20_000), 8) == []
    alarms = _feed(detector, rng.normal(shift, 1.0, 5_000), 8)
    assert alarms
    # about (threshold + 1.2) / (|shift| - shift_sd / 2) values, give or take the noise
    expected = 31.2 / (abs(shift) - 0.35)
    assert 0.4 * expected <= alarms[0] <= 2.5 * expected + 8
    assert detector.shift == pytest.approx(abs(shift), abs=0.25)


def test_a_standing_shift_ends_when_the_values_come_back() -> None:
    rng = np.random.default_rng(4)
    detector = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0)
    assert _feed(detector, rng.normal(1.0, 1.0, 2_000), 8)
    assert detector.shift > 0.5
    _feed(detector, rng.normal(1.0, 1.0, 2_000), 8)
    assert detector.shift > 0.5  # still shifted: it stands
    _feed(detector, rng.normal(0.0, 1.0, 2_000), 8)
    assert detector.shift == 0.0


def test_mean_shift_state_round_trips_and_a_new_reference_starts_afresh() -> None:
    rng = np.random.default_rng(5)
    detector = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0)
    _feed(detector, rng.normal(0.3, 1.0, 3_000), 8)
    state = orjson.loads(orjson.dumps(detector.to_state()))
    assert len(orjson.dumps(state)) < 300
    back = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0).restore(state)
    assert back == detector
    other = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.5, sd=1.0).restore(state)
    assert other == MeanShift(shift_sd=0.7, threshold=30.0, mean=0.5, sd=1.0)


def test_mean_shift_ignores_empty_and_unusable_batches() -> None:
    detector = MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0)
    assert detector.update(0, 5.0) == 0
    assert detector.update(3, float("nan")) == 0
    assert MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=0.0).update(3, 100.0) == 0
    assert detector == MeanShift(shift_sd=0.7, threshold=30.0, mean=0.0, sd=1.0)


def _episodes(detector: Adwin, wrong: np.ndarray, batch: int) -> list[int]:
    """Positions where an increase starts to stand (`shift` leaves 0), fed `batch` labels
    at a time as the stage does when labels trickle in."""
    starts = []
    for lo in range(0, wrong.size, batch):
        chunk = wrong[lo:lo + batch]
        before = detector.shift
        detector.update(chunk.size, int(chunk.sum()))
        if before == 0 < detector.shift:
            starts.append(lo + chunk.size)
    return starts


def test_a_chance_burst_is_one_episode_however_small_the_updates() -> None:
    """Updates of 3 labels: labels gather into buckets of at least `clock` before a test,
    and once the burst is diluted the increase ends instead of flickering around its
    baseline (this stream flipped in and out of `shift` > 0 six times before)."""
    wrong = np.random.default_rng(2).random(200_000) < 0.08
    assert len(_episodes(Adwin(delta=0.002), wrong, 3)) <= 1


def test_an_increase_ends_when_the_rate_is_back_halfway_without_a_cut() -> None:
    rng = np.random.default_rng(8)
    detector = Adwin(delta=0.002)
    wrong = np.concatenate([rng.random(20_000) < 0.08, rng.random(400) < 0.35])
    assert _episodes(detector, wrong, 8)
    assert detector.shift > 0.1
    _episodes(detector, rng.random(6_000) < 0.08, 8)
    assert detector.shift == 0.0


def test_the_dispersion_holds_when_a_wobble_is_out_of_step_with_the_chunks() -> None:
    """A rate redrawn every 500 labels, fed 8 at a time: chunks of 504 drift through the
    steps, and neighbours then share a level; the test stays widened, and quiet."""
    rng = np.random.default_rng(0)
    rates = np.repeat(rng.uniform(0.05, 0.15, 401), 500)[:200_000]
    detector = Adwin(delta=0.002)
    assert _episodes(detector, rng.random(rates.size) < rates, 8) == []
    assert detector.dispersion > 2


def test_nothing_is_reported_before_the_dispersion_is_measured() -> None:
    """Fed 8 at a time, the dispersion's chunks hold 504 labels and the 16th closes at 8,064;
    a warm-up of 8,000 labels let a test without the dispersion run in between (a wobbling
    stream alarmed there)."""
    rng = np.random.default_rng(3)
    wrong = np.concatenate([rng.random(2_000) < 0.05, rng.random(8_000) < 0.3])
    assert _episodes(Adwin(delta=0.002), wrong, 8)[0] == 16 * 504


def test_labels_in_large_batches_do_not_wait_for_the_dispersion() -> None:
    """Batches of 1,000 make chunks of 1,000: 16 of them would take twice the warm-up."""
    rng = np.random.default_rng(3)
    wrong = np.concatenate([rng.random(9_000) < 0.08, rng.random(1_000) < 0.3])
    detector = Adwin(delta=0.002)
    assert _episodes(detector, wrong, 1_000) == [10_000]
    assert len(detector.chunks) == 10


def test_the_bar_is_lower_for_a_long_cut() -> None:
    """4,000 labels at 10.0 % after 100,000 at 8 %: a likelihood-ratio root of 4.46, under
    ADWIN's flat bar at delta 0.0005 (4.63) but over the bar of a cut that long (4.33)."""
    detector = Adwin(delta=0.0005)
    detector.buckets = [[100_000.0, 8_000.0], [4_000.0, 401.0]]
    assert detector._cut() == 1
    detector.dispersion = 3.0  # an overdispersed stream: the test widens, the bar falls less
    assert detector._cut() is None


def test_a_slow_ramp_is_seen_no_later_than_by_rivers_adwin() -> None:
    """8 % -> 20 % over 30,000 labels, fed 8 at a time at the default confidence (the
    gradual stream of bench/drift_eval.py; at a flat bar the median was 8,224 to River's
    7,807)."""
    ours, theirs = [], []
    for seed in range(7):
        rng = np.random.default_rng(seed)
        rate = 0.08 + 0.12 * np.clip((np.arange(60_000) - 20_000) / 30_000, 0, 1)
        wrong = rng.random(rate.size) < rate
        ours.append(_episodes(Adwin(Drift().adwin_delta), wrong, 8)[0] - 20_000)
        theirs.append(_rivers_delay(wrong, 20_000))
    assert np.median(ours) <= np.median(theirs)
