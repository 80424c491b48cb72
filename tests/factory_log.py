"""A realistic, seeded event log of a small AI factory, and its metrics computed independently.

The expected values come from numpy and scikit-learn over the plain event lists, never from
the service's aggregators, so a mistake in either shows up as a difference.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score

WINDOW = 60.0
PRICES = {"NVIDIA H200": 3.6, "cpu": 0.1}
PER_KWH = 0.12
REGRESSORS = ("demand",)
CLASSES = ["billing", "support", "sales", "other"]


@dataclass
class FactoryLog:
    start: float
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    unknown_labels: int = 0
    duplicate_predictions: int = 0

    def config_toml(self) -> str:
        return (f'regressors = ["demand"]\n[windows]\nsizes = ["{WINDOW:g}s"]\ngrace = "1s"\n'
                f'[prices]\nper_hour = {{ "NVIDIA H200" = {PRICES["NVIDIA H200"]}, '
                f'cpu = {PRICES["cpu"]} }}\nper_kwh = {PER_KWH}\n[worker]\nidle = "2s"\n')


def generate(seed: int, n_predictions: int, start: float, span_s: float = 300.0) -> FactoryLog:
    """Predictions of three models (binary, multi-class, regressor) with late labels and
    retries, feedback, training runs and deployments, GPU and CPU telemetry, pipeline batches.
    """
    rng = random.Random(seed)
    log = FactoryLog(start)
    ev = log.events
    for i in range(n_predictions):
        model = rng.choice(["churn", "intent", "demand"])
        ts = start + rng.uniform(0, span_s)
        p: dict[str, Any] = {"event_id": f"{seed}-{i}", "ts": ts, "model": model,
                             "version": "v1", "status": "error" if rng.random() < 0.03 else "ok"}
        if rng.random() < 0.9:
            p["latency_ms"] = rng.lognormvariate(3, 0.8)
        if rng.random() < 0.5:
            p["cost_usd"] = rng.uniform(0, 0.002)
        if model == "churn":
            truth = int(rng.random() < 0.3)
            p["predicted"] = truth if rng.random() < 0.8 else 1 - truth
        elif model == "intent":
            truth = rng.choice(CLASSES)
            p["predicted"] = truth if rng.random() < 0.7 else rng.choice(CLASSES)
        else:
            truth = round(rng.gauss(100, 20), 3)
            p["predicted"] = round(truth + rng.gauss(0, 5), 3)
        ev["predictions"].append(p)
        if rng.random() < 0.02:
            ev["predictions"].append(dict(p))  # a producer retry
            log.duplicate_predictions += 1
        if rng.random() < 0.7:
            label = {"event_id": p["event_id"], "ts": ts + rng.expovariate(1 / 600),
                     "label": truth}
            ev["labels"].append(label)
            if rng.random() < 0.05:
                ev["labels"].append(dict(label))
    for i in range(10):
        ev["labels"].append({"event_id": f"unknown-{i}", "ts": start + 10, "label": 1})
        log.unknown_labels += 1
    for _ in range(n_predictions // 10):
        f: dict[str, Any] = {"ts": start + rng.uniform(0, span_s),
                             "model": rng.choice(["churn", "intent", "demand"])}
        if rng.random() < 0.6:
            f["rating"] = rng.randint(1, 5)
        if rng.random() < 0.6:
            f["thumbs"] = rng.choice([1, -1])
        if rng.random() < 0.5:
            f["engaged"] = rng.random() < 0.5
        ev["feedback"].append(f)
    for r in range(6):
        model = rng.choice(["churn", "intent"])
        began = start + rng.uniform(0, span_s / 2)
        took = rng.uniform(20, span_s / 2)
        ev["deployments"].append({"ts": began, "model": model, "version": f"v{r + 2}",
                                  "kind": "training_started", "run_id": f"run-{r}"})
        finish: dict[str, Any] = {"ts": began + took, "model": model, "version": f"v{r + 2}",
                                  "kind": "training_finished", "run_id": f"run-{r}"}
        if r % 2:
            finish["duration_s"] = round(took, 3)
        ev["deployments"].append(finish)
        ev["deployments"].append({"ts": began + took + 5, "model": model, "version": f"v{r + 2}",
                                  "kind": "deployed",
                                  "change": ["new_model", "retrain", "new_features"][r % 3]})
    ev["deployments"].append({"ts": start + span_s - 30, "model": "churn", "version": "v3",
                              "kind": "rolled_back"})
    devices = [("node-a", "gpu0", "churn"), ("node-a", "gpu1", "intent"),
               ("node-b", "gpu0", "demand"), ("node-b", "gpu1", None)]
    for t in np.arange(start, start + span_s, 10.0).tolist():
        for host, device, model in devices:
            util = 0.0 if rng.random() < 0.15 else rng.uniform(5, 100)
            ev["telemetry"].append({"ts": t, "host": host, "device": device, "kind": "gpu",
                                    "util": round(util, 2), "interval_s": 10.0, "model": model,
                                    "device_name": "NVIDIA H200",
                                    "mem_used_bytes": rng.randint(10**9, 140 * 10**9),
                                    "mem_total_bytes": 141 * 10**9,
                                    "power_w": rng.uniform(100, 700)})
        ev["telemetry"].append({"ts": t, "host": "node-a", "device": "cpu", "kind": "cpu",
                                "util": rng.uniform(0, 100), "interval_s": 10.0,
                                "model": "churn"})
    for _ in range(n_predictions // 20):
        ev["pipeline"].append({"ts": start + rng.uniform(0, span_s),
                               "pipeline": rng.choice(["features", "training-data"]),
                               "stage": rng.choice(["extract", "join"]),
                               "records": rng.randint(100, 100_000),
                               "duration_s": rng.uniform(0.1, 10),
                               "bytes": rng.randint(10**4, 10**8),
                               "status": "error" if rng.random() < 0.05 else "ok"})
    return log


def _win(ts: float) -> float:
    return math.floor(ts / WINDOW) * WINDOW


def _lower(values: list[float], q: float) -> float | None:
    return float(np.quantile(np.array(values), q, method="lower")) if values else None


def _weighted_quantile(values: list[float], weights: list[float], q: float) -> float | None:
    if not values:
        return None
    order = np.argsort(values)
    v, w = np.array(values)[order], np.array(weights)[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, q * cum[-1] - 1e-9)])


def _price(t: dict[str, Any]) -> float:
    return PRICES.get(t.get("device_name") or "", PRICES.get(t["kind"], math.nan))


def expected(log: FactoryLog) -> dict[tuple[str, str, float], dict[str, Any]]:
    """(scope, name, window_start) -> expected metric fields."""
    seen: dict[str, dict[str, Any]] = {}
    for p in log.events["predictions"]:
        seen.setdefault(p["event_id"], p)
    labels: dict[str, dict[str, Any]] = {}
    for y in log.events["labels"]:
        if y["event_id"] in seen:
            labels.setdefault(y["event_id"], y)
    out: dict[tuple[str, str, float], dict[str, Any]] = {}
    by_model: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for p in seen.values():
        by_model[(p["model"], _win(p["ts"]))].append(p)
        by_model[("_factory", _win(p["ts"]))].append(p)
    telemetry: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for t in log.events["telemetry"]:
        telemetry[(t.get("model") or "_unattributed", _win(t["ts"]))].append(t)
        telemetry[("_factory", _win(t["ts"]))].append(t)
    feedback: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for f in log.events["feedback"]:
        feedback[(f["model"], _win(f["ts"]))].append(f)
        feedback[("_factory", _win(f["ts"]))].append(f)
    for key in set(by_model) | set(telemetry) | set(feedback):
        model, start = key
        preds = by_model.get(key, [])
        row: dict[str, Any] = {}
        n = len(preds)
        if preds:
            lat = [p["latency_ms"] for p in preds if "latency_ms" in p]
            row.update(predictions=n, failures=sum(p["status"] == "error" for p in preds),
                       latency_p50_ms=_lower(lat, 0.5), latency_p95_ms=_lower(lat, 0.95),
                       latency_p99_ms=_lower(lat, 0.99))
            row["failure_rate"] = row["failures"] / n
            pairs = [(p, labels[p["event_id"]]) for p in preds if p["event_id"] in labels]
            if pairs:
                y_pred = [p["predicted"] for p, _ in pairs]
                y_true = [y["label"] for _, y in pairs]
                classified = [(a, b) for (p, y), a, b in zip(pairs, y_pred, y_true, strict=True)
                              if p["model"] not in REGRESSORS]
                acc = (float(np.mean([a == b for a, b in classified])) if classified else None)
                delays = [y["ts"] - p["ts"] for p, y in pairs]
                row.update(labelled=len(pairs), accuracy=acc,
                           error_rate=None if acc is None else 1 - acc,
                           label_coverage=len(pairs) / n,
                           label_delay_p50_s=_lower(delays, 0.5),
                           label_delay_p95_s=_lower(delays, 0.95))
                if model in REGRESSORS:
                    err = np.array(y_pred) - np.array(y_true)
                    row.update(mae=float(np.mean(np.abs(err))),
                               rmse=float(np.sqrt(np.mean(err**2))))
                elif model != "_factory":
                    avg = {"average": "binary"} if model == "churn" else {"average": "macro"}
                    row.update(
                        precision=precision_score(y_true, y_pred, zero_division=0, **avg),
                        recall=recall_score(y_true, y_pred, zero_division=0, **avg),
                        f1=f1_score(y_true, y_pred, zero_division=0, **avg))
        direct = sum(p.get("cost_usd", 0.0) for p in preds)
        samples = telemetry.get(key, [])
        energy = sum(t.get("power_w", 0.0) * t["interval_s"] for t in samples)
        compute = sum(t["interval_s"] / 3600 * _price(t) for t in samples)
        if samples or preds:
            row["cost_usd"] = direct + compute + energy / 3.6e6 * PER_KWH
            row["cost_per_prediction_usd"] = row["cost_usd"] / n if n else None
        if samples:
            gpu = [t for t in samples if t["kind"] == "gpu"]
            secs = sum(t["interval_s"] for t in gpu)
            row.update(energy_j=energy,
                       gpu_util_avg=sum(t["util"] / 100 * t["interval_s"] for t in gpu) / secs,
                       idle_share=sum(t["interval_s"] for t in gpu if t["util"] < 5) / secs,
                       gpu_util_p95=_weighted_quantile([t["util"] / 100 for t in gpu],
                                                       [t["interval_s"] for t in gpu], 0.95),
                       mem_util_avg=float(np.mean([t["mem_used_bytes"] / t["mem_total_bytes"]
                                                   for t in gpu])))
            row["energy_j_per_prediction"] = energy / n if n else None
        fb = feedback.get(key, [])
        if fb:
            ratings = [f["rating"] for f in fb if "rating" in f]
            ups = sum(f.get("thumbs") == 1 for f in fb)
            downs = sum(f.get("thumbs") == -1 for f in fb)
            engaged = sum(f.get("engaged") is True for f in fb)
            row.update(feedback=len(fb), engaged=engaged,
                       satisfaction=float(np.mean(ratings)) if ratings else None,
                       thumbs_up_rate=ups / (ups + downs) if ups + downs else None,
                       engagement_rate=engaged / n if n else None)
        out[("model", model, start)] = row
    _lifecycle(log, out)
    _devices(log, out)
    _pipelines(log, out)
    return out


def _lifecycle(log: FactoryLog, out: dict[tuple[str, str, float], dict[str, Any]]) -> None:
    starts = {d["run_id"]: d["ts"] for d in log.events["deployments"]
              if d["kind"] == "training_started"}
    rows: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for d in log.events["deployments"]:
        rows[(d["model"], _win(d["ts"]))].append(d)
    for (model, start), steps in rows.items():
        durations = [d.get("duration_s", d["ts"] - starts[d["run_id"]])
                     for d in steps if d["kind"] == "training_finished"]
        deployed = [d for d in steps if d["kind"] == "deployed"]
        rollbacks = sum(d["kind"] == "rolled_back" for d in steps)
        innovations = sum(d.get("change") in ("new_model", "new_features") for d in deployed)
        row = out.setdefault(("model", model, start), {})
        row.update(training_runs=len(durations), retrains=len(durations),
                   training_time_mean_s=float(np.mean(durations)) if durations else None,
                   training_time_p50_s=_lower(durations, 0.5),
                   training_time_max_s=max(durations) if durations else None,
                   deployments=len(deployed), rollbacks=rollbacks, innovations=innovations,
                   change_failure_rate=rollbacks / len(deployed) if deployed else None,
                   innovation_share=innovations / len(deployed) if deployed else None)


def _devices(log: FactoryLog, out: dict[tuple[str, str, float], dict[str, Any]]) -> None:
    """Devices average all their samples, hosts their GPU samples; both count every
    sample's energy and compute cost."""
    rows: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for t in log.events["telemetry"]:
        rows[("device", f"{t['host']}/{t['device']}", _win(t["ts"]))].append(t)
        rows[("host", t["host"], _win(t["ts"]))].append(t)
    for (scope, name, start), samples in rows.items():
        used = samples if scope == "device" else [t for t in samples if t["kind"] == "gpu"]
        secs = sum(t["interval_s"] for t in used)
        mem = [t["mem_used_bytes"] / t["mem_total_bytes"] for t in used
               if "mem_used_bytes" in t]
        energy = sum(t.get("power_w", 0.0) * t["interval_s"] for t in samples)
        compute = sum(t["interval_s"] / 3600 * _price(t) for t in samples)
        out[(scope, name, start)] = {
            "gpu_util_avg": sum(t["util"] / 100 * t["interval_s"] for t in used) / secs
            if secs else None,
            "idle_share": sum(t["interval_s"] for t in used if t["util"] < 5) / secs
            if secs else None,
            "mem_util_avg": float(np.mean(mem)) if mem else None,
            "energy_j": energy,
            "cost_usd": compute + energy / 3.6e6 * PER_KWH,
        }


