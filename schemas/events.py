"""Input event records, one per input topic of the contract.

The hot path never instantiates these classes: validators compiled from them check decoded
dicts in place. The classes exist for typed producers (the client library), for the JSON
Schema files, and as the single written-down definition of each payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from schemas.fields import Scalar, constraint

TS_DOC = "event time, seconds since the Unix epoch (UTC)"
DAY_S = 86400.0
# Names of entities (models, hosts, devices, pipelines, stages): no '_' prefix, no invisible
# characters. Numeric limits below keep every sum and product a window computes finite and
# within 64 bits (the tightest: cost, power and records, which are summed per window).
NAME = constraint(name=True)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model answer."""

    TOPIC: ClassVar[str] = "predictions"

    event_id: str = field(metadata=constraint(doc="unique id; a repeated id is counted once"))
    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    model: str = field(metadata=NAME)
    version: str
    latency_ms: float | None = field(default=None, metadata=constraint(ge=0, le=DAY_S * 1000))
    status: Literal["ok", "error"] = "ok"
    predicted: Scalar | None = None
    score: float | None = field(default=None, metadata=constraint(doc="the model's score"))
    features: dict[str, float] | None = None
    cost_usd: float | None = field(default=None, metadata=constraint(ge=0, le=1e6))
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for an earlier prediction, possibly hours late."""

    TOPIC: ClassVar[str] = "labels"

    event_id: str
    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    label: Scalar
    model: str | None = field(default=None, metadata=constraint(
        name=True, doc="the prediction's model; a label naming another is dead-lettered"))


@dataclass(frozen=True, slots=True)
class Feedback:
    """A user's reaction to a model's answer."""

    TOPIC: ClassVar[str] = "feedback"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    model: str = field(metadata=NAME)
    event_id: str | None = None
    version: str | None = None
    rating: int | None = field(default=None, metadata=constraint(ge=1, le=5))
    thumbs: Literal[1, -1] | None = None
    engaged: bool | None = None


DeploymentKind = Literal[
    "training_started", "training_finished", "training_failed", "deployed", "rolled_back"
]


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model lifecycle step: training runs, deployments and rollbacks."""

    TOPIC: ClassVar[str] = "deployments"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    model: str = field(metadata=NAME)
    version: str
    kind: DeploymentKind
    run_id: str | None = field(default=None, metadata=constraint(doc="pairs start and finish"))
    duration_s: float | None = field(default=None, metadata=constraint(ge=0, le=366 * DAY_S))
    trigger: Literal["scheduled", "drift", "manual"] | None = None
    change: Literal["new_model", "new_features", "retrain", "fix"] | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One resource sample of a GPU or CPU over `interval_s` seconds."""

    TOPIC: ClassVar[str] = "telemetry"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    host: str = field(metadata=NAME)
    device: str = field(metadata=NAME)
    kind: Literal["gpu", "cpu"]
    util: float = field(metadata=constraint(ge=0, le=100, doc="utilisation in percent"))
    interval_s: float = field(metadata=constraint(gt=0, le=DAY_S))
    model: str | None = field(default=None, metadata=NAME)
    device_name: str | None = None
    mem_used_bytes: int | None = field(default=None, metadata=constraint(ge=0))
    mem_total_bytes: int | None = field(default=None, metadata=constraint(gt=0))
    power_w: float | None = field(default=None, metadata=constraint(ge=0, le=1e6))


@dataclass(frozen=True, slots=True)
class PipelineBatch:
    """One batch processed by one stage of a data pipeline."""

    TOPIC: ClassVar[str] = "pipeline"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    pipeline: str = field(metadata=NAME)
    stage: str = field(metadata=NAME)
    records: int = field(metadata=constraint(ge=0, le=1e12))
    duration_s: float = field(metadata=constraint(ge=0, le=DAY_S))
    bytes: int | None = field(default=None, metadata=constraint(ge=0, le=1e15))
    status: Literal["ok", "error"] = "ok"


INPUT_RECORDS: tuple[type[Any], ...] = (
    Prediction,
    Label,
    Feedback,
    Deployment,
    Telemetry,
    PipelineBatch,
)
