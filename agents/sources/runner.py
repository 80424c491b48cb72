"""A `[[sources]]` entry at work in the worker: another system's topic in, prediction events
out to the service's own `predictions` topic, where they are counted like any other.

The two halves of an inference (request and response) can land on different partitions of
the source topic (Knative's KafkaSink keys a record by nothing unless the event carries a
`partitionkey`), so they are brought together in two steps, each with a consumer group of
its own, so that the workers share the work:

1. re-key: every record of the source topics is copied, headers, timestamp and all, to the
   partition of its id in `<app_id>-source-<name>`, with its topic in a header
   (`factory-pulse-origin`); offsets are committed once the copies are delivered;
2. pair: each partition of that topic has a bounded buffer (`pairing.Pairing`: at most
   `max_pending` halves, each for at most `pairing_timeout`); a pair becomes predictions,
   sent to the partition of their `event_id` (so no shard forwards them). Offsets are
   committed only below the oldest half still waiting, so a restart reads the waiting halves
   again and loses none; a pair completed twice gives the same `event_id`s, which the
   service counts once.

A record that does not map, a request whose response never comes, and a prediction that
fails validation are dead-lettered with the reason and the record's topic, partition and
offset. A response whose request never comes is still counted, without features and latency
(KServe's logger in `response` mode sends only those).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition

from agents.sources import kserve, seldon
from agents.sources.mapping import Half, NotMapped, Record
from agents.sources.pairing import Pairing, Waiting
from core.deadletter import dead_letter
from core.kafka import client_kwargs
from core.settings import Settings, Source
from core.topics import Topics, external_topics, route, source_topic
from schemas.codec import VALIDATORS, Rejection, encode
from schemas.fields import ValidationError

log = logging.getLogger(__name__)

# The header a re-keyed copy carries its source topic in.
ORIGIN = "factory-pulse-origin"
# Events per message sent to `predictions` (a batch, as the client library sends).
BATCH = 500
POLL_MS = 500

Held = tuple[Half, ConsumerRecord]
Sent = list[asyncio.Future[Any]]


class Adapter(Protocol):
    """How one kind of source reads a record and maps a pair."""

    def read(self, record: Record) -> Half: ...

    def predictions(self, request: Half | None, response: Half, source: Source,
                    ) -> list[dict[str, Any]]: ...


ADAPTERS: dict[str, Adapter] = {"kserve": kserve, "seldon": seldon}


@dataclass(frozen=True, slots=True)
class _Original:
    """A re-keyed copy as its adapter reads it: on the topic it was copied from (a Seldon
    record's topic names its model and side), with its own headers, key and timestamp."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int

    @classmethod
    def of(cls, copy: ConsumerRecord) -> _Original:
        origin = next((v for k, v in copy.headers if k == ORIGIN), b"")
        return cls(origin.decode("utf-8", "replace"), copy.key, copy.value,
                   [(k, v) for k, v in copy.headers if k != ORIGIN], copy.timestamp)


class _Producer:
    """Predictions and dead letters of one poll, sent together and awaited together."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings
        topics = Topics(settings.topic_prefix)
        self.predictions = topics.name("predictions")
        self.deadletter = topics.name("deadletter")
        self.pending: list[dict[str, Any]] = []
        self.sent: Sent = []

    async def dead(self, reason: str, field: str | None, record: ConsumerRecord,
                   ) -> None:
        rejection = Rejection(reason, field, None, record.value or b"")
        payload = dead_letter(rejection, record.topic, record.partition, record.offset,
                              record.key, self.settings.max_message_bytes)
        self.sent.append(await self.producer.send(self.deadletter, encode(payload),
                                                  key=record.topic.encode()))

    async def predict(self, events: list[dict[str, Any]], record: ConsumerRecord,
                      ) -> None:
        validate = VALIDATORS["predictions"]
        for event in events:
            try:
                self.pending.append(validate.one(event))
            except ValidationError as exc:
                await self.dead(f"mapped prediction {event.get('event_id')!r}: {exc}",
                                exc.field, record)

    async def flush(self) -> None:
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for event in self.pending:
            by_partition.setdefault(route(event["event_id"], self.settings.partitions),
                                    []).append(event)
        for partition, events in by_partition.items():
            for start in range(0, len(events), BATCH):
                self.sent.append(await self.producer.send(
                    self.predictions, encode(events[start:start + BATCH]), partition=partition))
        self.pending = []
        sent, self.sent = self.sent, []
        await asyncio.gather(*sent)


def _why(exc: Exception) -> tuple[str, str | None]:
    """A dead letter's reason and field: a payload that does not map says why; one that
    breaks the adapter in a way no rule foresaw is dead-lettered too (and logged), so that
    no record can stop the source or restart the worker over and over."""
    if isinstance(exc, NotMapped):
        return exc.reason, exc.field
    log.warning("a source record broke its adapter; dead-lettered", exc_info=exc)
    return f"unreadable: {type(exc).__name__}: {exc}"[:500], None


def _consumer(settings: Settings, group: str, *topics: str, **extra: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", **client_kwargs(settings), **extra)


async def _with_clients(settings: Settings, consumer: AIOKafkaConsumer,
                        body: Callable[[AIOKafkaConsumer, _Producer], Awaitable[None]]) -> None:
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **client_kwargs(settings))
    await producer.start()
    await consumer.start()
    try:
        await body(consumer, _Producer(producer, settings))
    finally:
        await consumer.stop()
        await producer.stop()


async def rekey(settings: Settings, source: Source) -> None:
    """Step 1: copy each record of the source topic to the partition of its id."""
    internal = source_topic(settings.app_id, source.name)
    adapter = ADAPTERS[source.kind]

    async def body(consumer: AIOKafkaConsumer, out: _Producer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH)
            for records in batch.values():
                for record in records:
                    try:
                        key = adapter.read(record).id
                    except Exception as exc:  # see _why
                        await out.dead(*_why(exc), record)
                        continue
                    out.sent.append(await out.producer.send(
                        internal, record.value, key=key.encode(),
                        headers=[*record.headers, (ORIGIN, record.topic.encode())],
                        partition=route(key, settings.partitions),
                        timestamp_ms=record.timestamp))
            if batch:
                await out.flush()
                await consumer.commit()

    consumer = _consumer(settings, f"{internal}-in", *external_topics(source))
    await _with_clients(settings, consumer, body)


class _Forget(ConsumerRebalanceListener):  # type: ignore[misc]
    """A revoked partition's waiting halves go: its next owner reads them again from the
    committed offset, which is below them."""

    def __init__(self, buffers: dict[int, Pairing[Held]], read: dict[int, int]) -> None:
        self.buffers = buffers
        self.read = read

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        for tp in revoked:
            self.buffers.pop(tp.partition, None)
            self.read.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        return None


async def pair(settings: Settings, source: Source) -> None:
    """Step 2: pair the halves of each partition, send predictions, commit what is done."""
    internal = source_topic(settings.app_id, source.name)
    adapter = ADAPTERS[source.kind]
    buffers: dict[int, Pairing[Held]] = {}
    read: dict[int, int] = {}  # next offset to read, per partition
    where = f"sources ({source.name})"

    async def unpaired(waiting: Waiting[Held], why: str, out: _Producer) -> None:
        half, record = waiting.item
        if not waiting.is_request:
            await _map(None, waiting.item, out)
            return
        await out.dead(f"no response with id {half.id!r}: {why}", "id", record)

    async def body(consumer: AIOKafkaConsumer, out: _Producer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH)
            now = time.monotonic()
            for tp, records in batch.items():
                buffer = buffers.setdefault(
                    tp.partition, Pairing(source.max_pending, source.pairing_timeout_s))
                for record in records:
                    read[tp.partition] = record.offset + 1
                    try:
                        half = adapter.read(_Original.of(record))
                    except Exception as exc:  # see _why
                        await out.dead(*_why(exc), record)
                        continue
                    other, evicted = buffer.offer(half.id, (half, record), half.is_request,
                                                  record.offset, now)
                    if other is not None:
                        mine: Held = (half, record)
                        request, response = (other.item, mine) if other.is_request else (
                            mine, other.item)
                        await _map(request, response, out)
                    for waiting in evicted:
                        await unpaired(waiting, f"more than {where}.max_pending "
                                       f"({source.max_pending}) halves were waiting", out)
            for buffer in buffers.values():
                for waiting in buffer.expired(now):
                    await unpaired(waiting, f"none within {where}.pairing_timeout "
                                   f"({source.pairing_timeout_s:g}s)", out)
            await out.flush()
            commits = {}
            for tp in consumer.assignment():
                if tp.partition not in read:
                    continue
                low = buffers[tp.partition].low_offset() if tp.partition in buffers else None
                commits[tp] = read[tp.partition] if low is None else low
            if commits:
                try:
                    await consumer.commit(commits)
                except (CommitFailedError, IllegalStateError):  # moved in a rebalance:
                    log.info("%s: partitions moved before a commit; their next owner reads "
                             "them again", where)

    async def _map(request: Held | None, response: Held, out: _Producer) -> None:
        try:
            events = adapter.predictions(request and request[0], response[0], source)
        except Exception as exc:  # see _why
            await out.dead(*_why(exc), response[1])
            return
        await out.predict(events, response[1])

    consumer = _consumer(settings, internal)
    consumer.subscribe([internal], listener=_Forget(buffers, read))
    await _with_clients(settings, consumer, body)


async def run(settings: Settings, source: Source) -> None:
    """Both steps of one source, until cancelled."""
    await asyncio.gather(rekey(settings, source), pair(settings, source))
