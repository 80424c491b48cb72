"""The label path of one worker: predictions, then a label for each, columnar.

  python bench/labels.py [--bootstrap HOST:PORT] [--events 1000000] [--random-ids]

`bench/peer.py` times predictions only, which the join adds to its index without a lookup;
a label is looked up (its prediction's model, time and predicted value) and joined, and in a
factory with ground truth there are as many labels as predictions. This fills a topic with
`--events` predictions as the client library sends them (500 a message, columnar, ids as in
`peer.py`), lets a worker read them, then fills the labels topic with one label each, 30 s
after its prediction, 500 a message by partition, and times a restarted worker (its index
taken up from the stop before, as a deployment's restart would) from its "Ready" until its
ingest count holds every label. Prints both rates, the CPU per event of all the worker's
threads, the join's counters afterwards (every label must find its prediction: none may
wait) and the longest event-loop block the worker logged (a flush runs nothing else).
Without `--bootstrap` a broker is started with the project's own tooling.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import Worker, fill, prediction, with_broker
from throughput import PARTITIONS

from core.topics import route
from schemas import columnar

PER_MESSAGE = 500
LABEL_DELAY_S = 30.0


async def fill_labels(bootstrap: str, topic: str, n: int, start: float,
                      random_ids: bool) -> None:
    """A label for each of `fill`'s predictions, columnar, partitioned by event id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                                max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        buckets: dict[int, list[dict[str, object]]] = {}
        pending = []
        step = 600.0 / n  # as `fill` spreads the predictions
        for i in range(n):
            made = prediction(i, start, step, random_ids)
            label = {"event_id": made["event_id"], "ts": made["ts"] + LABEL_DELAY_S,
                     "label": (i // 3) % 2}
            partition = route(str(label["event_id"]), PARTITIONS)
            bucket = buckets.setdefault(partition, [])
            bucket.append(label)
            if len(bucket) == PER_MESSAGE:
                pending.append(await producer.send(
                    topic, orjson.dumps(columnar.encode(bucket)), partition=partition))
                buckets[partition] = []
        for partition, bucket in buckets.items():
            if bucket:
                pending.append(await producer.send(
                    topic, orjson.dumps(columnar.encode(bucket)), partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def longest_block(log: Path) -> float:
    """The longest event-loop block the worker logged, in seconds (0 if none)."""
    blocks = re.findall(r"event loop was blocked for ([0-9.]+)s", log.read_text())
    return max(map(float, blocks), default=0.0)


async def bench(args: argparse.Namespace, bootstrap: str, work: Path) -> None:
    run = uuid.uuid4().hex[:6]
    worker = Worker(bootstrap, f"labels-{run}.", work)
    await worker.topics()
    start = (time.time() // 60 - 60) * 60  # an hour ago: well inside windows.max_age
    await fill(bootstrap, f"{worker.prefix}predictions", args.events, PER_MESSAGE, start,
               args.random_ids, True)
    got = worker.measure(args.events, args.timeout)
    print(f"predictions: {args.events / got['seconds']:,.0f} events/s, "
          f"{got['cpu_us']:.2f} µs CPU an event", flush=True)
    await fill_labels(bootstrap, f"{worker.prefix}labels", args.events, start,
                      args.random_ids)
    worker.log = work / "labels.log"
    join: list[str] = []

    def counters() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics",
                                    timeout=30) as resp:
            join.extend(line for line in resp.read().decode().splitlines() if line.startswith(
                ("factory_labels_waiting", "factory_duplicates", "factory_predictions_joinable")))

    got = worker.measure(args.events, args.timeout, "labels", counters)
    ids = "random 32-character ids" if args.random_ids else "ids p-<n>"
    print(f"labels: {args.events / got['seconds']:,.0f} events/s, {got['cpu_us']:.2f} µs CPU "
          f"an event ({ids})")
    print(f"join afterwards: {', '.join(join)}")
    print(f"longest event-loop block logged while reading labels: {longest_block(worker.log)} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="predictions, and as many labels")
    parser.add_argument("--random-ids", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="per phase (s)")
    args = parser.parse_args()
    with_broker(lambda bootstrap, work: bench(args, bootstrap, work), args.bootstrap,
                "fp-labels-")


if __name__ == "__main__":
    main()
