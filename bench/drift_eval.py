"""Detection delay and false alarms of the service's drift alerts, side by side with River's.

  python bench/drift_eval.py [--events 200000] [--window 1000] [--seeds 3] [--partitions 4]
                             [--flush N] [--kinds abrupt,small-abrupt,...] [--jobs N]

Each stream is one binary classifier's predictions (3 numeric features and a score) with
labels, at `--window` predictions per 60 s window. It goes through the service's own path,
in process, with the default settings and rules: the label join and windows of
`agents.predictions` on `--partitions` shards, each shard's partials and watermark handed
to the snapshot stage (`agents.snapshots`: window closing, drift references, detectors,
alert rules, retraining requests) every `--flush` predictions, as a worker's flush would.
What is not in the path: Kafka itself, and wall-clock time (the flush is counted in events).

River 0.26's ADWIN and PageHinkley, with their defaults, read the same stream event by
event: the errors in the order the labels arrive, or for the covariate and score shifts the
shifted feature or the score. Delay: predictions after the change to the first alarm (ours:
the first alert of a drift rule, and the first retraining request). False alarms: alarms
before the change, or anywhere on a stream without one, per million predictions.

Prints a Markdown table (the README's), then per kind whether each alert was published once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.predictions import PredictionLogic
from agents.shard import Message, Shard
from agents.snapshots import SnapshotStage
from core.settings import load_settings
from core.topics import route

START = 1_700_000_040.0  # a window boundary
WINDOW_S = 60.0
BASE_ERROR = 0.08


@dataclass
class Stream:
    """One generated stream: per prediction its time, error, score and features; the
    positions where a change starts; where each label arrives (prediction position)."""

    ts: np.ndarray
    wrong: np.ndarray
    score: np.ndarray
    features: np.ndarray  # (n, 3)
    changes: list[int]
    label_lag: int = 0
    watched: tuple[str, ...] = ("errors",)  # what River reads: errors, feature0, score


def make(kind: str, n: int, per_window: int, rng: np.random.Generator) -> Stream:
    """The stream kinds; a change at n/2 unless said otherwise."""
    error = np.full(n, BASE_ERROR)
    half = n // 2
    rate = np.ones(n)  # relative traffic volume
    features = rng.normal(0.0, 1.0, (n, 3))
    score = rng.beta(2, 5, n)
    changes = [half]
    lag = 0
    watched: tuple[str, ...] = ("errors",)
    if kind in ("stable", "wobble", "daily-cycle"):
        changes = []
        if kind == "wobble":  # the error rate redrawn in 5-15 % every 500 predictions
            error = np.repeat(rng.uniform(0.05, 0.15, n // 500 + 1), 500)[:n]
        if kind == "daily-cycle":  # volume 0.3x-1.7x over a compressed day of 100 windows
            phase = np.sin(2 * np.pi * np.arange(n) / (100 * per_window))
            rate = 1 + 0.7 * phase
            features[:, 0] += 0.1 * phase
            score = np.clip(score + 0.02 * phase, 0, 1)
            watched = ("errors", "feature0", "score")
    elif kind == "abrupt":
        error[half:] = 0.25
    elif kind == "small-abrupt":
        error[half:] = 0.11
    elif kind == "gradual":  # 8 % -> 20 % over 30k predictions
        error = BASE_ERROR + 0.12 * np.clip((np.arange(n) - half) / 30_000, 0, 1)
    elif kind == "late-labels":  # abrupt, with every label 5 windows late
        error[half:] = 0.25
        lag = 5 * per_window
    elif kind == "recurring":  # three bursts of 5k predictions at 25 %
        changes = [n // 4, n // 2, 3 * n // 4]
        for c in changes:
            error[c:c + 5000] = 0.25
    elif kind == "covariate":  # one feature moves by 0.5 sd
        features[half:, 0] += 0.5
        watched = ("feature0",)
    elif kind == "score-shift":
        score[half:] = np.clip(score[half:] + 0.2, 0, 1)
        watched = ("score",)
    else:
        raise SystemExit(f"unknown kind {kind}")
    gaps = WINDOW_S / per_window / rate
    ts = START + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    wrong = rng.random(n) < error
    return Stream(ts, wrong, score, features, changes, lag, watched)


KINDS = ("stable", "daily-cycle", "wobble", "abrupt", "small-abrupt", "gradual", "recurring",
         "late-labels", "covariate", "score-shift")
STABLE = ("stable", "daily-cycle", "wobble")


class Capture:
    """An output topic: what was sent, and at which prediction position."""

    def __init__(self, clock: list[int]) -> None:
        self.clock = clock
        self.sent: list[tuple[int, dict[str, Any]]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append((self.clock[0], orjson.loads(value)))


@dataclass
class Outcome:
    alerts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)


def run_service(stream: Stream, partitions: int, flush: int, state_dir: Path) -> Outcome:
    settings = dataclasses.replace(load_settings({}), partitions=partitions,
                                   state_dir=state_dir, label_horizon_s=6 * 3600.0)
    logic = PredictionLogic(settings, {"predictions": "predictions", "labels": "labels"})
    shards = [Shard("predictions", p, settings) for p in range(partitions)]
    for shard in shards:
        logic.load(shard, iter(()))
    clock = [0]
    outputs = {name: Capture(clock) for name in ("metrics", "alerts", "retraining")}
    names = [f"predictions:{p}" for p in range(partitions)]
    stage = SnapshotStage(settings, {}, outputs, None, names)
    stage.load()
    n = stream.ts.size
    ids = [f"e{i}" for i in range(n)]
    parts = np.array([route(eid, partitions) for eid in ids])
    offset = 0

    def events(lo: int, hi: int, kind: str) -> dict[int, list[dict[str, Any]]]:
        by_part: dict[int, list[dict[str, Any]]] = {}
        for i in range(lo, hi):
            predicted = int(stream.score[i] > 0.3)
            if kind == "predictions":
                event: dict[str, Any] = {
                    "event_id": ids[i], "ts": float(stream.ts[i]), "model": "churn",
                    "version": "v1", "predicted": predicted, "score": float(stream.score[i]),
                    "features": {f"f{k}": float(stream.features[i, k]) for k in range(3)}}
            else:
                event = {"event_id": ids[i], "ts": float(stream.ts[min(i + stream.label_lag,
                                                                        n - 1)]),
                         "label": predicted ^ int(stream.wrong[i])}
            by_part.setdefault(int(parts[i]), []).append(event)
        return by_part

    async def feed() -> None:
        nonlocal offset
        for lo in range(0, n + stream.label_lag, flush):
            hi = min(lo + flush, n)
            clock[0] = min(lo + flush, n)
            preds = events(lo, hi, "predictions") if lo < n else {}
            labelled = events(max(lo - stream.label_lag, 0),
                              max(min(lo + flush - stream.label_lag, n), 0), "labels")
            offset += 1
            for p, shard in enumerate(shards):
                messages = [Message(kind, offset, batch[p], kind)
                            for kind, batch in (("predictions", preds), ("labels", labelled))
                            if batch.get(p)]
                if messages:
                    logic.apply(shard, messages)
                await logic.before_flush(shard, None)  # type: ignore[arg-type]
                for local, slot in shard.slots.items():
                    if slot.dirty:
                        stage.on_partial(names[p], local, slot.state.to_state())
                        slot.dirty = False
                for writes in shard.pending_writes:
                    writes.clear()
                watermark = shard.watermark if shard.watermark > -np.inf else None
                stage.on_heartbeat(names[p], watermark, False)
            await stage.publish()
            stage.writes.clear()
            stage.deletes.clear()

    asyncio.run(feed())
    for shard in shards:
        logic.unload(shard)
    return Outcome([(at, a) for at, a in outputs["alerts"].sent],
                   [at for at, _ in outputs["retraining"].sent])


def river_alarms(stream: Stream, watched: str, detector_type: Callable[[], Any]) -> list[int]:
    """Positions (predictions fed) at which River's detector alarms on the watched values."""
    if watched == "errors":
        values, positions = stream.wrong.astype(float), np.arange(stream.ts.size) + (
            stream.label_lag)
    elif watched == "score":
        values, positions = stream.score, np.arange(stream.ts.size)
    else:
        values, positions = stream.features[:, 0], np.arange(stream.ts.size)
    detector = detector_type()
    alarms = []
    for i, x in enumerate(values.tolist()):
        detector.update(x)
        if detector.drift_detected:
            alarms.append(int(positions[i]) + 1)
    return alarms


