"""The one frozen settings object: environment over the TOML config file over defaults.

Everything is validated when the settings are loaded, so a bad value fails the worker at start
with a message naming the key (`FACTORY_PARTITIONS`, `windows.sizes[1]`, ...) instead of
surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from schemas.outputs import ALERT_METRICS, STREAMING_METRICS

T = TypeVar("T")

DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_PREFIX = "factory."

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid configuration {key}: {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Client security settings passed through to every Kafka client unchanged."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """How many distinct entities of each kind one partition of a family's table may hold
    (those with a window inside the retention). An event that would add one more is
    dead-lettered, naming the setting; the whole service holds at most `partitions` times
    these. State, memory and `/metrics` grow with entities: these keep them bounded by
    configuration when a producer sends a new model name (or device, host, pipeline stage)
    with every event."""

    models: int = 250
    devices: int = 1000
    hosts: int = 250
    pipelines: int = 250  # pipeline stages


@dataclass(frozen=True, slots=True)
class Prices:
    """Compute prices: USD per device-hour by `device_name` or `kind`, and per kWh."""

    per_hour: Mapping[str, float] = field(default_factory=dict)
    per_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class Drift:
    """The drift detectors' parameters (`[drift]`, see README "Alerts and retraining")."""

    # the reference: a version's first predictions, or a recorded file per model
    reference_size: int = 2000
    pinned: Mapping[str, Path] = field(default_factory=dict)
    # PSI over `psi_bins` bins cut at the reference's quantiles; a feature drifts past
    # `feature_psi`; windows with fewer than `min_predictions` predictions get no PSI
    # (a handful of scores is not a distribution)
    psi_bins: int = 10
    feature_psi: float = 0.25
    min_predictions: int = 100
    # Page-Hinkley over window error rates (`error_drift`)
    ph_delta: float = 0.01
    ph_threshold: float = 0.15
    ph_min_windows: int = 5
    # the per-label detector (`error_shift`, `agents.aggregators.change.Adwin`): its
    # likelihood-ratio test is sharp, so a confidence below River's 0.002 keeps it quiet on
    # stable streams tested every 32 labels (bench/drift_eval.py)
    adwin_delta: float = 0.0005
    # the per-value detectors of scores and features against the reference (`score_shift`,
    # `feature_shift`, `agents.aggregators.change.MeanShift`): the smallest mean shift they
    # look for, in reference standard deviations, and their CUSUM's alarm level
    shift_sd: float = 0.7
    shift_threshold: float = 30.0


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert rule of the `[[alerts]]` config (see README, "Alerts and retraining")."""

    name: str
    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    window_s: float
    for_windows: int = 1
    resolve: float | None = None
    keep_firing_for: int = 0
    # Event time between two retraining requests of this rule for one entity (on top of
    # `retraining.cooldown`); alerts themselves are never held back: each episode fires.
    cooldown_s: float = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"
    models: tuple[str, ...] = ("*",)
    scope: Literal["model", "device", "host", "pipeline"] = "model"
    action: Literal["alert", "retrain"] = "alert"
    relative: bool = False
    baseline_windows: int = 10


@dataclass(frozen=True, slots=True)
class Alertmanager:
    """Where alerts are pushed (`[alertmanager]`, nowhere by default; `streams.alertmanager`):
    each firing alert is sent again every `resend_s`, with an end four of them ahead."""

    urls: tuple[str, ...] = ()
    resend_s: float = 60.0
    timeout_s: float = 10.0
    # the dashboard's address as Alertmanager's users reach it (generatorURL); by default
    # the worker's own web address
    dashboard_url: str | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    """One `[[webhooks]]` entry: a URL each retraining request is POSTed to
    (`streams.webhooks`), with a ready-made body (`template`) or one of its own (`body`)."""

    name: str
    url: str
    template: Literal["airflow", "argo", "github", "custom"] = "custom"
    body: Any = None
    vars: Mapping[str, str] = field(default_factory=dict)
    secret_env: str | None = None  # the environment variable holding the HMAC secret
    headers_env: Mapping[str, str] = field(default_factory=dict)  # header -> variable
    max_attempts: int = 5
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Source:
    """One `[[sources]]` entry: topics another system writes and how their payloads become
    prediction events (`agents.sources`). `kserve`: KServe's inference logger's CloudEvents
    on `topic`; `seldon`: a Seldon Core 2 model's `<topic>.inputs` and `<topic>.outputs`
    (`topic` is `<topicPrefix>.<namespace>.model.<model>`). Requests and responses are
    paired by id, at most `max_pending` halves waiting per partition, each at most
    `pairing_timeout_s`."""

    name: str
    kind: Literal["kserve", "seldon"]
    topic: str
    features: tuple[str, ...] = ()  # numeric features read from the request, by name
    version_header: str | None = None  # kserve: a logged header (`metadata`); seldon: a header
    input: str | None = None  # V2: the input tensor of the features (default: the first)
    score_output: str | None = None  # V2: the output tensor of scores or probabilities
    class_output: str | None = None  # V2: the output tensor of predicted classes
    max_pending: int = 10_000
    pairing_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Dcgm:
    """How `collect --dcgm` attributes a GPU to a model: the first match of `model_pattern`
    in the label `model_label` names it (its `model` group, else the whole match). The
    default reads a KServe predictor's pod name, `<isvc>-predictor-...`."""

    model_label: str = "pod"
    model_pattern: str = r"^(?P<model>.+?)-predictor(?:-|$)"


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed configuration of one factory-pulse process."""

    bootstrap: str = DEFAULT_BOOTSTRAP
    topic_prefix: str = DEFAULT_PREFIX
    partitions: int = 4
    replication_factor: int = 1
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    app_id: str = "factory-pulse"
    store: Literal["rocksdb", "memory"] = "rocksdb"
    state_dir: Path = Path(".factory")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    window_sizes: tuple[float, ...] = (60.0,)
    retention_s: float = 2 * 86400.0
    label_horizon_s: float = 86400.0
    grace_s: float = 10.0
    max_future_s: float = 600.0
    # Events stamped further back than this before now are dead-lettered, from a fresh
    # shard's first event on (a 1970 timestamp would otherwise open a 1970 window). The
    # loader defaults it to the retention; a backfill of older history raises it.
    max_age_s: float = 2 * 86400.0
    idle_s: float = 10.0
    # Static group membership (Kafka's group.instance.id): a worker restarted under the same
    # id takes its partitions back without a rebalance; a clean stop leaves the group at once
    # (core.faust_internals.leave_static_group); a worker killed for good keeps its
    # partitions until the session timeout, as with dynamic membership. The loader defaults
    # it to "<hostname>-<web port>", stable across restarts and unique per host (two workers
    # cannot share a web port). None (set it to "") means dynamic membership.
    instance_id: str | None = None
    flush_interval_s: float = 0.5
    # a flush takes at most this many input messages, and this many bytes of them (one-event
    # messages: 10,000 a flush used 8 % less CPU per event than 4,000; 20,000, 1 % less still)
    max_batch: int = 10_000
    max_batch_bytes: int = 16 * 1024 * 1024
    # and at most this many events: the loop runs nothing else while a flush is applied (no
    # heartbeat, no web request), and 16 MiB of columnar labels are nearly a million events
    # (8-11 µs each: `bench/labels.py`). 100,000 is 0.8-1.1 s of labels, 0.3 s of
    # predictions; 1M columnar predictions read at 291k, 313k and 314k ev/s with 50,000,
    # 100,000 and 1,000,000 (each flush waits once for the broker's acknowledgement).
    max_batch_events: int = 100_000
    session_timeout_s: float = 10.0
    # Kafka's default message limit: input messages over it are dead-lettered, outputs over
    # it are not sent (counted and logged); input topics accept up to 4x so that an
    # oversized message reaches the dead-letter topic instead of bouncing at its producer.
    max_message_bytes: int = 1024 * 1024
    alerts: tuple[AlertRule, ...] = ()
    retrain_cooldown_s: float = 6 * 3600.0
    # retraining requests older than this when first read are logged as skipped, not POSTed
    # (a first start must not replay history to the webhooks)
    webhook_max_age_s: float = 86400.0
    alertmanager: Alertmanager = field(default_factory=Alertmanager)
    webhooks: tuple[Webhook, ...] = ()
    sources: tuple[Source, ...] = ()
    dcgm: Dcgm = field(default_factory=Dcgm)
    drift: Drift = field(default_factory=Drift)
    limits: Limits = field(default_factory=Limits)
    prices: Prices = field(default_factory=Prices)
    regressors: frozenset[str] = frozenset()
    config_path: Path | None = None

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    @property
    def data_dir(self) -> Path:
        """Where this app's table store lives; one folder per app id."""
        return self.state_dir / "worker" / self.app_id


