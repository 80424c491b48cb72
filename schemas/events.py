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


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model answer."""

    TOPIC: ClassVar[str] = "predictions"

    event_id: str = field(metadata=constraint(doc="unique id; a repeated id is counted once"))
    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    model: str
    version: str
    latency_ms: float | None = field(default=None, metadata=constraint(ge=0))
    status: Literal["ok", "error"] = "ok"
    predicted: Scalar | None = None
    score: float | None = field(default=None, metadata=constraint(doc="the model's score"))
    features: dict[str, float] | None = None
    cost_usd: float | None = field(default=None, metadata=constraint(ge=0))
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for an earlier prediction, possibly hours late."""

    TOPIC: ClassVar[str] = "labels"

    event_id: str
    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    label: Scalar
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    """A user's reaction to a model's answer."""

    TOPIC: ClassVar[str] = "feedback"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    model: str
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
    model: str
    version: str
    kind: DeploymentKind
    run_id: str | None = field(default=None, metadata=constraint(doc="pairs start and finish"))
    duration_s: float | None = field(default=None, metadata=constraint(ge=0))
    trigger: Literal["scheduled", "drift", "manual"] | None = None
    change: Literal["new_model", "new_features", "retrain", "fix"] | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One resource sample of a GPU or CPU over `interval_s` seconds."""

    TOPIC: ClassVar[str] = "telemetry"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    host: str
    device: str
    kind: Literal["gpu", "cpu"]
    util: float = field(metadata=constraint(ge=0, le=100, doc="utilisation in percent"))
    interval_s: float = field(metadata=constraint(gt=0))
    model: str | None = None
    device_name: str | None = None
    mem_used_bytes: int | None = field(default=None, metadata=constraint(ge=0))
    mem_total_bytes: int | None = field(default=None, metadata=constraint(gt=0))
    power_w: float | None = field(default=None, metadata=constraint(ge=0))


@dataclass(frozen=True, slots=True)
class PipelineBatch:
    """One batch processed by one stage of a data pipeline."""

    TOPIC: ClassVar[str] = "pipeline"

    ts: float = field(metadata=constraint(ge=0, doc=TS_DOC))
    pipeline: str
    stage: str
    records: int = field(metadata=constraint(ge=0))
    duration_s: float = field(metadata=constraint(ge=0))
    bytes: int | None = field(default=None, metadata=constraint(ge=0))
    status: Literal["ok", "error"] = "ok"


INPUT_RECORDS: tuple[type[Any], ...] = (
    Prediction,
    Label,
    Feedback,
    Deployment,
    Telemetry,
    PipelineBatch,
)
