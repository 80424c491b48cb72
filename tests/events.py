"""Valid example events of every input topic, shared by unit and integration tests."""

from __future__ import annotations

from typing import Any

VALID: dict[str, dict[str, Any]] = {
    "predictions": {"event_id": "p-1", "ts": 1_700_000_000.5, "model": "churn", "version": "v3",
                    "latency_ms": 12.5, "status": "ok", "predicted": 1, "score": 0.83,
                    "features": {"age": 41.0, "tenure": 3}, "cost_usd": 0.0001,
                    "segment": "eu", "extra_field": "kept"},
    "labels": {"event_id": "p-1", "ts": 1_700_000_900.0, "label": 1, "model": "churn"},
    "feedback": {"ts": 1_700_000_010.0, "model": "churn", "event_id": "p-1", "version": "v3",
                 "rating": 4, "thumbs": 1, "engaged": True},
    "deployments": {"ts": 1_700_000_000, "model": "churn", "version": "v4",
                    "kind": "training_finished", "run_id": "r-9", "duration_s": 5400.0,
                    "trigger": "drift", "change": "retrain"},
    "telemetry": {"ts": 1_700_000_000.0, "host": "node-1", "device": "gpu0", "kind": "gpu",
                  "util": 87.5, "interval_s": 10.0, "model": "churn",
                  "device_name": "NVIDIA H200", "mem_used_bytes": 80_000_000_000,
                  "mem_total_bytes": 141_000_000_000, "power_w": 650.0},
    "pipeline": {"ts": 1_700_000_000.0, "pipeline": "features", "stage": "join",
                 "records": 50_000, "duration_s": 2.5, "bytes": 12_000_000, "status": "ok"},
}

# (topic, field, bad value, words the reason must hold): one wrong value per case.
INVALID_FIELDS: list[tuple[str, str, Any, str]] = [
    ("predictions", "ts", "yesterday", "expected a number"),
    ("predictions", "model", 7, "expected a string"),
    ("predictions", "latency_ms", -1.0, "must be >= 0"),
    ("predictions", "status", "maybe", "expected one of"),
    ("predictions", "cost_usd", -0.5, "must be >= 0"),
    ("predictions", "features", {"age": "old"}, "expected a number"),
    ("predictions", "predicted", [1, 2], "expected a string, number or boolean"),
    ("labels", "label", None, "required field is null"),
    ("labels", "ts", True, "expected a number"),
    ("feedback", "rating", 9, "must be <= 5"),
    ("feedback", "thumbs", 0, "expected one of"),
    ("feedback", "engaged", "yes", "expected true or false"),
    ("deployments", "kind", "shipped", "expected one of"),
    ("deployments", "duration_s", -30.0, "must be >= 0"),
    ("telemetry", "util", 140.0, "must be <= 100"),
    ("telemetry", "interval_s", 0, "must be > 0"),
    ("telemetry", "interval_s", -10.0, "must be > 0"),
    ("pipeline", "duration_s", -2.0, "must be >= 0"),
    ("pipeline", "records", 2.5, "expected an integer"),
    ("predictions", "model", "m" * 100_000, "longer than 512 characters"),
    ("labels", "event_id", "e" * 513, "longer than 512 characters"),
]

REQUIRED: dict[str, list[str]] = {
    "predictions": ["event_id", "ts", "model", "version"],
    "labels": ["event_id", "ts", "label"],
    "feedback": ["ts", "model"],
    "deployments": ["ts", "model", "version", "kind"],
    "telemetry": ["ts", "host", "device", "kind", "util", "interval_s"],
    "pipeline": ["ts", "pipeline", "stage", "records", "duration_s"],
}


def with_field(topic: str, name: str, value: Any) -> dict[str, Any]:
    event = dict(VALID[topic])
    event[name] = value
    return event


def without(topic: str, name: str) -> dict[str, Any]:
    return {k: v for k, v in VALID[topic].items() if k != name}