@dataclass
class Tally:
    delays: list[int | None] = field(default_factory=list)
    false: int = 0
    events: int = 0

    def add(self, alarms: list[int], stream: Stream) -> None:
        self.events += stream.ts.size
        changes = stream.changes
        first = changes[0] if changes else None
        self.false += sum(1 for a in alarms if first is None or a <= first)
        for k, c in enumerate(changes):
            until = changes[k + 1] if k + 1 < len(changes) else None
            after = [a - c for a in alarms if a > c and (until is None or a <= until)]
            self.delays.append(after[0] if after else None)

    def row(self) -> tuple[str, str]:
        per_million = f"{self.false / self.events * 1e6:.1f}"
        if not self.delays:
            return "-", per_million
        found = [d for d in self.delays if d is not None]
        missed = len(self.delays) - len(found)
        text = f"{int(np.median(found)):,}" if found else "-"
        if missed:
            text += f" (missed {missed}/{len(self.delays)})"
        return text, per_million


Job = tuple[str, int, int, int, int, int]


def _one(job: Job) -> tuple[Stream, list[tuple[int, dict[str, Any]]], list[int],
                            dict[str, list[int]]]:
    """One stream through the service and through River: the stream, our firing alerts,
    our retraining requests, and each River detector's alarms (run in a worker process)."""
    from river import drift  # the comparison's only use of River: not a dependency

    kind, seed, events, window, partitions, flush = job
    stream = make(kind, events, window, np.random.default_rng(seed))
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_service(stream, partitions, flush, Path(tmp))
    firing = [(at, a) for at, a in outcome.alerts if a["state"] == "firing"]
    river = {f"{label} ({watched})": river_alarms(stream, watched, detector)
             for watched in stream.watched
             for label, detector in (("River ADWIN", drift.ADWIN),
                                     ("River PageHinkley", drift.PageHinkley))}
    return stream, firing, outcome.requests, river


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000, help="predictions per window")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    # a worker flushes every `worker.flush_interval` (0.5 s): at --window predictions a
    # minute, that many predictions
    parser.add_argument("--flush", type=int, default=None,
                        help="predictions per flush (default: a worker's flush interval)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="streams run at once, one process each")
    args = parser.parse_args()
    if args.flush is None:
        interval = load_settings({}).flush_interval_s
        args.flush = max(round(args.window * interval / WINDOW_S), 1)
    rules = list(load_settings({}).alerts)
    drift_rules = [r.name for r in rules if r.action == "retrain"]
    print(f"{args.seeds} seeds x {args.events:,} predictions per kind, {args.window} per 60 s "
          f"window, {args.partitions} partitions, a flush every {args.flush} predictions; "
          "delay: median predictions after the change to the first alarm; false alarms: per "
          "million predictions\n")
    print("| stream | detector | delay | false alarms / M |")
    print("|---|---|---|---|")
    once: dict[str, int] = {}
    kinds = args.kinds.split(",")
    jobs = [(kind, seed, args.events, args.window, args.partitions, args.flush)
            for kind in kinds for seed in range(args.seeds)]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(_one, jobs), strict=True))
    for kind in kinds:
        tallies: dict[str, Tally] = {}
        duplicates = 0
        for seed in range(args.seeds):
            stream, firing, requests, river = results[
                (kind, seed, args.events, args.window, args.partitions, args.flush)]
            ids = [a["alert_id"] for _, a in firing]
            duplicates += len(ids) - len(set(ids))
            drifting = [at for at, a in firing if a["rule"] in drift_rules]
            tallies.setdefault("ours: any drift rule", Tally()).add(drifting, stream)
            for name in drift_rules:
                tallies.setdefault(f"ours: {name}", Tally()).add(
                    [at for at, a in firing if a["rule"] == name], stream)
            others = [at for at, a in firing if a["rule"] not in drift_rules]
            tallies.setdefault("ours: any other rule", Tally()).add(others, stream)
            tallies.setdefault("ours: retraining request", Tally()).add(requests, stream)
            for name, alarms in river.items():
                tallies.setdefault(name, Tally()).add(alarms, stream)
        once[kind] = duplicates
        for name, tally in tallies.items():
            delay, false = tally.row()
            quiet = delay in ("-", f"- (missed {len(tally.delays)}/{len(tally.delays)})")
            if name.startswith("ours: ") and name not in (
                    "ours: any drift rule", "ours: retraining request") and quiet and (
                    false == "0.0"):
                continue  # a rule that never fired on this kind: no row
            print(f"| {kind} | {name} | {delay} | {false} |")
    print("\nalerts published twice (same alert id firing again): " +
          ", ".join(f"{k} {v}" for k, v in once.items()))


if __name__ == "__main__":
    main()
