"""The rules engine and the drift statistics (pure, no Kafka)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from agents.aggregators.drift import PageHinkley, Scores, ValueSketch, psi
from agents.aggregators.window import WindowState
from agents.alerts import RuleState, applies, evaluate
from agents.snapshots import SnapshotStage
from streams.settings import AlertRule, ConfigError, load_settings


def _run(rule: AlertRule, values: list[float | None]) -> list[tuple[int, str]]:
    state = RuleState()
    out = []
    for i, value in enumerate(values):
        transition = evaluate(rule, state, i * 60.0, i * 60.0 + 60, value)
        if transition:
            out.append((i, transition))
        state = RuleState.from_state(state.to_state())  # as if reloaded from the table
    return out


RULE = AlertRule("err", "error_rate", ">", 0.3, 60.0, for_windows=2, resolve=0.2)


def test_fires_after_for_windows_once_and_resolves_with_hysteresis() -> None:
    values = [0.1, 0.5, 0.1, 0.5, 0.6, 0.7, 0.25, 0.5, 0.19, 0.1]
    assert _run(RULE, values) == [(4, "firing"), (8, "resolved")]


def test_keep_firing_for_and_cooldown() -> None:
    sticky = AlertRule("err", "error_rate", ">", 0.3, 60.0, for_windows=1, keep_firing_for=2)
    assert _run(sticky, [0.5, 0.1, 0.1, 0.5, 0.1, 0.1, 0.1]) == [(0, "firing"),
                                                                 (6, "resolved")]
    cooled = AlertRule("err", "error_rate", ">", 0.3, 60.0, for_windows=1, cooldown_s=600)
    assert _run(cooled, [0.5, 0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.5, 0.1, 0.5]) == [
        (0, "firing"), (1, "resolved"), (10, "firing"), (11, "resolved")]


def test_missing_values_and_revisions_change_nothing() -> None:
    state = RuleState()
    assert evaluate(RULE, state, 0, 60, 0.5) is None
    assert evaluate(RULE, state, 0, 60, 0.9) is None  # a later revision of the same window
    assert evaluate(RULE, state, 60, 120, None) is None
    assert evaluate(RULE, state, 120, 180, 0.5) == "firing"


def test_relative_rule_compares_with_the_trailing_baseline() -> None:
    jump = AlertRule("cost", "cost_per_prediction_usd", ">", 0.5, 60.0, for_windows=2,
                     relative=True, baseline_windows=3, resolve=0.2)
    values = [1.0, 1.0, 1.0, 1.2, 2.0, 2.0, 2.0]
    assert _run(jump, values) == [(5, "firing")]


def test_rule_selectors() -> None:
    idle = AlertRule("idle", "gpu_util_avg", "<", 0.05, 60.0, scope="device", models=("*/gpu*",))
    assert applies(idle, "device", "node-1/gpu0", 60.0)
    assert not applies(idle, "device", "node-1/cpu", 60.0)
    assert not applies(idle, "model", "node-1/gpu0", 60.0)
    assert not applies(idle, "device", "node-1/gpu0", 3600.0)


def _scores(values: np.ndarray) -> Scores:
    s = Scores()
    s.update(values)
    return s


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = _scores(rng.beta(2, 5, 20_000))
    same = _scores(rng.beta(2, 5, 5_000))
    shifted = _scores(np.clip(rng.beta(2, 5, 5_000) + 0.2, 0, 1))
    assert psi(ref.hist, same.hist) < 0.02
    assert psi(ref.hist, shifted.hist) > 0.25
    assert psi(ref.hist, Scores().hist) is None


def test_page_hinkley_stays_quiet_on_noise_and_catches_a_step() -> None:
    rng = np.random.default_rng(1)
    detector = PageHinkley()
    assert not any(detector.update(x) for x in rng.normal(0.1, 0.02, 500).clip(0, 1))
    alarms = [i for i, x in enumerate([*rng.normal(0.1, 0.02, 20), *rng.normal(0.4, 0.02, 10)])
              if detector.update(float(x))]
    assert alarms
    assert 20 <= alarms[0] <= 22


@pytest.mark.parametrize("n", [0, 3])
def test_page_hinkley_state_round_trips(n: int) -> None:
    detector = PageHinkley()
    for x in [0.1] * n:
        detector.update(x)
    assert PageHinkley.from_state(detector.to_state()).to_state() == detector.to_state()


def test_feature_sketch_orders_signed_values_and_psi_sees_a_shift() -> None:
    rng = np.random.default_rng(2)
    ref, same, shifted = ValueSketch(), ValueSketch(), ValueSketch()
    ref.update(rng.normal(0, 10, 20_000))
    same.update(rng.normal(0, 10, 5_000))
    shifted.update(rng.normal(8, 10, 5_000))
    keys = sorted(ref.buckets)
    assert keys[0] < 0 < keys[-1]
    assert psi(ref, same) < 0.05
    assert psi(ref, shifted) > 0.25
    back = ValueSketch.from_state(orjson.loads(orjson.dumps(ref.to_state())))
    assert back.buckets == ref.buckets


def test_snapshot_stage_reports_score_and_feature_drift_against_the_reference() -> None:
    settings = load_settings({})
    stage = SnapshotStage(settings, {}, {"metrics": None, "alerts": None, "retraining": None},
                          None)
    rng = np.random.default_rng(3)

    def window(shift: float, n: int = 1000) -> WindowState:
        state = WindowState()
        state.family("scores").update(np.clip(rng.beta(2, 5, n) + shift, 0, 1))
        state.family("features").update({"tenure": rng.normal(24 + 40 * shift, 8, n),
                                         "spend": rng.lognormal(3, 0.5, n)})
        return state

    for _ in range(2):  # the first 2,000 predictions make the reference
        assert stage._drift("churn", window(0.0), {"predictions": 1000}) == {}
    calm = stage._drift("churn", window(0.0), {"predictions": 1000})
    assert calm["drift_psi"] < 0.1
    assert calm["drifted_feature_share"] == 0.0
    moved = stage._drift("churn", window(0.3), {"predictions": 1000})
    assert moved["drift_psi"] > 0.25
    assert moved["drift_psi_features"]["tenure"] > 0.25
    assert moved["drift_psi_features"]["spend"] < 0.1
    assert moved["drifted_feature_share"] == 0.5
    assert moved["dataset_drift"] is False


def test_a_pinned_reference_is_used_from_the_first_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    reference = tmp_path / "churn-reference.jsonl"
    reference.write_bytes(b"\n".join(
        orjson.dumps({"topic": "predictions", "event": {"score": float(s),
                                                        "features": {"tenure": float(t)}}})
        for s, t in zip(rng.beta(2, 5, 3000), rng.normal(24, 8, 3000), strict=True)))
    config = tmp_path / "factory.toml"
    config.write_text(f'[drift.pinned]\nchurn = "{reference}"\n')
    settings = load_settings({"FACTORY_CONFIG": str(config)})
    stage = SnapshotStage(settings, {}, {"metrics": None, "alerts": None, "retraining": None},
                          None)
    window = WindowState()
    window.family("scores").update(np.clip(rng.beta(2, 5, 1000) + 0.3, 0, 1))
    window.family("features").update({"tenure": rng.normal(24, 8, 1000)})
    first = stage._drift("churn", window, {"predictions": 1000})
    assert first["drift_psi"] > 0.25
    assert first["drift_psi_features"]["tenure"] < 0.1
    config.write_text(f'[drift.pinned]\nintent = "{tmp_path / "missing.jsonl"}"\n')
    with pytest.raises(ConfigError, match=r"drift\.pinned\.intent"):
        load_settings({"FACTORY_CONFIG": str(config)})
