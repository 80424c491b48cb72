"""Output records, one per output topic of the contract.

Downstream consumers (alerting, retraining pipelines, dashboards) are written against these;
the generated JSON Schema files under `schemas/json/` are their machine-readable form.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from dataclasses import field as spec
from typing import Any, ClassVar, Literal

from schemas.fields import constraint

# The ten efficiency metrics of the article the service is built on (`shared/seeds/`), in
# its order: every snapshot metric belongs to one of them (`metric(..., seed, ...)`, 1-10).
SEEDS: tuple[str, ...] = (
    "training time", "data processing speed", "accuracy", "resource utilisation",
    "deployment frequency", "retraining frequency", "cost per prediction", "satisfaction",
    "error rate", "innovation rate")


def metric(unit: str, seed: int, doc: str) -> Any:
    """A metric field of the snapshot: absent (None) when the window has no data for it."""
    if not 1 <= seed <= len(SEEDS):
        raise ValueError(f"seed {seed} is not one of the {len(SEEDS)} metrics")
    return spec(default=None, metadata={**constraint(doc=doc), "unit": unit, "seed": seed})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be accepted, with enough context to find and replay it."""

    TOPIC: ClassVar[str] = "deadletter"

    reason: str = spec(metadata=constraint(doc="what is wrong, naming the field"))
    topic: str = spec(metadata=constraint(doc="source topic"))
    partition: int = spec(metadata=constraint(ge=0))
    offset: int = spec(metadata=constraint(ge=0))
    ts: float = spec(metadata=constraint(ge=0, doc="wall-clock time of dead-lettering"))
    value: str = spec(metadata=constraint(doc="the rejected event or message, as text"))
    field: str | None = spec(default=None, metadata=constraint(doc="the offending field"))
    batch_index: int | None = spec(
        default=None, metadata=constraint(ge=0, doc="position of the event in a batch message")
    )
    key: str | None = None
    truncated: bool = False
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    count: int = spec(default=1, metadata=constraint(
        ge=1, doc="events this record stands for: past the first few bad events of one "
                  "message, the rest share one record (batch_index is the first of them)"))


@dataclass(frozen=True, slots=True)
class MetricSnapshot:
    """All metrics of one entity over one event-time window.

    The entity is a model (`_factory` for the rollup, `_unattributed` for telemetry that names
    no model), a device, a host or a pipeline stage, as `scope` says.
    """

    TOPIC: ClassVar[str] = "metrics"

    scope: Literal["model", "device", "host", "pipeline"]
    window_s: float = spec(metadata=constraint(gt=0))
    window_start: float = spec(metadata=constraint(ge=0))
    window_end: float = spec(metadata=constraint(ge=0))
    revision: int = spec(metadata=constraint(ge=0, doc="bumped each time the window changes"))
    ts: float = spec(metadata=constraint(ge=0, doc="wall-clock time of publication"))
    model: str | None = spec(default=None, metadata=constraint(doc="scope model"))
    host: str | None = spec(default=None, metadata=constraint(doc="scope device or host"))
    device: str | None = spec(default=None, metadata=constraint(doc="scope device"))
    pipeline: str | None = spec(default=None, metadata=constraint(doc="scope pipeline"))
    stage: str | None = spec(default=None, metadata=constraint(doc="scope pipeline"))
    # The metrics: one line each, with unit, seed metric (1-10, the article's ten numbers)
    # and meaning. The JSON Schema, the alertable set, `/metrics` and the dashboard's units
    # are all derived from these lines (`METRICS`).
    predictions: int | None = metric("count", 9, "prediction events in the window")
    failures: int | None = metric("count", 9, "predictions with status error")
    failure_rate: float | None = metric("share", 9, "failures / predictions")
    latency_p50_ms: float | None = metric("ms", 9, "median latency")
    latency_p95_ms: float | None = metric("ms", 9, "95th percentile latency")
    latency_p99_ms: float | None = metric("ms", 9, "99th percentile latency")
    labelled: int | None = metric("count", 3, "predictions whose label arrived")
    accuracy: float | None = metric("share", 3, "labelled predictions equal to their label")
    error_rate: float | None = metric("share", 9, "1 - accuracy")
    label_coverage: float | None = metric("share", 3, "labelled / predictions")
    label_delay_p50_s: float | None = metric("s", 3, "median time from prediction to label")
    label_delay_p95_s: float | None = metric("s", 3, "95th percentile label delay")
    precision: float | None = metric("share", 3, "precision (binary, or macro over classes)")
    recall: float | None = metric("share", 3, "recall (binary, or macro over classes)")
    f1: float | None = metric("share", 3, "F1 (binary, or macro over classes)")
    mae: float | None = metric("label units", 3, "mean absolute error (regressors)")
    rmse: float | None = metric("label units", 3, "root mean squared error (regressors)")
    cost_usd: float | None = metric("usd", 7, "direct cost plus compute cost")
    cost_per_prediction_usd: float | None = metric("usd", 7, "cost_usd / predictions")
    energy_j: float | None = metric("J", 4, "energy drawn: power x interval")
    energy_j_per_prediction: float | None = metric("J", 4, "energy_j / predictions")
    gpu_util_avg: float | None = metric("share", 4, "time-weighted mean utilisation")
    gpu_util_p95: float | None = metric("share", 4, "95th percentile utilisation")
    mem_util_avg: float | None = metric("share", 4, "mean memory used / total")
    idle_share: float | None = metric("share", 4, "share of time under 5 % utilisation")
    training_runs: int | None = metric("count", 1, "training runs finished")
    training_time_mean_s: float | None = metric("s", 1, "mean training run duration")
    training_time_p50_s: float | None = metric("s", 1, "median training run duration")
    training_time_max_s: float | None = metric("s", 1, "longest training run")
    deployments: int | None = metric("count", 5, "deployed events")
    rollbacks: int | None = metric("count", 5, "rolled_back events")
    change_failure_rate: float | None = metric("share", 5, "rollbacks / deployments")
    retrain_lead_time_s: float | None = metric(
        "s", 6, "from a retraining request to the deployment it produced")
    retrains: int | None = metric("count", 6, "training_finished events")
    days_since_retrain: float | None = metric("days", 6, "age of the newest retrain")
    batches: int | None = metric("count", 2, "pipeline batches")
    records: int | None = metric("count", 2, "records processed")
    records_per_s: float | None = metric("1/s", 2, "records / processing seconds")
    bytes_per_s: float | None = metric("bytes/s", 2, "bytes / processing seconds")
    pipeline_error_rate: float | None = metric("share", 2, "failed batches / batches")
    feedback: int | None = metric("count", 8, "feedback events")
    engaged: int | None = metric("count", 8, "feedback events showing engagement")
    satisfaction: float | None = metric("rating", 8, "mean rating (1 to 5)")
    thumbs_up_rate: float | None = metric("share", 8, "ups / (ups + downs)")
    engagement_rate: float | None = metric("share", 8, "engaged / predictions")
    innovations: int | None = metric("count", 10, "deployments of new models or features")
    innovation_share: float | None = metric("share", 10, "innovations / deployments")
    score_mean: float | None = metric("score", 3, "mean score (to the histogram's 0.01)")
    drift_psi: float | None = metric("psi", 3, "PSI of the score against the reference")
    drift_psi_features: dict[str, float] | None = metric(  # noqa: RUF009 (a field spec)
        "psi", 3, "PSI of each numeric feature against the reference")
    drift_psi_max: float | None = metric("psi", 3, "the largest PSI of any feature")
    drifted_feature_share: float | None = metric(
        "share", 3, "features whose PSI passes drift.feature_psi")
    dataset_drift: bool | None = metric("flag", 3, "over half the features drift")
    error_drift: bool | None = metric(
        "flag", 3, "Page-Hinkley saw the window error rates rise (in the revision that first "
        "had enough labels)")
    error_shift: float | None = metric(
        "share", 3, "how far the labelled error rate stands above its level before the last "
        "increase the per-label detector saw (0: none stands), at publication")
    score_shift: float | None = metric(
        "sd", 3, "how far the scores' mean stands from the reference's, in its standard "
        "deviations, once the per-value detector saw it move (0: no shift stands)")
    feature_shift: float | None = metric(
        "sd", 3, "the largest such shift of any numeric feature's mean (0: none stands)")


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """What the registry says of one metric."""

    name: str
    unit: str
    seed: int  # which of the ten efficiency metrics it belongs to (1-10)
    help: str
    kind: Literal["number", "flag", "map"]


