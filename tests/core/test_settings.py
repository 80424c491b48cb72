from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.settings import ConfigError, load_settings, parse_duration


def _toml(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "factory.toml"
    path.write_text(text)
    return {"FACTORY_CONFIG": str(path)}


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert s.bootstrap == "localhost:9092"
    assert s.topic_prefix == "factory."
    assert s.window_sizes == (60.0,)
    assert s.store == "rocksdb"
    assert s.security.protocol == "PLAINTEXT"
    assert s.session_timeout_s == 10.0
    # static membership by default, under an id that a restart on the same host keeps
    assert s.instance_id == f"{socket.gethostname()}-6066"
    assert load_settings({"FACTORY_WEB_PORT": "7001"}).instance_id.endswith("-7001")
    assert load_settings({"FACTORY_INSTANCE_ID": "pulse-0"}).instance_id == "pulse-0"
    assert load_settings({"FACTORY_INSTANCE_ID": ""}).instance_id is None


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = _toml(tmp_path, '[kafka]\nbootstrap = "a:1"\npartitions = 3\n')
    assert load_settings(env).bootstrap == "a:1"
    assert load_settings(env).partitions == 3
    env["FACTORY_KAFKA_BOOTSTRAP"] = "b:2,c:3"
    s = load_settings(env)
    assert s.bootstrap_servers == ["b:2", "c:3"]
    assert s.partitions == 3


def test_full_file_is_parsed(tmp_path: Path) -> None:
    env = _toml(tmp_path, """
regressors = ["demand"]
[windows]
sizes = ["1h", 60, "1d"]
retention = "7d"
label_horizon = "12h"
[prices]
per_hour = { "NVIDIA H200" = 3.5, cpu = 0.04 }
per_kwh = 0.12
[worker]
store = "memory"
web_port = 7000
""")
    s = load_settings(env)
    assert s.window_sizes == (60.0, 3600.0, 86400.0)
    assert s.retention_s == 7 * 86400
    assert s.label_horizon_s == 12 * 3600
    assert s.prices.per_hour == {"NVIDIA H200": 3.5, "cpu": 0.04}
    assert s.prices.per_kwh == 0.12
    assert s.regressors == {"demand"}
    assert (s.store, s.web_port) == ("memory", 7000)


@pytest.mark.parametrize(("text", "key"), [
    ('[kafka]\npartitions = "many"\n', "kafka.partitions"),
    ("[kafka]\npartitions = 0\n", "kafka.partitions"),
    ('[windows]\nsizes = ["1h", "soon"]\n', "windows.sizes[1]"),
    ("[windows]\nsizes = [60, 60]\n", "windows.sizes"),
    ('[windows]\nsizes = ["1d"]\nretention = "1h"\n', "windows.retention"),
    ("[prices]\nper_hour = { gpu = -1 }\n", "prices.per_hour.gpu"),
    ('[prices]\nper_kwh = "cheap"\n', "prices.per_kwh"),
    ('[worker]\nstore = "redis"\n', "worker.store"),
    ("[worker]\nwebport = 1\n", "worker.webport"),
    ("[windowz]\n", "windowz"),
    ('[kafka]\nbootstrap = "nohost"\n', "kafka.bootstrap"),
    ('[kafka]\ntopic_prefix = "bad prefix"\n', "kafka.topic_prefix"),
    ("regressors = 3\n", "regressors"),
    ("[drift]\nadwin_delta = 0\n", "drift.adwin_delta"),
    ("[drift]\nshift_sd = 0\n", "drift.shift_sd"),
    ("[drift]\nshift_threshold = -1\n", "drift.shift_threshold"),
    ("[drift]\npsi_bins = 1\n", "drift.psi_bins"),
    ('[drift]\nph_threshold = "high"\n', "drift.ph_threshold"),
    ("[drift]\nfeature_psi = -0.1\n", "drift.feature_psi"),
    ("[drift]\nmin_predictions = 0\n", "drift.min_predictions"),
    ("[drift]\nadwin = 1\n", "drift.adwin"),
])
def test_bad_file_values_fail_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_toml(tmp_path, text))
    assert err.value.key == key
    assert key in str(err.value)


@pytest.mark.parametrize(("var", "value"), [
    ("FACTORY_PARTITIONS", "two"),
    ("FACTORY_WEB_PORT", "70000"),
    ("FACTORY_KAFKA_BOOTSTRAP", "localhost"),
    ("FACTORY_STORE", "disk"),
    ("FACTORY_KAFKA_SECURITY_PROTOCOL", "KERBEROS"),
    ("FACTORY_INSTANCE_ID", "worker 1"),
])
def test_bad_environment_values_fail_naming_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({var: value})
    assert err.value.key == var


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FACTORY_CONFIG.*not found"):
        load_settings({"FACTORY_CONFIG": str(tmp_path / "nope.toml")})
    with pytest.raises(ConfigError, match=r"FACTORY_CONFIG.*not valid TOML"):
        load_settings(_toml(tmp_path, "[kafka\n"))


