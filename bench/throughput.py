"""Throughput and memory of factory-pulse on the real local broker; prints one line per figure.

  python bench/throughput.py [--events 1000000] [--batch 500] [--single 20000]

(a) raw aiokafka consume + orjson decode of the prediction events: the ceiling;
(b) end to end through one worker process: from the first event produced to the snapshot
    that accounts for the last one (and to the moment every event is ingested);
(c) peak RSS of the worker and table bytes per (model, window);
(d) one event per message: our worker against a bare Faust agent that does nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.kafka import ensure_topics  # noqa: E402
from core.settings import load_settings  # noqa: E402
from core.topics import route  # noqa: E402
from schemas import columnar  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402

PARTITIONS = 4
MODELS = ["churn", "intent", "demand", "ranker"]


def events(n: int, start: float, span_s: float, tag: str) -> list[dict[str, Any]]:
    step = span_s / n
    return [{"event_id": f"{tag}-{i}", "ts": start + i * step, "model": MODELS[i % 4],
             "version": "v1", "latency_ms": 5.0 + (i % 97), "status": "ok",
             "predicted": i % 2, "cost_usd": 0.0001} for i in range(n)]


def batches(evs: list[dict[str, Any]], size: int) -> list[tuple[int, bytes]]:
    """Per-partition batches in the client library's way: partition = route(event_id)."""
    per: dict[int, list[dict[str, Any]]] = {}
    out: list[tuple[int, bytes]] = []
    for e in evs:
        p = route(e["event_id"], PARTITIONS)
        bucket = per.setdefault(p, [])
        bucket.append(e)
        if len(bucket) == size:
            out.append((p, orjson.dumps(bucket)))
            per[p] = []
    out.extend((p, orjson.dumps(b)) for p, b in per.items() if b)
    return out


