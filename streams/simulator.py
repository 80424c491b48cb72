"""`factory-pulse simulate`: a synthetic AI factory, live or replayed.

Three models (a binary churn classifier, a four-class intent classifier, a demand regressor)
serve traffic with a daily shape, latency and failures; labels arrive later with a lognormal
delay; users leave feedback; models are retrained and redeployed (new models, new features,
retrains and a rollback); four GPUs and the host CPU report telemetry with idle periods; a
feature pipeline reports batches. Drift can be injected at a chosen time: `score` (the score
distribution shifts), `feature` (a feature drifts gradually) or `concept` (the same inputs,
more wrong answers). Everything goes out through the client library, as a user's code would.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from core.settings import Settings
from schemas.fields import JSON
from streams.client import FactoryClient
from streams.kserve_logs import KServeLog

CLASSES = ("billing", "support", "sales", "other")


@dataclass
class Model:
    name: str
    kind: str  # binary | multiclass | regressor
    share: float
    latency_ms: float
    failure_rate: float
    skill: float  # probability of a right answer (classifiers)
    version: int = 1


@dataclass
class Drift:
    at_s: float | None = None
    kind: str = "concept"
    size: float = 0.3

    def amount(self, elapsed: float) -> float:
        """0 before the change; the full size after it (reached over 60 s for `feature`)."""
        if self.at_s is None or elapsed < self.at_s:
            return 0.0
        if self.kind == "feature":
            return self.size * min(1.0, (elapsed - self.at_s) / 60.0)
        return self.size


@dataclass
class Factory:
    """The simulated factory's state; `step` emits what happened in (now - dt, now]."""

    rate: float
    seed: int
    drift: Drift
    host: str = "sim-node-1"
    rng: random.Random = field(init=False)
    models: list[Model] = field(init=False)
    labels_due: list[tuple[float, int, JSON]] = field(default_factory=list)
    started: float = 0.0
    sequence: int = 0
    next_telemetry: float = 0.0
    next_pipeline: float = 0.0
    next_retrain: float = 0.0
    runs: list[tuple[float, str, Model, str]] = field(default_factory=list)
    rolled_back: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.models = [Model("churn", "binary", 0.5, 18.0, 0.01, 0.9),
                       Model("intent", "multiclass", 0.3, 45.0, 0.02, 0.8),
                       Model("demand", "regressor", 0.2, 30.0, 0.005, 0.0)]

    def step(self, now: float, dt: float) -> list[tuple[str, JSON]]:
        if not self.started:
            self.started = self.next_telemetry = self.next_pipeline = now
            self.next_retrain = now + 30
        elapsed = now - self.started
        out: list[tuple[str, JSON]] = []
        shape = 1 + 0.5 * math.sin(2 * math.pi * (now % 86400) / 86400 - math.pi / 2)
        for _ in range(self._poisson(self.rate * dt * shape)):
            out.extend(self._prediction(now - self.rng.uniform(0, dt), elapsed))
        while self.labels_due and self.labels_due[0][0] <= now:
            _, _, label = heapq.heappop(self.labels_due)
            out.append(("labels", label))
        if now >= self.next_telemetry:
            out.extend(("telemetry", t) for t in self._telemetry(now, elapsed))
            self.next_telemetry = now + 5
        if now >= self.next_pipeline:
            out.extend(("pipeline", b) for b in self._pipeline(now))
            self.next_pipeline = now + 2
        out.extend(("deployments", d) for d in self._lifecycle(now))
        return out

    def _poisson(self, lam: float) -> int:
        if lam > 50:
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        k, p, limit = 0, 1.0, math.exp(-lam)
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def _prediction(self, ts: float, elapsed: float) -> list[tuple[str, JSON]]:
        rng = self.rng
        model = rng.choices(self.models, [m.share for m in self.models])[0]
        self.sequence += 1
        event_id = f"sim-{self.seed}-{self.sequence}"
        drift = self.drift.amount(elapsed)
        shift = drift if self.drift.kind == "feature" else 0.0
        features = {"tenure": rng.gauss(24 + 20 * shift, 8), "spend": rng.lognormvariate(3, 0.5),
                    "tickets": float(rng.randint(0, 5))}
        skill = model.skill - (drift if self.drift.kind == "concept" else 0.0)
        score = min(max(rng.betavariate(2, 5) + (drift if self.drift.kind == "score" else 0.0),
                        0.0), 1.0)
        truth: Any
        if model.kind == "binary":
            truth = int(rng.random() < 0.3)
            predicted: Any = truth if rng.random() < skill else 1 - truth
        elif model.kind == "multiclass":
            truth = rng.choice(CLASSES)
            predicted = truth if rng.random() < skill else rng.choice(CLASSES)
        else:
            truth = round(rng.gauss(100, 20), 2)
            noise = 5 * (1 + 4 * (drift if self.drift.kind == "concept" else 0.0))
            predicted = round(truth + rng.gauss(0, noise), 2)
        failed = rng.random() < model.failure_rate
        event: JSON = {"event_id": event_id, "ts": ts, "model": model.name,
                       "version": f"v{model.version}", "latency_ms": rng.lognormvariate(
                           math.log(model.latency_ms), 0.4),
                       "status": "error" if failed else "ok", "score": score,
                       "features": features, "cost_usd": 0.00002}
        if not failed:
            event["predicted"] = predicted
            if rng.random() < 0.8:
                due = ts + rng.lognormvariate(math.log(20), 0.6)
                heapq.heappush(self.labels_due, (due, self.sequence,
                                                 {"event_id": event_id, "ts": due,
                                                  "label": truth, "model": model.name}))
        out: list[tuple[str, JSON]] = [("predictions", event)]
        if rng.random() < 0.05:
            out.append(("feedback", {"ts": ts + 1, "model": model.name, "event_id": event_id,
                                     "rating": rng.randint(3 if skill > 0.7 else 1, 5),
                                     "thumbs": 1 if rng.random() < skill else -1,
                                     "engaged": rng.random() < 0.4}))
        return out

    def _telemetry(self, now: float, elapsed: float) -> list[JSON]:
        out: list[JSON] = []
        busy = 1 + 0.5 * math.sin(elapsed / 300)
        for index, model in enumerate([*self.models, None]):
            idle = model is None and (elapsed // 120) % 2 == 0
            util = 0.0 if idle else min(100.0, max(0.0, self.rng.gauss(45 * busy, 12)))
            event: JSON = {"ts": now, "host": self.host, "device": f"gpu{index}", "kind": "gpu",
                           "util": round(util, 1), "interval_s": 5.0,
                           "device_name": "NVIDIA H200",
                           "mem_used_bytes": int(141e9 * (0.2 + util / 200)),
                           "mem_total_bytes": 141_000_000_000,
                           "power_w": round(90 + 6.1 * util, 1)}
            if model is not None:
                event["model"] = model.name
            out.append(event)
        return out

    def _pipeline(self, now: float) -> list[JSON]:
        return [{"ts": now, "pipeline": "features", "stage": stage,
                 "records": self.rng.randint(2000, 8000), "duration_s": self.rng.uniform(0.2, 1.5),
                 "bytes": self.rng.randint(10**6, 10**7),
                 "status": "error" if self.rng.random() < 0.02 else "ok"}
                for stage in ("extract", "join", "write")]

    def _lifecycle(self, now: float) -> list[JSON]:
        out: list[JSON] = []
        if now >= self.next_retrain:
            model = self.rng.choice(self.models)
            run_id = f"run-{self.seed}-{int(now)}"
            change = self.rng.choice(["retrain", "retrain", "new_features", "new_model"])
            out.append({"ts": now, "model": model.name, "version": f"v{model.version + 1}",
                        "kind": "training_started", "run_id": run_id, "trigger": "scheduled",
                        "change": change})
            self.runs.append((now + self.rng.uniform(20, 60), run_id, model, change))
            self.next_retrain = now + self.rng.uniform(90, 180)
        for run in [r for r in self.runs if r[0] <= now]:
            self.runs.remove(run)
            _, run_id, model, change = run
            model.version += 1
            version = f"v{model.version}"
            out.append({"ts": now, "model": model.name, "version": version,
                        "kind": "training_finished", "run_id": run_id, "change": change})
            out.append({"ts": now + 1, "model": model.name, "version": version,
                        "kind": "deployed", "change": change, "trigger": "scheduled"})
            if not self.rolled_back and model.version == 3:
                self.rolled_back = True
                out.append({"ts": now + 2, "model": model.name, "version": version,
                            "kind": "rolled_back"})
        return out


async def simulate(settings: Settings, rate: float, duration_s: float | None, seed: int,
                   drift: Drift, record: IO[bytes] | None = None, progress: bool = True,
                   tick_s: float = 0.1, kserve_topic: str | None = None) -> int:
    """Run the factory live (event time = wall time); return the events sent. With
    `kserve_topic`, predictions go there as KServe's inference logger logs them."""
    factory = Factory(rate, seed, drift)
    began = last_report = time.time()
    async with FactoryClient(settings) as client, KServeLog(settings, kserve_topic) as kserve:
        now = began
        while duration_s is None or now - began < duration_s:
            await asyncio.sleep(tick_s)
            previous, now = now, time.time()
            for topic, event in factory.step(now, now - previous):
                if topic == "predictions" and kserve_topic is not None:
                    await kserve.send(event)
                else:
                    client.event(topic, event)
                if record is not None:
                    record.write(orjson.dumps({"topic": topic, "event": event}) + b"\n")
            if progress and now - last_report >= 1:
                last_report = now
                _progress(now - began, duration_s, client.sent_events)
        await client.flush()
    if progress:
        _progress(time.time() - began, duration_s, client.sent_events + kserve.sent)
        print(file=sys.stderr)
    return client.sent_events + kserve.sent


def read_log(path: Path) -> list[Any]:
    """A recorded JSONL log (`{"topic": ..., "event": {...}}` per line), in event-time order."""
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    lines.sort(key=lambda rec: rec["event"]["ts"])
    return lines


async def replay(settings: Settings, lines: list[Any], speed: float,
                 progress: bool = True) -> int:
    """Publish a recorded log at `speed` times its own pace (0 = as fast as possible),
    keeping each event's own timestamp."""
    async with FactoryClient(settings) as client:
        began, first = time.time(), lines[0]["event"]["ts"] if lines else 0.0
        for index, rec in enumerate(lines):
            if speed > 0:
                wait = (rec["event"]["ts"] - first) / speed - (time.time() - began)
                if wait > 0:
                    await asyncio.sleep(wait)
            client.event(rec["topic"], rec["event"])
            if index % 1000 == 0:
                await asyncio.sleep(0)
                if progress:
                    _progress(time.time() - began, None, client.sent_events)
        await client.flush()
    if progress:
        _progress(time.time() - began, None, client.sent_events)
        print(file=sys.stderr)
    return client.sent_events


def _progress(elapsed: float, duration_s: float | None, sent: int) -> None:
    if duration_s:
        done = min(elapsed / duration_s, 1.0)
        bar = "#" * int(done * 30)
        head = f"[{bar:<30}] {done:4.0%}"
    else:
        head = f"{elapsed:7.1f}s"
    print(f"\r{head} {sent:>10,} events sent ({sent / max(elapsed, 1e-9):,.0f}/s)",
          end="", file=sys.stderr, flush=True)
