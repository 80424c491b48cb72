"""The producer library: what model servers, trainers and pipelines call to emit events.

Calls never block on Kafka: an event is checked against its schema at once (a bad call raises
`ValidationError` in the caller, not a dead letter later), appended to a per-partition batch,
and sent by a background task every `linger_s` or when a batch is full, as one columnar batch
(`schemas.columnar`: the service decodes and checks it at a fraction of the cost of rows).
Predictions and labels go to the partition of `crc32(event_id)`, deployment steps to the
partition of their model, so the service never has to re-key them.

    async with FactoryClient(load_settings()) as client:
        client.prediction(event_id="r-1", model="churn", version="v3", latency_ms=12.5,
                          predicted=1, score=0.83)
        client.label(event_id="r-1", label=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Literal

import orjson
from aiokafka import AIOKafkaProducer

from core.kafka import client_kwargs
from core.settings import Settings
from core.topics import Topics, route
from schemas import columnar
from schemas.codec import VALIDATORS
from schemas.fields import JSON, Scalar

log = logging.getLogger(__name__)


class FactoryClient:
    """Batched, non-blocking emission of contract events."""

    def __init__(self, settings: Settings, *, batch_size: int = 500, linger_s: float = 0.05,
                 max_buffered: int = 200_000, columnar: bool = True) -> None:
        """`columnar=False` sends batches as JSON arrays: for other consumers of the input
        topics that read only the contract's first two forms (the worker reads all three;
        arrays cost it about twice as much per event)."""
        self.settings = settings
        self.columnar = columnar
        self.topics = Topics(settings.topic_prefix)
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_buffered = max_buffered
        self._batches: dict[tuple[str, int | None], list[JSON]] = defaultdict(list)
        self._buffered = 0
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._partitions: dict[str, int] = {}
        self.sent_events = 0

    async def __aenter__(self) -> FactoryClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            linger_ms=5, max_batch_size=1024 * 1024, acks="all",
            max_request_size=2 * 1024 * 1024, **client_kwargs(self.settings))
        await self._producer.start()
        for base, name in self.topics.inputs.items():
            parts = await self._producer.partitions_for(name)
            self._partitions[base] = len(parts)
        self._task = asyncio.create_task(self._sender())

    async def close(self) -> None:
        """Send everything buffered, then stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()

    # -- the typed API ------------------------------------------------------------------

    def prediction(self, *, event_id: str, model: str, version: str, ts: float | None = None,
                   latency_ms: float | None = None, status: Literal["ok", "error"] = "ok",
                   predicted: Scalar | None = None, score: float | None = None,
                   features: dict[str, float] | None = None, cost_usd: float | None = None,
                   segment: str | None = None) -> None:
        self._emit("predictions", event_id, {
            "event_id": event_id, "ts": _now(ts), "model": model, "version": version,
            "latency_ms": latency_ms, "status": status, "predicted": predicted, "score": score,
            "features": features, "cost_usd": cost_usd, "segment": segment})

    def label(self, *, event_id: str, label: Scalar, ts: float | None = None,
              model: str | None = None) -> None:
        self._emit("labels", event_id, {"event_id": event_id, "ts": _now(ts), "label": label,
                                        "model": model})

    def feedback(self, *, model: str, ts: float | None = None, event_id: str | None = None,
                 version: str | None = None, rating: int | None = None,
                 thumbs: Literal[1, -1] | None = None, engaged: bool | None = None) -> None:
        self._emit("feedback", None, {"ts": _now(ts), "model": model, "event_id": event_id,
                                      "version": version, "rating": rating, "thumbs": thumbs,
                                      "engaged": engaged})

    def deployment(self, *, model: str, version: str, kind: str, ts: float | None = None,
                   run_id: str | None = None, duration_s: float | None = None,
                   trigger: str | None = None, change: str | None = None) -> None:
        self._emit("deployments", model, {
            "ts": _now(ts), "model": model, "version": version, "kind": kind, "run_id": run_id,
            "duration_s": duration_s, "trigger": trigger, "change": change})

    def pipeline_batch(self, *, pipeline: str, stage: str, records: int, duration_s: float,
                       ts: float | None = None, nbytes: int | None = None,
                       status: Literal["ok", "error"] = "ok") -> None:
        self._emit("pipeline", None, {"ts": _now(ts), "pipeline": pipeline, "stage": stage,
                                      "records": records, "duration_s": duration_s,
                                      "bytes": nbytes, "status": status})

    def telemetry(self, event: JSON) -> None:
        """A resource sample (see `schemas.events.Telemetry`); the collector builds these."""
        self._emit("telemetry", None, dict(event))

    def event(self, topic: str, event: JSON) -> None:
        """Any contract event as a dict, e.g. when replaying a recorded log."""
        key = event.get("event_id") if topic in ("predictions", "labels") else (
            event.get("model") if topic == "deployments" else None)
        self._emit(topic, key, dict(event))

    # -- batching -------------------------------------------------------------------------

    def _emit(self, topic: str, key: str | None, event: JSON) -> None:
        event = {k: v for k, v in event.items() if v is not None}
        VALIDATORS[topic].one(event)
        if self._buffered >= self.max_buffered:
            raise BufferError(f"{self._buffered} events buffered: Kafka is not keeping up")
        partition = None if key is None or topic not in self._partitions else route(
            key, self._partitions[topic])
        batch = self._batches[(topic, partition)]
        batch.append(event)
        self._buffered += 1
        if len(batch) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Send every buffered batch and wait for the broker to acknowledge them."""
        if self._producer is None:
            raise RuntimeError("the client is not started")
        batches, self._batches = self._batches, defaultdict(list)
        self._buffered = 0
        sent = []
        for (topic, partition), events in batches.items():
            for start in range(0, len(events), self.batch_size):
                chunk = events[start:start + self.batch_size]
                future = await self._producer.send(self.topics.name(topic), self.value(chunk),
                                                   partition=partition)
                sent.append(((topic, partition), chunk, future))
        results = await asyncio.gather(*(f for _, _, f in sent), return_exceptions=True)
        failed = None
        for (key, chunk, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                self._batches[key][:0] = chunk  # keep it for the next flush, in order
                self._buffered += len(chunk)
                failed = result
            else:
                self.sent_events += len(chunk)
        if failed is not None:
            raise failed

    def value(self, events: list[JSON]) -> bytes:
        """One message's value: a lone event as an object, a batch in columns or an array."""
        if len(events) == 1:
            return orjson.dumps(events[0])
        return orjson.dumps(columnar.encode(events) if self.columnar else events)

    async def _sender(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.linger_s)
            self._wake.clear()
            if self._batches:
                try:
                    await self.flush()
                except Exception:
                    log.exception("sending failed; the events stay buffered for the next try")


def _now(ts: float | None) -> float:
    return time.time() if ts is None else ts
