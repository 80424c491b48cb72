"""Output records, one per output topic of the contract.

Downstream consumers (alerting, retraining pipelines, dashboards) are written against these;
the generated JSON Schema files under `schemas/json/` are their machine-readable form.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as spec
from typing import Any, ClassVar, Literal

from schemas.fields import constraint


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
    predictions: int | None = None
    failures: int | None = None
    failure_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    labelled: int | None = None
    accuracy: float | None = None
    error_rate: float | None = None
    label_coverage: float | None = None
    label_delay_p50_s: float | None = None
    label_delay_p95_s: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    mae: float | None = None
    rmse: float | None = None
    cost_usd: float | None = None
    cost_per_prediction_usd: float | None = None
    energy_j: float | None = None
    energy_j_per_prediction: float | None = None
    gpu_util_avg: float | None = None
    gpu_util_p95: float | None = None
    mem_util_avg: float | None = None
    idle_share: float | None = None
    training_runs: int | None = None
    training_time_mean_s: float | None = None
    training_time_p50_s: float | None = None
    training_time_max_s: float | None = None
    deployments: int | None = None
    rollbacks: int | None = None
    change_failure_rate: float | None = None
    retrain_lead_time_s: float | None = None
    retrains: int | None = None
    days_since_retrain: float | None = None
    batches: int | None = None
    records: int | None = None
    records_per_s: float | None = None
    bytes_per_s: float | None = None
    pipeline_error_rate: float | None = None
    feedback: int | None = None
    engaged: int | None = None
    satisfaction: float | None = None
    thumbs_up_rate: float | None = None
    engagement_rate: float | None = None
    innovations: int | None = None
    innovation_share: float | None = None
    drift_psi: float | None = spec(default=None, metadata=constraint(doc="PSI of the score"))
    drift_psi_features: dict[str, float] | None = None
    drift_psi_max: float | None = spec(default=None, metadata=constraint(
        doc="the largest PSI of any feature"))
    drifted_feature_share: float | None = None
    dataset_drift: bool | None = None
    error_drift: bool | None = spec(default=None, metadata=constraint(
        doc="Page-Hinkley saw the window error rates rise (in the revision that first "
            "had labels)"))
    error_shift: float | None = spec(default=None, metadata=constraint(
        doc="how far the labelled error rate stands above its level before the last "
            "increase the per-label detector saw (0: none stands), at publication"))


# What an alert rule may watch: every number or flag of a snapshot but the window's identity.
ALERT_METRICS = frozenset(
    name for name, kind in MetricSnapshot.__annotations__.items()
    if name not in {"window_s", "window_start", "window_end", "revision", "ts"}
    and kind in ("int | None", "float | None", "bool | None"))
# Metrics judged as the labels arrive, not per closed window (see `agents.alerts`).
STREAMING_METRICS = frozenset({"error_shift"})


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
