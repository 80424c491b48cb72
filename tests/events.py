"""Valid example events of every input topic, shared by unit and integration tests."""

from __future__ import annotations

import time
from typing import Any

# An hour ago, on the hour: within the retention and max_age (events older than `max_age`
# before now are dead-lettered), so the same events serve unit and integration tests.
T0 = float(int(time.time()) // 3600 * 3600 - 3600)

VALID: dict[str, dict[str, Any]] = {
    "predictions": {"event_id": "p-1", "ts": T0 + 0.5, "model": "churn", "version": "v3",
                    "latency_ms": 12.5, "status": "ok", "predicted": 1, "score": 0.83,
                    "features": {"age": 41.0, "tenure": 3}, "cost_usd": 0.0001,
                    "segment": "eu", "extra_field": "kept"},
    "labels": {"event_id": "p-1", "ts": T0 + 900.0, "label": 1, "model": "churn"},
    "feedback": {"ts": T0 + 10.0, "model": "churn", "event_id": "p-1", "version": "v3",
                 "rating": 4, "thumbs": 1, "engaged": True},
    "deployments": {"ts": int(T0), "model": "churn", "version": "v4",
                    "kind": "training_finished", "run_id": "r-9", "duration_s": 5400.0,
                    "trigger": "drift", "change": "retrain"},
    "telemetry": {"ts": T0, "host": "node-1", "device": "gpu0", "kind": "gpu",
                  "util": 87.5, "interval_s": 10.0, "model": "churn",
                  "device_name": "NVIDIA H200", "mem_used_bytes": 80_000_000_000,
                  "mem_total_bytes": 141_000_000_000, "power_w": 650.0},
    "pipeline": {"ts": T0, "pipeline": "features", "stage": "join",
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
    ("predictions", "predicted", "c" * 513, "longer than 512 characters"),
    ("labels", "label", "c" * 513, "longer than 512 characters"),
    # every number that passes can be summed and encoded (hostile-input findings, issue 11)
    ("predictions", "predicted", 1e20, "outside +-2**53"),
    ("predictions", "predicted", 2**60, "outside +-2**53"),
    ("predictions", "score", -1e300, "outside +-2**53"),
    ("predictions", "features", {"x": 1e300}, "outside +-2**53"),
    ("predictions", "cost_usd", 1e308, "outside +-2**53"),
    ("predictions", "cost_usd", 1e7, "must be <= 1e+06"),
    ("predictions", "latency_ms", 1e12, "must be <= 8.64e+07"),
    ("pipeline", "records", 1e20, "outside +-2**53"),
    ("pipeline", "records", 10**13, "must be <= 1e+12"),
    ("pipeline", "bytes", 2 * 10**15, "must be <= 1e+15"),
    ("telemetry", "interval_s", 1e308, "outside +-2**53"),
    ("telemetry", "interval_s", 1e5, "must be <= 86400"),
    ("telemetry", "power_w", 1e7, "must be <= 1e+06"),
    ("deployments", "duration_s", 1e9, "must be <= 3.16224e+07"),
    # names: reserved prefix, invisible characters that make two names look alike
    ("predictions", "model", "_factory", "reserved"),
    ("telemetry", "host", "_unattributed", "reserved"),
    ("pipeline", "stage", "_x", "reserved"),
    ("labels", "model", "_factory", "reserved"),
    ("predictions", "model", "fraud\u202e", "U+202E"),
    ("predictions", "model", "fra\u200bud", "U+200B"),
    ("telemetry", "device", "gpu\x000", "U+0000"),
    ("pipeline", "pipeline", "etl\nload", "U+000A"),
    ("predictions", "version", "v1\u2066", "U+2066"),
    ("labels", "event_id", "e\ufeff1", "U+FEFF"),
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
