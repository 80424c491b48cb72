"""Producers that never pause, for liveness tests: events stamped with the wall clock.

A background thread sends, every tick, predictions (half as single-event messages, half as
one batch, each to any partition, so some are forwarded between shards), labels for earlier
predictions, and once a second feedback, telemetry, pipeline batches and a deployment step.
It records what it sent, so a test can check counts as well as closing.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tests.harness import Env

INPUTS = ("predictions", "labels", "feedback", "deployments", "telemetry", "pipeline")
MODELS = ("a", "b")


class Traffic:
    """Sends until stopped; `with Traffic(env) as t:` starts it and stops it at the end."""

    def __init__(self, env: Env, topics: tuple[str, ...] = INPUTS, rate: float = 100.0,
                 tick_s: float = 0.1, seed: int = 0, prefix: str = "c") -> None:
        self.env = env
        self.topics = topics
        self.rate = rate
        self.tick_s = tick_s
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.predictions: list[tuple[str, float]] = []  # (model, ts) of every prediction sent
        self.labelled: list[tuple[str, float, bool]] = []  # (model, prediction ts, correct)
        self.messages: Counter[str] = Counter()  # messages delivered per topic
        self.started = self.stopped = 0.0
        self.pauses: list[float] = []  # ticks later than twice their period (print them)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.time()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.stopped = time.time()
        if self._error is not None:
            raise AssertionError(f"the traffic producer failed: {self._error!r}")

    def windows(self, size: float) -> Counter[tuple[str, float]]:
        """Predictions sent per (model, window start)."""
        return Counter((m, ts // size * size) for m, ts in self.predictions)

    def correct(self, size: float) -> Counter[tuple[str, float]]:
        return Counter((m, ts // size * size) for m, ts, ok in self.labelled if ok)

    def labels(self, size: float) -> Counter[tuple[str, float]]:
        return Counter((m, ts // size * size) for m, ts, _ in self.labelled)

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.env.bootstrap, acks="all",
                                    linger_ms=5)
        await producer.start()
        try:
            await self._loop(producer)
        except BaseException as exc:
            self._error = exc
        finally:
            await producer.stop()

    async def _loop(self, producer: AIOKafkaProducer) -> None:
        rng, parts = self.rng, self.env.partitions
        seq = 0
        waiting: list[tuple[float, dict[str, Any]]] = []  # predictions to label later
        next_second = time.time()
        last = time.monotonic()
        sends: list[Any] = []

        def send(base: str, value: Any) -> None:
            sends.append(_deliver(producer, self.env.topic(base), orjson.dumps(value),
                                  rng.randrange(parts)))

        while not self._stop.is_set():
            now = time.time()
            sends.clear()

            if "predictions" in self.topics:
                batch = []
                for _ in range(max(1, round(self.rate * self.tick_s))):
                    seq += 1
                    model = MODELS[seq % len(MODELS)]
                    event = {"event_id": f"{self.prefix}{seq}", "ts": now, "model": model,
                             "version": "1", "predicted": rng.randint(0, 1),
                             "score": rng.random(), "latency_ms": rng.uniform(5, 50),
                             "features": {"x": rng.gauss(0, 1)}}
                    self.predictions.append((model, now))
                    batch.append(event)
                    if seq % 2 == 0 and "labels" in self.topics:
                        waiting.append((now + 1.0, event))
                half = len(batch) // 2
                for event in batch[:half]:
                    send("predictions", event)
                if batch[half:]:
                    send("predictions", batch[half:])
            while waiting and waiting[0][0] <= now:
                _, event = waiting.pop(0)
                label = rng.randint(0, 1)
                send("labels", {"event_id": event["event_id"], "ts": now, "label": label})
                self.labelled.append((event["model"], event["ts"], label == event["predicted"]))
            if now >= next_second:
                next_second += 1.0
                model = MODELS[int(now) % len(MODELS)]
                if "feedback" in self.topics:
                    send("feedback", {"ts": now, "model": model, "rating": rng.randint(1, 5)})
                if "telemetry" in self.topics:
                    send("telemetry", [{"ts": now, "host": "h1", "device": f"gpu{d}",
                                        "kind": "gpu", "util": rng.uniform(0, 100),
                                        "interval_s": 1.0, "model": model} for d in (0, 1)])
                if "pipeline" in self.topics:
                    send("pipeline", {"ts": now, "pipeline": "features", "stage": "join",
                                      "records": rng.randint(100, 1000), "duration_s": 0.5})
                if "deployments" in self.topics and int(now) % 5 == 0:
                    send("deployments", {"ts": now, "model": model, "version": "1",
                                         "kind": "training_started", "run_id": f"r{int(now)}"})
            delivered = await asyncio.gather(*sends)
            for meta in delivered:
                self.messages[meta.topic[len(self.env.prefix):]] += 1
            await asyncio.sleep(max(0.0, self.tick_s - (time.time() - now)))
            tick = time.monotonic()
            if tick - last > 2 * self.tick_s + 0.2:
                self.pauses.append(tick - last)
            last = tick


async def _deliver(producer: AIOKafkaProducer, topic: str, value: bytes, partition: int,
                   limit_s: float = 120.0) -> Any:
    """Send one message until the broker has it, as a producer with retries does: through a
    broker restart the same message may be written twice (the service drops duplicates by
    `event_id`), never lost."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            return await (await producer.send(topic, value, partition=partition))
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