def parse_duration(key: str, value: Any) -> float:
    """Seconds from a number or a string like `90s`, `15m`, `1h`, `1d`."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ConfigError(key, f"expected a duration such as 60, '1h' or '1d', got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(key, f"must be a positive duration, got {value!r}")
    return seconds


def _non_negative_duration(key: str, value: Any) -> float:
    if value in (0, "0", "0s"):
        return 0.0
    return parse_duration(key, value)


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(key, f"must be between {low} and {high}, got {value}")
    return value


def _price(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected a price in USD, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(key, f"must be a non-negative number, got {value!r}")
    return float(value)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {value!r}")
    return value


def _reject_unknown(section: str, values: Mapping[str, Any], known: set[str]) -> None:
    for name in values:
        if name not in known:
            where = f"{section}.{name}" if section else name
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(known))})")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("FACTORY_CONFIG", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("FACTORY_CONFIG", f"{path} is not valid TOML: {exc}") from None


_SECTIONS = {
    "kafka": {"bootstrap", "topic_prefix", "partitions", "replication_factor",
              "session_timeout", "max_message_bytes"},
    "worker": {"app_id", "store", "state_dir", "web_host", "web_port", "flush_interval",
               "max_batch", "max_batch_bytes", "max_batch_events", "idle", "instance_id"},
    "windows": {"sizes", "retention", "label_horizon", "grace", "max_future", "max_age"},
    "prices": {"per_hour", "per_kwh"},
    "retraining": {"cooldown", "webhook_max_age"},
    "alertmanager": {"urls", "resend", "timeout", "dashboard_url"},
    "dcgm": {"model_label", "model_pattern"},
    "drift": {"reference_size", "pinned", "psi_bins", "feature_psi", "min_predictions",
              "ph_delta", "ph_threshold", "ph_min_windows", "adwin_delta", "shift_sd",
              "shift_threshold"},
    "limits": {"models", "devices", "hosts", "pipelines"},
}
_TOP_LEVEL = {*_SECTIONS, "regressors", "alerts", "sources", "webhooks"}


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`{"kafka": {"partitions": 2}}` -> `{"kafka.partitions": 2}`, rejecting unknown keys."""
    _reject_unknown("", doc, _TOP_LEVEL)
    flat: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        values = _table(section, doc.get(section, {}))
        _reject_unknown(section, values, keys)
        flat.update({f"{section}.{k}": v for k, v in values.items()})
    if "regressors" in doc:
        flat["regressors"] = doc["regressors"]
    for name in ("alerts", "sources", "webhooks"):
        if name in doc:
            flat[name] = doc[name]
    return flat


