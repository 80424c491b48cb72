"""The rules engine and the drift statistics (pure, no Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from agents.aggregators.drift import Scores, ValueSketch, psi
from agents.aggregators.window import WindowState
from agents.alerts import RuleState, applies, evaluate, evaluate_signal
from agents.snapshots import SnapshotStage
from core.settings import AlertRule, ConfigError, load_settings


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


def test_keep_firing_for_and_a_resolved_rule_fires_again_whatever_its_cooldown() -> None:
    sticky = AlertRule("err", "error_rate", ">", 0.3, 60.0, for_windows=1, keep_firing_for=2)
    assert _run(sticky, [0.5, 0.1, 0.1, 0.5, 0.1, 0.1, 0.1]) == [(0, "firing"),
                                                                 (6, "resolved")]
    # cooldown limits retraining requests (see the snapshot stage), never detection
    cooled = AlertRule("err", "error_rate", ">", 0.3, 60.0, for_windows=1, cooldown_s=600)
    assert _run(cooled, [0.5, 0.1, 0.5, 0.1, 0.1, 0.5, 0.1]) == [
        (0, "firing"), (1, "resolved"), (2, "firing"), (3, "resolved"), (5, "firing"),
        (6, "resolved")]


def test_unknown_values_wait_and_revisions_complete_a_run_once() -> None:
    state = RuleState()
    assert evaluate(RULE, state, 0, 60, 0.5) is None
    assert evaluate(RULE, state, 60, 120, 0.1) is None  # breaks the run
    assert evaluate(RULE, state, 60, 120, 0.9) is None  # late labels: it holds now, alone
    assert evaluate(RULE, state, 120, 180, 0.5) == "firing"
    assert state.alert_id == "err:60"
    assert evaluate(RULE, state, 120, 180, 0.95) is None  # the same episode: once
    assert evaluate(RULE, state, 180, 240, 0.1) == "resolved"
    # windows with no labels yet are judged when their first value arrives, in order
    late = RuleState()
    assert [evaluate(RULE, late, start, start + 60, None) for start in (0, 60, 120)] == [
        None] * 3
    assert evaluate(RULE, late, 0, 60, 0.5) is None
    assert evaluate(RULE, late, 60, 120, 0.6) == "firing"
    # a revision that completes the run fires it
    run = RuleState()
    assert evaluate(RULE, run, 0, 60, 0.5) is None
    assert evaluate(RULE, run, 60, 120, 0.25) is None
    assert evaluate(RULE, run, 60, 120, 0.4) is None  # the newest window now holds...
    assert run.held == 1  # ...but the run was broken by its first value: it restarts
    # a revision of a window older than the run changes nothing
    old = RuleState()
    for start, value in [(0, 0.5), (60, 0.1), (120, 0.1)]:
        evaluate(RULE, old, start, start + 60, value)
    assert evaluate(RULE, old, 0, 60, 0.9) is None
    assert evaluate(RULE, old, 60, 120, 0.9) is None


def test_a_streaming_rule_fires_and_resolves_as_its_detector_moves() -> None:
    rule = AlertRule("concept-drift", "error_shift", ">", 0.0, 60.0, action="retrain")
    state = RuleState()
    moves = [(0, 0.0), (0, 0.12), (0, 0.15), (60, 0.0), (60, 0.2), (120, 0.1)]
    transitions = [evaluate_signal(rule, state, s, s + 60, v) for s, v in moves]
    assert transitions == [None, "firing", None, "resolved", "firing", None]
    assert state.alert_id == "concept-drift:60"
    state = RuleState.from_state(orjson.loads(orjson.dumps(state.to_state())))
    assert evaluate_signal(rule, state, 120, 180, 0.0) == "resolved"
    assert evaluate_signal(rule, state, 120, 180, 0.3) == "firing"
    assert state.alert_id == "concept-drift:120"
    assert evaluate_signal(rule, state, 120, 180, 0.0) == "resolved"
    assert evaluate_signal(rule, state, 120, 180, 0.3) == "firing"
    assert state.alert_id == "concept-drift:120#2"  # a second episode in one window


def test_relative_rule_compares_with_the_trailing_baseline() -> None:
    jump = AlertRule("cost", "cost_per_prediction_usd", ">", 0.5, 60.0, for_windows=2,
                     relative=True, baseline_windows=3, resolve=0.2)
    values = [1.0, 1.0, 1.0, 1.2, 2.0, 2.0, 2.0]
    assert _run(jump, values) == [(5, "firing")]
    # a baseline of zeros (no labels yet, say) judges nothing and stays bounded
    zeros = RuleState()
    for i in range(50):
        assert evaluate(jump, zeros, i * 60.0, i * 60.0 + 60, 0.0) is None
    assert zeros.baseline == [0.0, 0.0, 0.0]


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
        assert stage._drift("churn", 0.0, 1, window(0.0), {"predictions": 1000}) == {}
    calm = stage._drift("churn", 0.0, 1, window(0.0), {"predictions": 1000})
    assert calm["drift_psi"] < 0.1
    assert calm["drifted_feature_share"] == 0.0
    moved = stage._drift("churn", 0.0, 1, window(0.3), {"predictions": 1000})
    assert moved["drift_psi"] > 0.25
    assert moved["drift_psi_features"]["tenure"] > 0.25
    assert moved["drift_psi_max"] == moved["drift_psi_features"]["tenure"]
    assert moved["drift_psi_features"]["spend"] < 0.1
    assert moved["drifted_feature_share"] == 0.5
    assert moved["dataset_drift"] is False
    # a revision (late labels) measures no drift again; nor does a window of a handful
    assert "drift_psi" not in stage._drift("churn", 0.0, 2, window(0.3), {"predictions": 1000})
    assert "drift_psi" not in stage._drift("churn", 0.0, 1, window(0.3, 20), {"predictions": 20})


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
    first = stage._drift("churn", 0.0, 1, window, {"predictions": 1000})
    assert first["drift_psi"] > 0.25
    assert first["drift_psi_features"]["tenure"] < 0.1
    config.write_text(f'[drift.pinned]\nintent = "{tmp_path / "missing.jsonl"}"\n')
    with pytest.raises(ConfigError, match=r"drift\.pinned\.intent"):
        load_settings({"FACTORY_CONFIG": str(config)})


def test_a_failure_mid_publish_drops_the_stages_memory_and_the_table_brings_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The snapshot stage's error rule is the shards': state that may be ahead of what was
    written is dropped, and the next batch reads the table again."""
    import asyncio

    from agents import snapshots

    class Broken:
        async def send(self, key: bytes, value: bytes) -> None:
            raise RuntimeError("broker gone")

    class Batches:
        def noack_take(self, n: int, within: float) -> Any:
            async def batches() -> Any:
                yield [object()]
            return batches()

    table = {"w|m:churn|60|0": {"rev": 3, "closed": True}, "alert|r|m:churn": {"v": 2}}
    stage = SnapshotStage(load_settings({}), table, {"metrics": Broken(), "alerts": Broken(),
                                                     "retraining": Broken()}, None)

    async def fail(events: list[Any]) -> None:
        stage.load()
        stage.entries["w|m:churn|60|0"].rev += 1  # bumped in memory, never written
        stage.alert_states["alert|r|m:churn"] = {"v": 2, "f": True}
        await stage.metrics.send(key=b"k", value=b"{}")

    monkeypatch.setattr(snapshots, "_step", lambda s, events: fail(events))
    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(snapshots.run(stage, Batches()))
    assert not stage.loaded
    assert stage.entries == {}
    assert stage.alert_states == {}
    stage.load()
    assert stage.entries["w|m:churn|60|0"].rev == 3  # what the table holds
    assert stage.alert_states["alert|r|m:churn"] == {"v": 2}