async def produce(bootstrap: str, topic: str, messages: list[tuple[int, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    began = time.monotonic()
    try:
        futures = [await producer.send(topic, value, partition=p) for p, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return began


async def raw_read(bootstrap: str, topic: str, n_events: int,
                   ) -> tuple[int, float, float, float]:
    """Consume and decode the topic's `PARTITIONS` partitions from the start until `n_events`
    events (a message holds one or a list): the ceiling, no processing. Returns the events
    read and the monotonic times before the first fetch, of the first records and of the
    last."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    began = time.monotonic()
    first = 0.0
    while seen < n_events:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        for records in batch.values():
            first = first or time.monotonic()
            for record in records:
                doc = orjson.loads(record.value)
                seen += (len(doc) if isinstance(doc, list) else
                         columnar.shape(doc)[1] if columnar.KEY in doc else 1)
    last = time.monotonic()
    await consumer.stop()
    return seen, began, first, last


async def raw_rate(bootstrap: str, topic: str, n_events: int) -> float:
    seen, began, _, last = await raw_read(bootstrap, topic, n_events)
    return seen / (last - began)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while b"[^Worker]: Ready" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_snapshots(bootstrap: str, topic: str, total: int, timeout_s: float) -> float:
    """Monotonic time at which the published snapshots account for `total` predictions."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    latest: dict[bytes, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    snap = orjson.loads(record.value)
                    if snap.get("model") not in (None, "_factory") and snap["scope"] == "model":
                        latest[record.key] = snap.get("predictions") or 0
            if sum(latest.values()) >= total:
                return time.monotonic()
        raise SystemExit(f"snapshots account for {sum(latest.values())} of {total}")
    finally:
        await consumer.stop()


async def wait_ingested(port: int, topic: str, total: int, timeout_s: float) -> float:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    def accepted() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ingest") as resp:
            return int(orjson.loads(resp.read())["topics"].get(topic, {}).get("accepted", 0))

    while time.monotonic() < deadline:
        got = await asyncio.to_thread(accepted)
        if got >= total:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise SystemExit(f"only {got} of {total} ingested")


BARE_AGENT = textwrap.dedent("""
    import os, faust
    app = faust.App(os.environ["BARE_ID"], broker="kafka://" + os.environ["BARE_BOOTSTRAP"],
                    value_serializer="raw", web_enabled=False,
                    consumer_auto_offset_reset="earliest")
    topic = app.topic(os.environ["BARE_TOPIC"], value_serializer="raw")
    seen = 0
    @app.agent(topic)
    async def count(stream):
        global seen
        async for value in stream:
            seen += 1
            if seen == int(os.environ["BARE_N"]):
                print("BARE_DONE", flush=True)
""")


def bare_rate(bootstrap: str, topic: str, n: int, workdir: Path) -> float:
    script = workdir / "bare.py"
    script.write_text(BARE_AGENT)
    log = workdir / "bare.log"
    env = {**os.environ, "BARE_ID": f"bare-{uuid.uuid4().hex[:6]}", "BARE_BOOTSTRAP": bootstrap,
           "BARE_TOPIC": topic, "BARE_N": str(n), "PYTHONUNBUFFERED": "1"}
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "faust", "--datadir",
                                 str(workdir / "bare-data"), "-A", "bare", "worker", "-l", "info"],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    first = None
    while b"BARE_DONE" not in log.read_bytes():
        if first is None and b"Ready" in log.read_bytes():
            first = time.monotonic()
        if proc.poll() is not None or time.monotonic() - began > 300:
            raise SystemExit(f"bare agent failed:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)
    done = time.monotonic()
    proc.terminate()
    proc.wait(30)
    # The bare agent reads a topic filled beforehand: time from its first fetch to the last.
    return n / (done - (first or began))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--single", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=19492)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fp-bench-"))
    broker = LocalBroker(work / "state", port=args.port, heap="1g")
    status, _ = broker.start()
    try:
        asyncio.run(measure(args, work, status.bootstrap))
    finally:
        broker.stop()


async def measure(args: argparse.Namespace, work: Path, bootstrap: str) -> None:
    if True:
        run = uuid.uuid4().hex[:6]
        start = (time.time() // 60 - 60) * 60  # an hour ago: well inside windows.max_age
        env = {"FACTORY_KAFKA_BOOTSTRAP": bootstrap, "FACTORY_TOPIC_PREFIX": f"b{run}.",
               "FACTORY_APP_ID": f"bench-{run}", "FACTORY_PARTITIONS": str(PARTITIONS),
               "FACTORY_STATE_DIR": str(work / "state"), "FACTORY_WEB_PORT": "16099",
               "FACTORY_IDLE": "1s", "FACTORY_GRACE": "0"}
        settings = load_settings(env)
        await ensure_topics(settings)
        topic = f"b{run}.predictions"

        # (a) the ceiling, on a topic of its own filled beforehand
        raw_topic_env = dict(env, FACTORY_TOPIC_PREFIX=f"r{run}.")
        await ensure_topics(load_settings(raw_topic_env))
        evs = events(args.events, start, 600.0, "raw")
        await produce(bootstrap, f"r{run}.predictions", batches(evs, args.batch))
        raw = await raw_rate(bootstrap, f"r{run}.predictions", args.events)
        print(f"raw aiokafka consume+decode: {raw:,.0f} events/s ({args.events:,} events, "
              f"{args.batch} per message)")

        # (b) + (c) end to end through the worker
        proc = start_worker(env, work / "worker.log")
        evs = events(args.events, start, 600.0, "e2e")
        messages = batches(evs, args.batch)
        watcher = asyncio.create_task(wait_snapshots(bootstrap, f"b{run}.metrics", args.events,
                                                     600))
        ingested = asyncio.create_task(wait_ingested(16099, topic, args.events, 600))
        began = await produce(bootstrap, topic, messages)
        done_ingest = await ingested
        done = await watcher
        e2e = args.events / (done - began)
        print(f"end to end (first produced -> snapshot with the last): {e2e:,.0f} events/s "
              f"in {done - began:.2f}s")
        print(f"ingested (first produced -> every event applied and durable): "
              f"{args.events / (done_ingest - began):,.0f} events/s")
        print(f"ratio end to end / raw: {e2e / raw:.2f}")
        print(f"worker peak RSS: {peak_rss_mb(proc.pid):,.0f} MiB")
        proc.terminate()
        proc.wait(60)
        sizes = [len(r.value) for r in await _changelog(bootstrap,
                                                        f"bench-{run}-shards-predictions-changelog")
                 if b'|w|' in (r.key or b"")]
        print(f"table bytes per (model, window) per shard: mean {sum(sizes) / len(sizes):,.0f}, "
              f"max {max(sizes):,} ({len(sizes)} changelog records)")

        # (d) one event per message
        single_env = dict(env, FACTORY_TOPIC_PREFIX=f"s{run}.", FACTORY_APP_ID=f"single-{run}")
        await ensure_topics(load_settings(single_env))
        one = events(args.single, start, 600.0, "one")
        await produce(bootstrap, f"s{run}.predictions",
                      [(route(e["event_id"], PARTITIONS), orjson.dumps(e)) for e in one])
        bare = bare_rate(bootstrap, f"s{run}.predictions", args.single, work)
        print(f"bare Faust agent, one event per message: {bare:,.0f} messages/s")
        began = time.monotonic()
        proc = start_worker(single_env, work / "single.log")
        ready = time.monotonic()
        done_ingest = await wait_ingested(16099, f"s{run}.predictions", args.single, 600)
        ours = args.single / (done_ingest - ready)
        print(f"factory-pulse worker, one event per message: {ours:,.0f} messages/s "
              f"(ratio to bare: {ours / bare:.2f}; start-up {ready - began:.1f}s excluded)")
        proc.terminate()
        proc.wait(60)


async def _changelog(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


if __name__ == "__main__":
    main()