_ENV_KEYS = {
    "FACTORY_KAFKA_BOOTSTRAP": "kafka.bootstrap",
    "FACTORY_TOPIC_PREFIX": "kafka.topic_prefix",
    "FACTORY_PARTITIONS": "kafka.partitions",
    "FACTORY_REPLICATION_FACTOR": "kafka.replication_factor",
    "FACTORY_APP_ID": "worker.app_id",
    "FACTORY_STORE": "worker.store",
    "FACTORY_STATE_DIR": "worker.state_dir",
    "FACTORY_WEB_HOST": "worker.web_host",
    "FACTORY_WEB_PORT": "worker.web_port",
    "FACTORY_FLUSH_INTERVAL": "worker.flush_interval",
    "FACTORY_GRACE": "windows.grace",
    "FACTORY_IDLE": "worker.idle",
    "FACTORY_INSTANCE_ID": "worker.instance_id",
    "FACTORY_SESSION_TIMEOUT": "kafka.session_timeout",
    "FACTORY_MAX_MESSAGE_BYTES": "kafka.max_message_bytes",
    "FACTORY_ALERTMANAGER_URL": "alertmanager.urls",
}


# The defaults, stated once: in the dataclasses above.
D = Settings()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings from environment variables and `FACTORY_CONFIG`."""
    env = os.environ if env is None else env
    config_path = Path(env["FACTORY_CONFIG"]) if env.get("FACTORY_CONFIG") else None
    values = _flatten(_read_toml(config_path)) if config_path else {}
    names = {key: key for key in values}
    for env_key, key in _ENV_KEYS.items():
        # empty variables are ignored, except an empty instance id (dynamic membership)
        if env.get(env_key) or (env_key == "FACTORY_INSTANCE_ID" and env_key in env):
            values[key] = env[env_key]
            names[key] = env_key

    def get(key: str, default: T, parse: Callable[[str, Any], T]) -> T:
        return parse(names[key], values[key]) if key in values else default

    web_port = get("worker.web_port", D.web_port, lambda k, v: _int(k, v, 1, 65535))
    prefix = get("kafka.topic_prefix", D.topic_prefix, lambda k, v: _topic_part(k, v, True))
    sizes: tuple[float, ...] = get("windows.sizes", D.window_sizes, _window_sizes)
    retention = get("windows.retention", D.retention_s, parse_duration)
    if retention < max(sizes):
        raise ConfigError(names.get("windows.retention", "windows.sizes"),
                          f"retention ({retention:g}s) is shorter than the largest window "
                          f"({max(sizes):g}s)")
    return Settings(
        bootstrap=get("kafka.bootstrap", D.bootstrap, _bootstrap),
        topic_prefix=prefix,
        partitions=get("kafka.partitions", D.partitions, lambda k, v: _int(k, v, 1, 1024)),
        replication_factor=get("kafka.replication_factor", D.replication_factor,
                               lambda k, v: _int(k, v, 1, 16)),
        security=_security(env),
        app_id=get("worker.app_id", D.app_id, lambda k, v: _topic_part(k, v, False)),
        store=get("worker.store", D.store, lambda k, v: _choice(k, v, ("rocksdb", "memory"))),
        state_dir=get("worker.state_dir", D.state_dir, lambda k, v: Path(_str(k, v))),
        web_host=get("worker.web_host", D.web_host, _str),
        web_port=web_port,
        window_sizes=sizes,
        retention_s=retention,
        label_horizon_s=get("windows.label_horizon", D.label_horizon_s, parse_duration),
        grace_s=get("windows.grace", D.grace_s, _non_negative_duration),
        max_future_s=get("windows.max_future", D.max_future_s, parse_duration),
        max_age_s=get("windows.max_age", retention, parse_duration),
        idle_s=get("worker.idle", D.idle_s, parse_duration),
        instance_id=get("worker.instance_id", None, lambda k, v: _topic_part(k, v, True)) or None
        if "worker.instance_id" in values else _default_instance_id(web_port),
        flush_interval_s=get("worker.flush_interval", D.flush_interval_s, parse_duration),
        max_batch=get("worker.max_batch", D.max_batch, lambda k, v: _int(k, v, 1, 1_000_000)),
        max_batch_bytes=get("worker.max_batch_bytes", D.max_batch_bytes,
                            lambda k, v: _int(k, v, 1024, 1 << 30)),
        max_batch_events=get("worker.max_batch_events", D.max_batch_events,
                             lambda k, v: _int(k, v, 1, 100_000_000)),
        session_timeout_s=get("kafka.session_timeout", D.session_timeout_s, parse_duration),
        max_message_bytes=get("kafka.max_message_bytes", D.max_message_bytes,
                              lambda k, v: _int(k, v, 1024, 64 * 1024 * 1024)),
        alerts=_alert_rules(values.get("alerts"), sizes),
        retrain_cooldown_s=get("retraining.cooldown", D.retrain_cooldown_s, parse_duration),
        webhook_max_age_s=get("retraining.webhook_max_age", D.webhook_max_age_s,
                              parse_duration),
        alertmanager=Alertmanager(
            urls=get("alertmanager.urls", D.alertmanager.urls, _urls),
            resend_s=get("alertmanager.resend", D.alertmanager.resend_s, parse_duration),
            timeout_s=get("alertmanager.timeout", D.alertmanager.timeout_s, parse_duration),
            dashboard_url=get("alertmanager.dashboard_url", D.alertmanager.dashboard_url,
                              _url)),
        webhooks=_entries(values.get("webhooks"), "webhooks", lambda w, i: _webhook(w, i, env)),
        sources=_entries(values.get("sources"), "sources", _source),
        dcgm=Dcgm(model_label=get("dcgm.model_label", D.dcgm.model_label, _str),
                  model_pattern=get("dcgm.model_pattern", D.dcgm.model_pattern, _pattern)),
        limits=Limits(**{name: get(f"limits.{name}", getattr(D.limits, name),
                                   lambda k, v: _int(k, v, 1, 1_000_000))
                         for name in ("models", "devices", "hosts", "pipelines")}),
        drift=_drift(get),
        prices=_prices(values),
        regressors=get("regressors", D.regressors, _regressors),
        config_path=config_path,
    )


def _default_instance_id(web_port: int) -> str:
    """A group instance id that survives restarts: the host's name and the worker's web port."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:80] or "worker"
    return f"{host}-{web_port}"