def _pipelines(log: FactoryLog, out: dict[tuple[str, str, float], dict[str, Any]]) -> None:
    rows: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for b in log.events["pipeline"]:
        rows[(f"{b['pipeline']}/{b['stage']}", _win(b["ts"]))].append(b)
    for (name, start), batches in rows.items():
        secs = sum(b["duration_s"] for b in batches)
        out[("pipeline", name, start)] = {
            "batches": len(batches), "records": sum(b["records"] for b in batches),
            "records_per_s": sum(b["records"] for b in batches) / secs,
            "bytes_per_s": sum(b["bytes"] for b in batches) / secs,
            "pipeline_error_rate": sum(b["status"] == "error" for b in batches) / len(batches),
        }


QUANTILES = frozenset({"latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                       "label_delay_p50_s", "label_delay_p95_s", "training_time_p50_s"})
COUNTS = frozenset({"predictions", "failures", "labelled", "feedback", "engaged", "batches",
                    "records", "training_runs", "retrains", "deployments", "rollbacks",
                    "innovations"})


def compare(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Differences between expected and published fields: counts exact, ratios to 1e-9,
    sketch quantiles within 1 % relative, utilisation quantiles within 0.001."""
    problems = []
    for name, value in want.items():
        have = got.get(name)
        if value is None or have is None:
            if value != have:
                problems.append(f"{name}: want {value!r}, got {have!r}")
            continue
        if name in COUNTS:
            ok = have == value
        elif name in QUANTILES:
            ok = math.isclose(have, value, rel_tol=0.01, abs_tol=1e-9)
        elif name == "gpu_util_p95":
            ok = abs(have - value) <= 0.0005 + 1e-12
        else:
            ok = math.isclose(have, value, rel_tol=1e-9, abs_tol=1e-12)
        if not ok:
            problems.append(f"{name}: want {value!r}, got {have!r}")
    return problems
