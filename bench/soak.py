"""Soak: the demo's traffic for N minutes while a random worker is SIGKILLed (and restarted at
once) every K seconds; prints what was produced and what was counted.

  python bench/soak.py [--minutes 10] [--kill-every 60] [--workers 2] [--rate 200] [--dynamic]

Starts its own broker on a private port, N workers in one group (4 partitions, the demo's
10 s and 60 s windows, grace 2 s) and the simulator, which records every event it sends.
Afterwards it compares the newest revision of every closed 10 s model window with the
recording (predictions, and labels joined by prediction time), and prints the windows
closed, close lag p50/p99/max (revision 1 `ts` minus window end, for windows that closed
while traffic flowed), and each kill's restart to processing (until the restarted worker
has applied a new message).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.broker import LocalBroker, free_port  # noqa: E402
from streams.demo import DEMO_CONFIG  # noqa: E402

SIZE = 10.0
GRACE = 2.0


class Worker:
    def __init__(self, index: int, env: dict[str, str], work: Path, dynamic: bool) -> None:
        self.port = free_port()
        self.env = {**env, "FACTORY_WEB_PORT": str(self.port),
                    "FACTORY_STATE_DIR": str(work / f"worker{index}")}
        if dynamic:
            self.env["FACTORY_INSTANCE_ID"] = ""  # the default is static membership
        self.log = work / f"worker{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                         cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(60)

    def applied(self) -> int | None:
        try:
            url = f"http://127.0.0.1:{self.port}/api/v1/ingest"
            with urllib.request.urlopen(url, timeout=2) as resp:
                topics = orjson.loads(resp.read())["topics"]
        except OSError:
            return None
        return sum(t["messages"] for t in topics.values()) if topics else None


def processing_again(worker: Worker, killed: float, limit_s: float = 180.0) -> float | None:
    """Seconds from the kill until the restarted worker applied a new message."""
    first = None
    while time.monotonic() - killed < limit_s:
        now = worker.applied()
        if first is None:
            first = now
        elif now is not None and now > first:
            return time.monotonic() - killed
        time.sleep(0.25)
    return None


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(orjson.loads(r.value) for r in records)
        return out
    finally:
        await consumer.stop()


def expected(record: Path) -> tuple[Counter[Any], Counter[Any], Counter[str]]:
    """Predictions and labelled predictions per (model, 10 s window), events per topic."""
    topics: Counter[str] = Counter()
    predictions: dict[str, tuple[str, float]] = {}
    labelled: set[str] = set()
    for line in record.read_bytes().splitlines():
        rec = orjson.loads(line)
        topics[rec["topic"]] += 1
        event = rec["event"]
        if rec["topic"] == "predictions":
            predictions.setdefault(event["event_id"], (event["model"], event["ts"]))
        elif rec["topic"] == "labels":
            labelled.add(event["event_id"])
    count = Counter((m, ts // SIZE * SIZE) for m, ts in predictions.values())
    joined = Counter((m, ts // SIZE * SIZE) for eid, (m, ts) in predictions.items()
                     if eid in labelled)
    return count, joined, topics


def newest(snaps: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for s in snaps:
        if s["scope"] == "model" and s["window_s"] == SIZE and not s["model"].startswith("_"):
            key = (s["model"], s["window_start"])
            if out.get(key, {}).get("revision", 0) < s["revision"]:
                out[key] = s
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic group membership (the default is static)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fp-soak-"))
    broker = LocalBroker(work / "kafka-state", port=free_port(2))
    status, _ = broker.start()
    config = work / "soak.toml"
    config.write_text(DEMO_CONFIG)
    env = {**os.environ, "FACTORY_KAFKA_BOOTSTRAP": status.bootstrap,
           "FACTORY_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    workers = [Worker(i, env, work, args.dynamic) for i in range(args.workers)]
    sim = None
    try:
        for w in workers:
            w.start()
        record = work / "sent.jsonl"
        duration = args.minutes * 60
        with (work / "simulate.log").open("wb") as out:
            sim = subprocess.Popen([sys.executable, "-m", "streams.cli", "simulate", "--rate",
                                    str(args.rate), "--duration", str(duration), "--seed",
                                    str(args.seed), "--record", str(record), "--quiet"],
                                   cwd=ROOT, env={**env, "FACTORY_STATE_DIR": str(work)},
                                   stdout=out, stderr=subprocess.STDOUT)
        began, wall_began = time.monotonic(), time.time()
        restarts: list[float | None] = []
        next_kill = began + args.kill_every
        while sim.poll() is None:
            time.sleep(max(0.0, min(next_kill, began + duration) - time.monotonic()))
            next_kill += args.kill_every
            if sim.poll() is not None or time.monotonic() - began > duration - 20:
                break
            victim = rng.choice(workers)
            victim.kill()
            killed = time.monotonic()
            victim.start()
            restarts.append(processing_again(victim, killed))
            print(f"{time.monotonic() - began:6.0f}s  killed worker {workers.index(victim)}, "
                  f"processing again after {restarts[-1]}s", flush=True)
        sim.wait()
        wall_end = time.time()
        want, joined, topics = expected(record)
        deadline = time.monotonic() + 120
        got: dict[tuple[str, float], dict[str, Any]] = {}
        while time.monotonic() < deadline:
            got = newest(asyncio.run(read_topic(status.bootstrap, "factory.metrics")))
            if all(got.get(k, {}).get("predictions") == n for k, n in want.items()):
                break
            time.sleep(5)
        snaps = asyncio.run(read_topic(status.bootstrap, "factory.metrics"))
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.kill(signal.SIGTERM)
        broker.stop()
    lost = sum(max(0, n - got.get(k, {}).get("predictions", 0)) for k, n in want.items())
    extra = sum(max(0, got.get(k, {}).get("predictions", 0) - n) for k, n in want.items())
    label_wrong = sum(1 for k, n in joined.items() if got.get(k, {}).get("labelled") != n)
    first = [s for s in snaps if s["revision"] == 1 and s["window_s"] == SIZE
             and s["window_start"] >= wall_began and s["window_end"] <= wall_end - 10]
    lags = sorted(s["ts"] - s["window_end"] for s in first)
    q = statistics.quantiles(lags, n=100, method="inclusive") if len(lags) > 1 else lags * 99
    done = [r for r in restarts if r is not None]
    print(f"\nsoak: {args.minutes:g} min, {args.workers} workers "
          f"({'dynamic' if args.dynamic else 'static'} membership), a SIGKILL every "
          f"{args.kill_every:g}s, simulator at {args.rate:g} ev/s, 4 partitions "
          f"(work dir {work})")
    rows = [
        ("events produced (all topics)", f"{sum(topics.values()):,} {dict(topics)}"),
        ("predictions produced / counted in closed windows",
         f"{sum(want.values()):,} / {sum(s.get('predictions', 0) for s in got.values()):,}"),
        ("predictions lost / counted twice", f"{lost} / {extra}"),
        ("windows with a wrong labelled count", f"{label_wrong} of {len(joined)}"),
        ("10 s windows closed while traffic flowed (all entities)", f"{len(first):,}"),
        ("close lag p50 / p99 / max", f"{q[49]:.2f}s / {q[98]:.2f}s / {max(lags):.2f}s "
                                      f"(limit grace + 5 s = {GRACE + 5:g}s)"),
        ("restarts (kill to processing again)",
         f"{len(restarts)}: " + ", ".join(f"{r:.1f}s" if r is not None else "never"
                                          for r in restarts)),
        ("slowest restart", f"{max(done):.1f}s" if done else "-"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    ok = (lost == 0 and extra == 0 and label_wrong == 0 and lags and max(lags) <= GRACE + 5
          and len(done) == len(restarts) and all(r < 15 for r in done))
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