def _topic_part(key: str, value: Any, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError(key, f"expected a string, got {value!r}")
    if not _TOPIC_CHARS.match(value) or len(value) > 100:
        raise ConfigError(key, f"may hold only letters, digits, '.', '_' and '-', got {value!r}")
    return value


def _bootstrap(key: str, value: Any) -> str:
    text = _str(key, value)
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(key, f"expected host:port[,host:port...], got {value!r}")
    return text


def _window_sizes(key: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"expected a non-empty list of durations, got {value!r}")
    sizes = tuple(parse_duration(f"{key}[{i}]", v) for i, v in enumerate(value))
    if len(set(sizes)) != len(sizes):
        raise ConfigError(key, "window sizes must be distinct")
    return tuple(sorted(sizes))


def _prices(values: Mapping[str, Any]) -> Prices:
    per_hour = _table("prices.per_hour", values.get("prices.per_hour", {}))
    per_kwh = values.get("prices.per_kwh")
    return Prices(
        per_hour={_str("prices.per_hour", k): _price(f"prices.per_hour.{k}", v)
                  for k, v in per_hour.items()},
        per_kwh=None if per_kwh is None else _price("prices.per_kwh", per_kwh),
    )


def _regressors(key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of model names, got {value!r}")
    return frozenset(_str(f"{key}[{i}]", v) for i, v in enumerate(value))


_RULE_KEYS = {"name", "metric", "op", "threshold", "window", "for", "resolve", "keep_firing_for",
              "cooldown", "severity", "models", "scope", "action", "relative", "baseline"}


def default_rules(smallest_window: float) -> tuple[AlertRule, ...]:
    """Rules that ship with the service; `[[alerts]]` in the config replaces them.

    One for each detector's output (the per-label detector, the per-value detectors of scores
    and features, Page-Hinkley, score PSI, feature PSI), each asking for retraining (at most
    one request per model per `retraining.cooldown`), and plain thresholds on errors,
    failures, label coverage, cost and idle GPUs.
    """
    w = smallest_window
    return (
        AlertRule("concept-drift", "error_shift", ">", 0.0, w, action="retrain"),
        AlertRule("error-drift", "error_drift", ">", 0.5, w, action="retrain"),
        AlertRule("score-shift", "score_shift", ">", 0.0, w, action="retrain"),
        AlertRule("feature-shift", "feature_shift", ">", 0.0, w, action="retrain"),
        AlertRule("score-drift", "drift_psi", ">", 0.25, w, for_windows=2, resolve=0.1,
                  action="retrain"),
        AlertRule("feature-drift", "drift_psi_max", ">", 0.2, w, for_windows=2, resolve=0.1,
                  action="retrain"),
        AlertRule("error-rate-high", "error_rate", ">", 0.25, w, for_windows=3, resolve=0.15),
        AlertRule("failure-rate-high", "failure_rate", ">", 0.05, w, for_windows=2,
                  resolve=0.02, severity="critical"),
        AlertRule("label-coverage-drop", "label_coverage", "<", -0.5, w, for_windows=5,
                  resolve=-0.2, relative=True),
        AlertRule("cost-per-prediction-jump", "cost_per_prediction_usd", ">", 0.5, w,
                  for_windows=3, resolve=0.2, relative=True),
        AlertRule("gpu-idle", "gpu_util_avg", "<", 0.05, w, for_windows=10, resolve=0.1,
                  severity="info", scope="device", models=("*/gpu*",)),
    )


def _alert_rules(raw: Any, sizes: tuple[float, ...]) -> tuple[AlertRule, ...]:
    if raw is None:
        return default_rules(sizes[0])
    if not isinstance(raw, list):
        raise ConfigError("alerts", "expected [[alerts]] tables")
    rules: list[AlertRule] = []
    for index, item in enumerate(raw):
        rules.append(_alert_rule(index, item, sizes))
    names = [r.name for r in rules]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"alerts ({name})", "rule names must be unique")
    return tuple(rules)


def _alert_rule(index: int, item: Any, sizes: tuple[float, ...]) -> AlertRule:
    where = f"alerts[{index}]"
    item = _table(where, item)
    if isinstance(item.get("name"), str):
        where = f"alerts[{index}] ({item['name']})"
    _reject_unknown(where, item, _RULE_KEYS)
    for key in ("name", "metric", "op", "threshold"):
        if key not in item:
            raise ConfigError(f"{where}.{key}", "required")
    metric = item["metric"]
    if metric not in ALERT_METRICS:
        raise ConfigError(f"{where}.metric", f"unknown metric {metric!r}")
    window = parse_duration(f"{where}.window", item.get("window", sizes[0]))
    if window not in sizes:
        raise ConfigError(f"{where}.window", f"{window:g}s is not one of windows.sizes")
    threshold = _number(f"{where}.threshold", item["threshold"])
    op = _choice(f"{where}.op", item["op"], (">", ">=", "<", "<="))
    resolve = None if "resolve" not in item else _number(f"{where}.resolve", item["resolve"])
    if resolve is not None and (resolve > threshold if op in (">", ">=") else
                                resolve < threshold):
        raise ConfigError(f"{where}.resolve", f"must be on the safe side of the threshold "
                          f"({threshold:g}) for op {op}")
    models = item.get("models", ["*"])
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{where}.models", "expected a non-empty list of name patterns")
    relative = item.get("relative", False)
    if not isinstance(relative, bool):
        raise ConfigError(f"{where}.relative", "expected true or false")
    if metric in STREAMING_METRICS:  # judged as labels arrive: no windows to count
        for key in ("for", "relative", "baseline", "keep_firing_for"):
            if key in item:
                raise ConfigError(f"{where}.{key}", f"does not apply to {metric}, which is "
                                  "judged as the labels arrive, not per window")
    return AlertRule(
        name=_str(f"{where}.name", item["name"]), metric=metric, op=op, threshold=threshold,
        window_s=window, for_windows=_int(f"{where}.for", item.get("for", 1), 1, 10_000),
        resolve=resolve,
        keep_firing_for=_int(f"{where}.keep_firing_for", item.get("keep_firing_for", 0), 0,
                             10_000),
        cooldown_s=_non_negative_duration(f"{where}.cooldown", item.get("cooldown", 0)),
        severity=_choice(f"{where}.severity", item.get("severity", "warning"),
                         ("info", "warning", "critical")),
        models=tuple(_str(f"{where}.models", m) for m in models),
        scope=_choice(f"{where}.scope", item.get("scope", "model"),
                      ("model", "device", "host", "pipeline")),
        action=_choice(f"{where}.action", item.get("action", "alert"), ("alert", "retrain")),
        relative=relative,
        baseline_windows=_int(f"{where}.baseline", item.get("baseline", 10), 1, 10_000),
    )


def _drift(get: Callable[[str, Any, Callable[[str, Any], Any]], Any]) -> Drift:
    default = D.drift
    return Drift(
        reference_size=get("drift.reference_size", default.reference_size,
                           lambda k, v: _int(k, v, 10, 10_000_000)),
        pinned=get("drift.pinned", {}, _pinned),
        psi_bins=get("drift.psi_bins", default.psi_bins, lambda k, v: _int(k, v, 2, 100)),
        feature_psi=get("drift.feature_psi", default.feature_psi,
                        lambda k, v: _bounded(k, v, 0.0, 100.0)),
        min_predictions=get("drift.min_predictions", default.min_predictions,
                            lambda k, v: _int(k, v, 1, 10_000_000)),
        ph_delta=get("drift.ph_delta", default.ph_delta, lambda k, v: _bounded(k, v, 0.0, 1.0)),
        ph_threshold=get("drift.ph_threshold", default.ph_threshold,
                         lambda k, v: _bounded(k, v, 1e-9, 100.0)),
        ph_min_windows=get("drift.ph_min_windows", default.ph_min_windows,
                           lambda k, v: _int(k, v, 1, 10_000)),
        adwin_delta=get("drift.adwin_delta", default.adwin_delta,
                        lambda k, v: _bounded(k, v, 1e-12, 0.5)),
        shift_sd=get("drift.shift_sd", default.shift_sd, lambda k, v: _bounded(k, v, 0.01, 10.0)),
        shift_threshold=get("drift.shift_threshold", default.shift_threshold,
                            lambda k, v: _bounded(k, v, 1.0, 1000.0)),
    )


def _bounded(key: str, value: Any, low: float, high: float) -> float:
    number = _number(key, value)
    if not low <= number <= high:
        raise ConfigError(key, f"must be between {low:g} and {high:g}, got {value!r}")
    return number


def _pinned(key: str, value: Any) -> dict[str, Path]:
    """Model -> JSONL file of reference predictions (one event, or {"event": ...}, per line)."""
    out = {}
    for model, path in _table(key, value).items():
        file = Path(_str(f"{key}.{model}", path))
        if not file.is_file():
            raise ConfigError(f"{key}.{model}", f"file not found: {file}")
        out[model] = file
    return out


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    return float(value)


def _security(env: Mapping[str, str]) -> KafkaSecurity:
    protocol = env.get("FACTORY_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    _choice("FACTORY_KAFKA_SECURITY_PROTOCOL", protocol,
            ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    mechanism = env.get("FACTORY_KAFKA_SASL_MECHANISM")
    if protocol.startswith("SASL"):
        mechanism = _choice("FACTORY_KAFKA_SASL_MECHANISM", (mechanism or "PLAIN").upper(),
                            ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
        for key in ("FACTORY_KAFKA_SASL_USERNAME", "FACTORY_KAFKA_SASL_PASSWORD"):
            if not env.get(key):
                raise ConfigError(key, f"required when the security protocol is {protocol}")
    for key in ("FACTORY_KAFKA_SSL_CAFILE", "FACTORY_KAFKA_SSL_CERTFILE",
                "FACTORY_KAFKA_SSL_KEYFILE"):
        if env.get(key) and not Path(env[key]).is_file():
            raise ConfigError(key, f"file not found: {env[key]}")
    return KafkaSecurity(
        protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=mechanism,
        sasl_username=env.get("FACTORY_KAFKA_SASL_USERNAME"),
        sasl_password=env.get("FACTORY_KAFKA_SASL_PASSWORD"),
        ssl_cafile=env.get("FACTORY_KAFKA_SSL_CAFILE"),
        ssl_certfile=env.get("FACTORY_KAFKA_SSL_CERTFILE"),
        ssl_keyfile=env.get("FACTORY_KAFKA_SSL_KEYFILE"),
    )


def _url(key: str, value: Any) -> str:
    text = _str(key, value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"expected an http(s) URL, got {value!r}")
    return text


def _urls(key: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(key, f"expected a list of URLs, got {value!r}")
    return tuple(_url(f"{key}[{i}]", v) for i, v in enumerate(items))


def _pattern(key: str, value: Any) -> str:
    text = _str(key, value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ConfigError(key, f"not a regular expression: {exc}") from None
    return text


def _names(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of names, got {value!r}")
    return tuple(_str(f"{key}[{i}]", v) for i, v in enumerate(value))


Entry = TypeVar("Entry", "Source", "Webhook")


def _entries(raw: Any, section: str, parse: Callable[[Any, str], Entry]) -> tuple[Entry, ...]:
    """The `[[section]]` tables, each parsed with its place (`sources[1] (name)`) for errors;
    names unique."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(section, f"expected [[{section}]] tables")
    entries = []
    for index, item in enumerate(raw):
        where = f"{section}[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            where = f"{where} ({item['name']})"
        entries.append(parse(_table(where, item), where))
    names = [e.name for e in entries]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{section} ({name})", "names must be unique")
    return tuple(entries)


_S = Source(name="", kind="kserve", topic="")  # the defaults of a source, stated above
_W = Webhook(name="", url="")  # and of a webhook
_SOURCE_KEYS = {"name", "kind", "topic", "features", "version_header", "input", "score_output",
                "class_output", "max_pending", "pairing_timeout"}


def _source(item: dict[str, Any], where: str) -> Source:
    _reject_unknown(where, item, _SOURCE_KEYS)
    for key in ("name", "kind", "topic"):
        if key not in item:
            raise ConfigError(f"{where}.{key}", "required")

    def optional(key: str) -> str | None:
        return _str(f"{where}.{key}", item[key]) if key in item else None

    return Source(
        name=_topic_part(f"{where}.name", item["name"], False),
        kind=_choice(f"{where}.kind", item["kind"], ("kserve", "seldon")),
        topic=_topic_part(f"{where}.topic", item["topic"], False),
        features=_names(f"{where}.features", item.get("features", [])),
        version_header=optional("version_header"), input=optional("input"),
        score_output=optional("score_output"), class_output=optional("class_output"),
        max_pending=_int(f"{where}.max_pending", item.get("max_pending", _S.max_pending), 1,
                         10_000_000),
        pairing_timeout_s=parse_duration(f"{where}.pairing_timeout",
                                         item.get("pairing_timeout", _S.pairing_timeout_s)),
    )


_WEBHOOK_KEYS = {"name", "url", "template", "body", "vars", "secret_env", "headers_env",
                 "max_attempts", "timeout"}


def _webhook(item: dict[str, Any], where: str, env: Mapping[str, str]) -> Webhook:
    _reject_unknown(where, item, _WEBHOOK_KEYS)
    for key in ("name", "url"):
        if key not in item:
            raise ConfigError(f"{where}.{key}", "required")
    template = _choice(f"{where}.template", item.get("template", _W.template),
                       ("airflow", "argo", "github", "custom"))
    body = item.get("body")
    if body is None and template == "custom":
        raise ConfigError(f"{where}.body", "required unless a template (airflow, argo, "
                          "github) is chosen")
    if body is not None:
        body = _table(f"{where}.body", body)
    variables = {_str(f"{where}.vars", k): _str(f"{where}.vars.{k}", v)
                 for k, v in _table(f"{where}.vars", item.get("vars", {})).items()}
    secret = item.get("secret_env")
    headers = {_str(f"{where}.headers_env", k): _str(f"{where}.headers_env.{k}", v)
               for k, v in _table(f"{where}.headers_env", item.get("headers_env", {})).items()}
    for key, variable in ([("secret_env", secret)] if secret is not None else []) + [
            (f"headers_env.{k}", v) for k, v in headers.items()]:
        if not env.get(_str(f"{where}.{key}", variable)):
            raise ConfigError(f"{where}.{key}", f"the environment variable {variable} is not set")
    return Webhook(
        name=_str(f"{where}.name", item["name"]), url=_url(f"{where}.url", item["url"]),
        template=template, body=body, vars=variables, secret_env=secret, headers_env=headers,
        max_attempts=_int(f"{where}.max_attempts", item.get("max_attempts", _W.max_attempts),
                          1, 20),
        timeout_s=_bounded(f"{where}.timeout", parse_duration(
            f"{where}.timeout", item.get("timeout", _W.timeout_s)), 0.001, 60.0),
    )