def test_sasl_settings_pass_through_and_the_password_stays_out_of_repr() -> None:
    s = load_settings({
        "FACTORY_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "FACTORY_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "FACTORY_KAFKA_SASL_USERNAME": "pulse",
        "FACTORY_KAFKA_SASL_PASSWORD": "s3cret-value",
    })
    assert s.security.protocol == "SASL_PLAINTEXT"
    assert s.security.sasl_mechanism == "SCRAM-SHA-512"
    assert "s3cret-value" not in repr(s)
    with pytest.raises(ConfigError) as err:
        load_settings({"FACTORY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert err.value.key == "FACTORY_KAFKA_SASL_USERNAME"


@pytest.mark.parametrize(("value", "seconds"), [
    (60, 60.0), ("90s", 90.0), ("15m", 900.0), ("1h", 3600.0), ("1d", 86400.0), ("1.5h", 5400.0),
])
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration("k", value) == seconds


@pytest.mark.parametrize("value", [0, -5, "1y", "", True, float("nan")])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration("k", value)


def test_default_alert_rules_ship(tmp_path: Path) -> None:
    rules = {r.name: r for r in load_settings({}).alerts}
    assert {"error-rate-high", "failure-rate-high", "concept-drift", "error-drift",
            "score-shift", "feature-shift", "score-drift", "feature-drift",
            "label-coverage-drop", "cost-per-prediction-jump", "gpu-idle"} == set(rules)
    # one rule for each detector's output, each asking for retraining
    assert {r.metric for r in rules.values() if r.action == "retrain"} == {
        "error_shift", "score_shift", "feature_shift", "error_drift", "drift_psi",
        "drift_psi_max"}


def test_drift_detectors_are_configured_in_the_file(tmp_path: Path) -> None:
    drift = load_settings(_toml(tmp_path, """
[drift]
reference_size = 5000
psi_bins = 20
feature_psi = 0.1
min_predictions = 50
ph_delta = 0.005
ph_threshold = 0.3
ph_min_windows = 10
adwin_delta = 0.0001
shift_sd = 0.5
shift_threshold = 20
""")).drift
    assert (drift.reference_size, drift.psi_bins, drift.feature_psi, drift.min_predictions,
            drift.ph_delta, drift.ph_threshold, drift.ph_min_windows, drift.adwin_delta,
            drift.shift_sd, drift.shift_threshold) == (
        5000, 20, 0.1, 50, 0.005, 0.3, 10, 0.0001, 0.5, 20.0)


def test_alert_rules_from_the_file(tmp_path: Path) -> None:
    env = _toml(tmp_path, """
[windows]
sizes = ["60s", "1h"]
[[alerts]]
name = "slow"
metric = "latency_p95_ms"
op = ">"
threshold = 250
resolve = 200
for = 3
window = "1h"
models = ["churn*"]
severity = "critical"
""")
    (rule,) = load_settings(env).alerts
    assert (rule.name, rule.window_s, rule.for_windows, rule.models) == (
        "slow", 3600.0, 3, ("churn*",))


@pytest.mark.parametrize(("rule", "key"), [
    ('name = "a"\nmetric = "happiness"\nop = ">"\nthreshold = 1', "alerts[0] (a).metric"),
    ('name = "a"\nmetric = "f1"\nop = "=="\nthreshold = 1', "alerts[0] (a).op"),
    ('name = "a"\nmetric = "f1"\nop = "<"\nthreshold = 0.5\nresolve = 0.4',
     "alerts[0] (a).resolve"),
    ('name = "a"\nmetric = "f1"\nop = "<"\nthreshold = 0.5\nwindow = "5m"', "alerts[0] (a).window"),
    ('name = "a"\nmetric = "f1"\nop = "<"', "alerts[0] (a).threshold"),
    ('name = "a"\nmetric = "f1"\nop = "<"\nthreshold = 1\nfour = 3', "alerts[0] (a).four"),
    ('name = "a"\nmetric = "error_shift"\nop = ">"\nthreshold = 0\nfor = 3',
     "alerts[0] (a).for"),
])
def test_a_bad_rule_fails_naming_it(tmp_path: Path, rule: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_toml(tmp_path, f"[[alerts]]\n{rule}\n"))
    assert err.value.key == key