def _registry() -> dict[str, MetricInfo]:
    kinds: dict[str, Literal["number", "flag", "map"]] = {
        "int | None": "number", "float | None": "number", "bool | None": "flag"}
    return {f.name: MetricInfo(f.name, f.metadata["unit"], f.metadata["seed"],
                               f.metadata["doc"],
                               kinds.get(MetricSnapshot.__annotations__[f.name], "map"))
            for f in fields(MetricSnapshot) if "unit" in f.metadata}


METRICS = _registry()


# What an alert rule may watch: every metric that is a number or a flag.
ALERT_METRICS = frozenset(name for name, m in METRICS.items() if m.kind != "map")
# Metrics judged as the labels arrive, not per closed window (see `agents.alerts`).
STREAMING_METRICS = frozenset({"error_shift", "score_shift", "feature_shift"})


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule starting or ending to fire; published once per transition."""

    TOPIC: ClassVar[str] = "alerts"

    alert_id: str = spec(metadata=constraint(
        doc="one per episode: the entity, the rule and the episode's first window start; "
            "the firing and the resolved record of an episode share it"))
    rule: str
    model: str = spec(metadata=constraint(
        doc="the entity's names joined by '/': a model, host/device, host or pipeline/stage"))
    state: Literal["firing", "resolved"]
    severity: str
    metric: str = spec(metadata=constraint(doc="the snapshot field the rule watches"))
    value: float
    threshold: float
    window_start: float
    window_end: float
    ts: float
    scope: Literal["model", "device", "host", "pipeline"] = "model"
    relative: bool = spec(default=False, metadata=constraint(
        doc="true when the threshold applies to the change over the rule's baseline"))


@dataclass(frozen=True, slots=True)
class RetrainingRequest:
    """Drift warranted retraining of a model; at most one per model per cooldown."""

    TOPIC: ClassVar[str] = "retraining"

    request_id: str
    model: str
    version: str
    rule: str
    reason: str
    window_start: float
    window_end: float
    ts: float
    evidence: dict[str, Any] = spec(default_factory=dict)


OUTPUT_RECORDS: tuple[type[Any], ...] = (DeadLetter, MetricSnapshot, Alert, RetrainingRequest)
