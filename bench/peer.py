"""factory-pulse side by side with raw aiokafka and Quix Streams, on the same events.

  python bench/peer.py [--bootstrap HOST:PORT] [--events 1000000]
                       [--profile [single|batched|columnar]] [--random-ids]

The goals of issue 13 are ratios against a peer, so every system reads the same prediction
events (3 numeric features and a score), filled beforehand into three 4-partition topics: 1
event per message; 500 events per message as a JSON array; and 500 per message in the
columnar form the client library sends (`schemas/columnar.py`), which Quix is given too,
with a function that makes its rows. The batched goal compares factory-pulse on columns with
Quix on whichever batch form it reads faster. Each system is timed from its first applied
event to its last, with start-up, group join and recovery excluded:

(a) raw aiokafka + orjson, consume and decode only: the ceiling of a Python consumer;
(b) factory-pulse, one worker process: from its "Ready" (partitions assigned, tables
    recovered: its first fetch comes next) to the moment its ingest count (what is applied,
    durable and acknowledged; polled every 20 ms) holds every event;
(c) Quix Streams 3.28, a per-model 60 s tumbling window of count, errors, mean latency and
    cost. Messages are keyed by model (and partitioned by event id, as the client library
    does), so Quix windows per model without a repartition, in the shape of factory-pulse's
    per-shard state. It runs from its own virtual environment (`.bench-venv/quix`, created
    here on first use) so that it never enters the project's dependencies.

Every system runs as its own process, so each peak RSS is its own. factory-pulse's CPU per
event (all its threads, from "Ready" to the last event) is printed too: it moves less from
run to run than the rate, which the broker's share of the 2 cores sways. `--profile` then
samples a fresh factory-pulse worker on one input kind's topic with py-spy and prints where
its time goes. Without `--bootstrap` a broker is started with the project's own tooling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import venv
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.kafka import ensure_topics  # noqa: E402
from core.settings import load_settings  # noqa: E402
from core.topics import route  # noqa: E402
from schemas import columnar  # noqa: E402
from streams.broker import LocalBroker, free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from join_memory import event_id as random_id  # noqa: E402
from throughput import PARTITIONS, peak_rss_mb, raw_read  # noqa: E402

MODELS = ["churn", "intent", "demand", "ranker"]
QUIX = "quixstreams==3.28.0"
KINDS = ("single", "batched", "columnar")


def prediction(i: int, start: float, step: float, random_ids: bool = False) -> dict[str, Any]:
    """The i-th prediction; its id `p-<i>`, or 32 hex characters in random order (as UUIDs
    are: consecutive ids then share nothing, and the join's on-disk index has no locality)."""
    return {"event_id": random_id(i) if random_ids else f"p-{i}", "ts": start + i * step,
            "model": MODELS[i % 4],
            "version": "v1", "latency_ms": 5.0 + (i % 97),
            "status": "error" if i % 50 == 0 else "ok", "predicted": i % 2,
            "score": (i % 1000) / 1000, "cost_usd": 0.0001,
            "features": {"f0": (i % 13) / 13, "f1": (i % 7) * 1.5, "f2": float(i % 101)}}


def messages(n: int, per_message: int, start: float, span_s: float, random_ids: bool = False,
             columns: bool = False) -> Iterator[tuple[int, bytes, bytes]]:
    """(partition, key, value): partitioned by event id as the client library does, keyed by
    model; a batch holds events of one partition and one model, as a JSON array or, with
    `columns`, in the columnar form the client library sends."""
    def batch(events: list[dict[str, Any]]) -> bytes:
        return orjson.dumps(columnar.encode(events) if columns else events)

    buckets: dict[tuple[int, str], list[dict[str, Any]]] = {}
    step = span_s / n
    for i in range(n):
        event = prediction(i, start, step, random_ids)
        where = (route(event["event_id"], PARTITIONS), event["model"])
        if per_message == 1:
            yield where[0], where[1].encode(), orjson.dumps(event)
            continue
        bucket = buckets.setdefault(where, [])
        bucket.append(event)
        if len(bucket) == per_message:
            yield where[0], where[1].encode(), batch(bucket)
            buckets[where] = []
    yield from ((p, m.encode(), batch(b)) for (p, m), b in buckets.items() if b)


async def fill(bootstrap: str, topic: str, n: int, per_message: int, start: float,
               random_ids: bool = False, columns: bool = False) -> float:
    """Produce the events; return the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                                max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    began = time.monotonic()
    try:
        pending = []
        for partition, key, value in messages(n, per_message, start, 600.0, random_ids,
                                              columns):
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - began


async def raw_consume(bootstrap: str, topic: str, expect: int) -> dict[str, float]:
    """(a), run in a process of its own: consume and decode until `expect` events, timed
    from the first records (as the other systems are, from their first event)."""
    seen, _, first, last = await raw_read(bootstrap, topic, expect)
    return {"events": seen, "seconds": last - first, "rss_mib": peak_rss_mb()}


# (c): the Quix consumer, run by the Quix environment's interpreter.
QUIX_CONSUMER = '''
import json, os, sys, time
from datetime import timedelta
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Mean, Sum

expect = int(os.environ["PEER_EXPECT"])
app = Application(broker_address=os.environ["PEER_BOOTSTRAP"],
                  consumer_group=os.environ["PEER_GROUP"], auto_offset_reset="earliest",
                  state_dir=os.environ["PEER_STATE"], loglevel="WARNING")
topic = app.topic(os.environ["PEER_TOPIC"], value_deserializer="json", key_deserializer="str")
sdf = app.dataframe(topic)

def rows(doc):
    """A columnar batch's events (see schemas/columnar.py): a list per field or one value
    for all, features an object of such columns. (Written out here: this environment has
    Quix, not the project's packages, so it cannot call schemas.columnar.explode.)"""
    columns = doc["_columns"]
    n = len(columns["event_id"])
    out = [{} for _ in range(n)]
    for name, value in columns.items():
        if name == "features":
            for row in out:
                row["features"] = {}
            for feature, column in value.items():
                for row, item in zip(out, column if type(column) is list else [column] * n):
                    if item is not None:
                        row["features"][feature] = item
        else:
            for row, item in zip(out, value if type(value) is list else [value] * n):
                if item is not None:
                    row[name] = item
    return out

if os.environ["PEER_KIND"] == "batched":
    sdf = sdf.apply(lambda batch: batch, expand=True)
elif os.environ["PEER_KIND"] == "columnar":
    sdf = sdf.apply(rows, expand=True)
clock = {"n": 0, "first": 0.0, "last": 0.0}

def seen(event):
    clock["n"] += 1
    if clock["n"] == 1:
        clock["first"] = time.monotonic()
    if clock["n"] == expect:
        clock["last"] = time.monotonic()
        app.stop()

sdf = sdf.update(seen)
sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: int(value["ts"] * 1000))
sdf["error"] = sdf["status"] == "error"
sdf = sdf.tumbling_window(timedelta(seconds=60)).agg(
    count=Count(), errors=Sum("error"), latency_ms=Mean("latency_ms"), cost_usd=Sum("cost_usd"),
).final()
app.run()
durable = time.monotonic()
with open(f"/proc/self/status") as status:
    rss = [int(l.split()[1]) / 1024 for l in status if l.startswith("VmHWM:")][0]
print(json.dumps({"events": clock["n"], "seconds": clock["last"] - clock["first"],
                  "seconds_durable": durable - clock["first"], "rss_mib": rss}), flush=True)
'''


def quix_python(venv_dir: Path) -> Path:
    """The Quix environment's interpreter; the environment is made (with py-spy, for
    `--profile`) when missing."""
    python = venv_dir / "bin" / "python"
    if not python.exists():
        print(f"creating {venv_dir} with {QUIX} and py-spy ...", flush=True)
        venv.create(venv_dir, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", QUIX, "py-spy"], check=True)
    return python


def run_json(cmd: list[str], env: dict[str, str], timeout_s: float) -> dict[str, float]:
    """Run a measuring process; its last stdout line is its result as JSON."""
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout_s)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


class Worker:
    """One factory-pulse worker process on one input topic's prefix, run from the code in
    `root` (this checkout, or another commit's worktree: `bench/ab.py`)."""

    def __init__(self, bootstrap: str, prefix: str, work: Path, root: Path = ROOT) -> None:
        self.prefix = prefix
        self.root = root
        self.port = free_port()
        app_id = prefix.rstrip(".")
        self.env = {"FACTORY_KAFKA_BOOTSTRAP": bootstrap, "FACTORY_TOPIC_PREFIX": prefix,
                    "FACTORY_APP_ID": app_id, "FACTORY_PARTITIONS": str(PARTITIONS),
                    "FACTORY_STATE_DIR": str(work / app_id),
                    "FACTORY_WEB_PORT": str(self.port), "FACTORY_IDLE": "1s",
                    "FACTORY_GRACE": "0"}
        self.log = work / f"{app_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def topics(self) -> None:
        await ensure_topics(load_settings(self.env))

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                         cwd=self.root, env={**os.environ, **self.env},
                                         stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while b"[^Worker]: Ready" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self.proc

    def ingested(self, base: str = "predictions") -> tuple[int, int]:
        """(accepted, rejected) events of an input topic, durable and acknowledged."""
        url = f"http://127.0.0.1:{self.port}/api/v1/ingest"
        with urllib.request.urlopen(url, timeout=30) as resp:
            counts = orjson.loads(resp.read())["topics"].get(f"{self.prefix}{base}", {})
        return int(counts.get("accepted", 0)), int(counts.get("rejected", 0))

    def measure(self, expect: int, timeout_s: float, base: str = "predictions",
                before_stop: Callable[[], None] | None = None) -> dict[str, float]:
        """(b): from the worker's "Ready" (logged once its partitions are assigned, its
        tables recovered and its streams seeked: the first fetch comes next) to the moment
        its ingest count of input `base` holds every event; `before_stop` is called while
        the worker still runs."""
        proc = self.start()
        began = cpu_seconds(proc.pid)
        deadline = time.monotonic() + timeout_s
        got, rejected = 0, 0
        while got + rejected < expect:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"worker ingested {got} of {expect}:\n"
                                 f"{self.log.read_text()[-3000:]}")
            got, rejected = self.ingested(base)
            time.sleep(0.02)
        last = time.time()
        spent = cpu_seconds(proc.pid) - began
        if rejected:
            raise SystemExit(f"the worker rejected {rejected} events: see the "
                             f"{self.prefix}deadletter topic")
        rss = peak_rss_mb(proc.pid)
        if before_stop is not None:
            before_stop()
        self.stop()
        return {"events": expect, "seconds": last - self.ready(), "rss_mib": rss,
                "cpu_us": spent / expect * 1e6}

    def ready(self) -> float:
        """The wall-clock time of the worker's "Ready" log line."""
        for line in self.log.read_text().splitlines():
            if "[^Worker]: Ready" in line:
                stamp = line[1:line.index("]")]
                seconds, _, millis = stamp.partition(",")  # logged in local time
                return time.mktime(time.strptime(seconds, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        raise SystemExit(f"no Ready line in {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            self.proc = None


def profile(worker: Worker, spy: Path, seconds: int, out: Path) -> str:
    """Sample a worker reading a backlog with py-spy (all threads, idle time left out);
    return the frames with the largest inclusive and own shares."""
    proc = worker.start()
    time.sleep(3)  # past the first fetches and table loads
    subprocess.run([str(spy), "record", "--pid", str(proc.pid), "--duration", str(seconds),
                    "--rate", "200", "--format", "raw", "--threads", "--output", str(out)],
                   check=True, capture_output=True)
    worker.stop()
    return summarize(out.read_text())


def summarize(collapsed: str, top: int = 30) -> str:
    """Shares of py-spy's collapsed stacks ("thread;frame;...;frame n"), by function (line
    numbers dropped): inclusive (the function or what it calls), own (the function itself),
    and own time by package, which says whose code the time is spent in."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        thread, *frames = stack.split(";")
        functions = [function(frame) for frame in frames]
        total += n
        threads[thread] += n
        for name in set(functions):
            inclusive[name] += n
        if functions:
            own[functions[-1]] += n
            packages[package(frames[-1])] += n
    rows = [f"py-spy: {total} samples of threads not idle"]
    rows += [f"  {n / total:6.1%}  {name}" for name, n in threads.most_common(4)]
    for title, counts in (("inclusive", inclusive), ("own", own), ("own, by package", packages)):
        rows.append(f"{title}:")
        rows += [f"  {n / total:6.1%}  {name}" for name, n in counts.most_common(top)]
    return "\n".join(rows)


def function(frame: str) -> str:
    """'name (path/file.py:12)' -> 'name (path/file.py)'."""
    return frame.rpartition(":")[0] + ")" if frame.endswith(")") and ":" in frame else frame


def package(frame: str) -> str:
    """The top-level package (or standard-library module) of a frame's file."""
    path = frame.rpartition("(")[2].rstrip(")").rpartition(":")[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return parts[0] if len(parts) > 1 else Path(path).stem


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, all its threads, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def bench(args: argparse.Namespace, bootstrap: str, work: Path) -> None:
    run = uuid.uuid4().hex[:6]
    start = (time.time() // 60 - 60) * 60  # an hour ago: well inside windows.max_age
    per_message = {"single": 1, "batched": args.batch, "columnar": args.batch}
    workers = {kind: Worker(bootstrap, f"peer-{run}-{kind[0]}.", work) for kind in KINDS}
    print(f"load average before: {loadavg()} ({os.cpu_count()} CPUs)", flush=True)
    for kind in KINDS:
        await workers[kind].topics()
        took = await fill(bootstrap, f"{workers[kind].prefix}predictions", args.events,
                          per_message[kind], start, args.random_ids, kind == "columnar")
        print(f"filled {workers[kind].prefix}predictions: {args.events:,} events, "
              f"{per_message[kind]} per message ({kind}), in {took:.1f}s", flush=True)
    python = quix_python(args.venv) if "quix" in args.systems else None
    results: dict[tuple[str, str], dict[str, float]] = {}
    for kind in KINDS:
        topic = f"{workers[kind].prefix}predictions"
        if "raw" in args.systems:
            results[kind, "raw"] = run_json(
                [sys.executable, __file__, "--raw-topic", topic, "--events", str(args.events),
                 "--bootstrap", bootstrap], {}, args.timeout)
        if "factory-pulse" in args.systems:
            results[kind, "factory-pulse"] = workers[kind].measure(args.events, args.timeout)
        if python is not None:
            results[kind, "quix"] = run_json([str(python), "-c", QUIX_CONSUMER], {
                "PEER_BOOTSTRAP": bootstrap, "PEER_TOPIC": topic, "PEER_KIND": kind,
                "PEER_GROUP": f"peer-{run}-quix-{kind}", "PEER_EXPECT": str(args.events),
                "PEER_STATE": str(work / f"quix-{kind}")}, args.timeout)
        for system in args.systems:
            r = results[kind, system]
            print(f"  {kind:7} {system:13} {r['events'] / r['seconds']:>11,.0f} ev/s "
                  f"{r['rss_mib']:>7,.0f} MiB", flush=True)
    print(f"load average after: {loadavg()}")
    report(args, results)
    if args.profile:
        worker = Worker(bootstrap, f"peer-{run}-{args.profile[0]}.", work)
        worker.env["FACTORY_APP_ID"] = f"peer-{run}-profile"
        worker.env["FACTORY_STATE_DIR"] = str(work / "profile")
        await ensure_topics(load_settings(worker.env))
        spy = quix_python(args.venv).parent / "py-spy"
        print(f"\nfactory-pulse, {per_message[args.profile]} event(s) per message, "
              f"{args.profile_seconds}s under py-spy:")
        print(profile(worker, spy, args.profile_seconds, work / "profile.txt"))


def report(args: argparse.Namespace, results: dict[tuple[str, str], dict[str, float]]) -> None:
    def rate(kind: str, system: str) -> float:
        r = results[kind, system]
        return r["events"] / r["seconds"]

    ids = "random 32-character ids" if args.random_ids else "ids p-<n>"
    print(f"\n{args.events:,} predictions per input kind ({ids}), {PARTITIONS} partitions, "
          f"batched = {args.batch} per message\n")
    print("| input | system | events/s | peak RSS | CPU per event |")
    print("|---|---|---|---|---|")
    for kind in KINDS:
        for system in args.systems:
            r = results[kind, system]
            cpu = f"{r['cpu_us']:.1f} µs" if "cpu_us" in r else ""
            print(f"| {kind} | {system} | {rate(kind, system):,.0f} | {r['rss_mib']:,.0f} MiB | "
                  f"{cpu} |")
    if {"factory-pulse", "quix"} <= set(args.systems):
        single = rate("single", "factory-pulse") / rate("single", "quix")
        # the batched goal: factory-pulse as its client library sends (columns), against
        # Quix reading whichever batch form it reads faster
        batched = rate("columnar", "factory-pulse")
        quix = max(rate("batched", "quix"), rate("columnar", "quix"))
        print(f"\nfactory-pulse single-event / Quix single-event: {single:.2f} (goal >= 1.0)")
        print(f"factory-pulse batched (columnar): {batched:,.0f} ev/s (goal >= 250,000), "
              f"{batched / quix:.2f}x Quix's faster batched form (goal >= 3)")
        print(f"factory-pulse batched as JSON arrays: {rate('batched', 'factory-pulse'):,.0f} "
              f"ev/s, {rate('batched', 'factory-pulse') / rate('batched', 'quix'):.2f}x Quix "
              f"on the same arrays")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--events", type=int, default=1_000_000, help="per input kind")
    parser.add_argument("--batch", type=int, default=500, help="events per batched message")
    parser.add_argument("--systems", nargs="+", default=["raw", "factory-pulse", "quix"],
                        choices=["raw", "factory-pulse", "quix"])
    parser.add_argument("--profile", nargs="?", const="single", choices=KINDS,
                        help="then profile factory-pulse on one input kind (default single) "
                             "with py-spy")
    parser.add_argument("--profile-seconds", type=int, default=30)
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench-venv" / "quix",
                        help="the Quix environment (made when missing)")
    parser.add_argument("--timeout", type=float, default=1800, help="per system and kind (s)")
    parser.add_argument("--random-ids", action="store_true",
                        help="ids like UUIDs (random order) instead of p-<n>")
    parser.add_argument("--raw-topic", help=argparse.SUPPRESS)  # (a)'s own process
    args = parser.parse_args()
    if args.raw_topic:
        print(json.dumps(asyncio.run(raw_consume(args.bootstrap, args.raw_topic, args.events))))
        return
    with_broker(lambda bootstrap, work: bench(args, bootstrap, work), args.bootstrap, "fp-peer-")


def with_broker(run: Callable[[str, Path], Awaitable[None]], bootstrap: str | None,
                prefix: str) -> None:
    """`run(bootstrap, work)` in a new work folder, against `bootstrap`, or else a broker
    started for it with the project's own tooling (stopped after)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if bootstrap:
        asyncio.run(run(bootstrap, work))
        return
    broker = LocalBroker(work / "broker", port=free_port(span=2), heap="1g")
    status, _ = broker.start()
    try:
        asyncio.run(run(status.bootstrap, work))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
