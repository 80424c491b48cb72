"""Every use of faust-streaming internals, in one place, each with the reason for it.

The shard runtime takes its input records in bulk outside Faust's per-message path, flushes
batches, writes its tables changelog first, and must not let Faust's consumer commit past a
message it has not applied; a static group member must leave its group when it stops
(aiokafka's coordinator, which Faust drives). Faust has no public API for any of these; what
is used here is read from faust-streaming 0.15.3 (pinned in pyproject.toml) and is checked
by the fault tests whenever that pin moves.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String
from faust.events import Event
from faust.stores.base import SerializedStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)


@contextmanager
def acting_as(event: Any) -> Iterator[None]:
    """Make `event` the current event while writing a table outside the stream loop.

    Faust picks a write's changelog partition and local store from the current event, which
    a batched flush does not have (faust-streaming #497). Any event of the shard's partition
    gives the right answer, and each key is then written once per flush with `table[k] = v`.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def rewind(app: Any, tp: Any, offset: int) -> None:
    """Read partition `tp` again from `offset`.

    Faust's fetcher drops records below a stale read offset after a seek, and records the
    offsets it jumped over as a "gap" that counts as acknowledged, so the group commits past
    records nobody applied (faust-streaming #216, #221). The gap is forgotten here, then the
    consumer seeks (which also resets Faust's read offset).
    """
    consumer = app.consumer
    consumer._gap.pop(tp, None)
    await consumer.seek(tp, offset)


def release(app: Any, message: Any) -> None:
    """Drop a taken message without acknowledging it (it will be read again).

    Acknowledging would let the committed offset pass it; leaving it pending would make
    every later rebalance wait for it (Faust waits until no message is pending).
    """
    app.consumer._unacked_messages.discard(message)


def acknowledge(app: Any, messages: Iterable[Any]) -> None:
    """Acknowledge a flushed batch's messages: what `Message.ack` does to each (a message
    the bulk reader took was never referenced by a stream, so each ack is its final one and
    reaches `Consumer.ack`), under one hold of Faust's `ack_lock` instead of three per
    message, and one wake-up of a rebalance waiting for the acks. Per message that was
    about 3 µs of a one-event message's 28.
    """
    consumer = app.consumer
    acking = app.topics.acks_enabled_for
    committed, index, acked = (consumer._committed_offset, consumer._acked_index,
                               consumer._acked)
    unacked = consumer._unacked_messages
    n = 0
    with ack_lock:
        for message in messages:
            if message.acked:
                continue
            message.refcount = 0
            message.acked = True
            if not acking(message.topic):
                continue
            tp, offset = message.tp, message.offset
            floor = committed[tp]
            if (floor is None or offset >= floor) and offset not in index[tp]:
                unacked.discard(message)
                index[tp].add(offset)
                acked[tp].append(offset)
                n += 1
        consumer._n_acked += n
        notify(consumer._waiting_for_ack)


def as_event(app: Any, message: Any) -> Any:
    """A Faust event of `message`: what a table write outside the stream loop acts as
    (`acting_as`), built once per partition and flush instead of once per message."""
    return Event(app, message.key, message.value, message.headers, message)


class BulkReader:
    """The records of a family's input topics, taken from Faust's fetcher a fetched batch at
    a time.

    Faust hands every record to a stream one at a time: its fetch loop runs each through
    `Service.wait_first` (four tasks and an `asyncio.wait`), the conductor makes an Event
    and queues it, the stream iterator takes it back out; about 55 µs a message, more than
    our ingest of a one-event message (README, Performance). Here the records of `topics`
    are taken out of each fetched batch in `Consumer._wait_next_records` (private), before
    Faust iterates it, and queued in the order Faust would deliver them (its scheduler's
    round robin over topics: what a family applies depends on the order of its topics'
    records, a label before or after its prediction), with the checks Faust's loop makes
    (flow, generation, partitions in use, read offset, the gaps it records for commits).
    Taken messages are tracked and acknowledged as Faust's stream does (the consumer's
    unacknowledged set, `Message.ack`), so commits and rebalances see them as before; one
    not taken is neither: it is read again after a rebalance's seek. A partition holding
    `limit` records stops being fetched until half are taken (Faust's own buffer rule).

    A batch ends when it is full or when its oldest message has waited `within` since it
    was fetched (as a Kafka producer's linger counts from a batch's first record), not
    `within` after `take` was called: a message fetched while the previous batch was
    being applied has waited already. Counted from the call, every batch but a full one
    waited `within` more: after a slow flush, and at the end of a backlog, whose last
    partial batch was idle for most of `within` (0.5 s of a 4 s catch-up of 1M events:
    `bench/peer.py`, 253k against 288k events/s).
    """

    def __init__(self, app: Any, topics: Iterable[str], limit: int) -> None:
        self.app = app
        self.topics = frozenset(topics)
        self.limit = limit
        self.queue: deque[Any] = deque()
        self.fetched: deque[float] = deque()  # when each queued message was fetched
        self.queued_bytes = 0  # of the values queued
        self.held: Counter[Any] = Counter()  # messages queued, by partition
        self.arrived = asyncio.Event()
        readers = _readers(app.consumer)
        for topic in self.topics:
            readers[topic] = self

    async def _keep(self, records: dict[Any, list[Any]], active: set[Any] | None) -> None:
        """What Faust's `Consumer.getmany` and `_drain_messages` do to a record before they
        deliver it, for a whole fetched batch."""
        consumer = self.app.consumer
        if not consumer.flow_active:
            return  # a rebalance: Faust drops the fetch too, and seeks afterwards
        read_offset = consumer._read_offset
        acking = self.app.topics.acks_enabled_for
        buffered = consumer._buffered_partitions
        now = time.monotonic()
        for tp, record in consumer.scheduler.iterate(records):
            if active is not None and tp not in active and tp not in buffered:
                continue
            offset = record.offset
            last = read_offset[tp]
            if last is not None and offset < last:
                continue  # fetched before a seek back: it comes again
            if last and offset - last > 1 and acking(tp.topic):
                await consumer._add_gap(tp, last + 1, offset)
            self.queue.append(consumer._to_message(tp, record))
            self.fetched.append(now)
            self.queued_bytes += len(record.value or b"")
            read_offset[tp] = offset
            self.held[tp] += 1
        for tp in records:
            if self.held[tp] >= self.limit:
                consumer.on_buffer_full(tp)  # (Faust's check: never while recovering)
        if self.queue:
            self.arrived.set()

    async def take(self, max_messages: int, max_bytes: int, within: float) -> list[Any]:
        """Messages until `max_messages` of them, or their values reach `max_bytes` (one
        message at least), tracked as unacknowledged: as soon as that much waits, else
        once the oldest has waited `within` since its fetch; never while a rebalance holds
        the flow."""
        while True:
            while len(self.queue) < max_messages and self.queued_bytes < max_bytes:
                self.arrived.clear()
                if not self.queue:
                    await self.arrived.wait()
                    continue
                left = self.fetched[0] + within - time.monotonic()
                if left <= 0:
                    break
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
            if self.app.flow_control.is_active():
                taken = self._take(max_messages, max_bytes)
                if taken:
                    return taken
            else:
                await asyncio.sleep(within)  # a rebalance holds the flow: wait it out

    def _take(self, max_messages: int, max_bytes: int) -> list[Any]:
        consumer = self.app.consumer
        generation = self.app.consumer_generation_id
        unacked = consumer._unacked_messages
        taken: list[Any] = []
        size = 0
        touched = set()
        while self.queue and len(taken) < max_messages and (size < max_bytes or not taken):
            message = self.queue.popleft()
            self.fetched.popleft()
            value = len(message.value or b"")
            self.queued_bytes -= value
            self.held[message.tp] -= 1
            touched.add(message.tp)
            if message.generation_id != generation:
                continue  # from before a rebalance, which seeked: it comes again
            message.tracked = True
            unacked.add(message)
            taken.append(message)
            size += value
        for tp in touched:
            if tp in consumer._buffered_partitions and self.held[tp] <= self.limit // 2:
                consumer.on_buffer_drop(tp)
        return taken

    def give_back(self, messages: list[Any]) -> None:
        """Messages taken but not applied (a flush ends at its event bound, which is known
        only once they are decoded): first in line again, and due at once (they have waited
        their turn). Untracked until taken again: unacknowledged and never acknowledged,
        no commit passes them, and a rebalance does not wait for them."""
        unacked = self.app.consumer._unacked_messages
        for message in reversed(messages):
            unacked.discard(message)
            message.tracked = False
            self.queue.appendleft(message)
            self.fetched.appendleft(-math.inf)
            self.queued_bytes += len(message.value or b"")
            self.held[message.tp] += 1
        if messages:
            self.arrived.set()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what waits of partitions no longer assigned (their next owner reads it)."""
        gone = set(partitions)
        kept = [(m, t) for m, t in zip(self.queue, self.fetched, strict=True)
                if m.partition not in gone]
        self.queue = deque(m for m, _ in kept)
        self.fetched = deque(t for _, t in kept)
        self.queued_bytes = sum(len(m.value or b"") for m in self.queue)
        for tp in [tp for tp in self.held if tp.partition in gone]:
            del self.held[tp]


# Each consumer's bulk readers by topic; its fetch is diverted once, for all of them.
_READERS: weakref.WeakKeyDictionary[Any, dict[str, BulkReader]] = weakref.WeakKeyDictionary()


def _readers(consumer: Any) -> dict[str, BulkReader]:
    """The readers of `consumer`, whose `_wait_next_records` hands the records of their
    topics to them and the rest to Faust (its fetch loop's one call per fetched batch)."""
    readers = _READERS.get(consumer)
    if readers is not None:
        return readers
    readers = _READERS[consumer] = {}
    fetch = consumer._wait_next_records

    async def wait_next_records(wait: float) -> tuple[Any, Any]:
        records, active = await fetch(wait)
        if records and any(tp.topic in readers for tp in records):
            rest = {}
            mine: dict[BulkReader, dict[Any, list[Any]]] = {}
            for tp, batch in records.items():
                reader = readers.get(tp.topic)
                if reader is None:
                    rest[tp] = batch
                else:  # Faust's own TP: aiokafka's TopicPartition is not one to its asserts
                    mine.setdefault(reader, {})[TP(tp.topic, tp.partition)] = batch
            for reader, batches in mine.items():
                await reader._keep(batches, active)
            records = rest
        return records, active

    consumer._wait_next_records = wait_next_records
    return readers


@dataclass(slots=True)
class TableWrite:
    """One flush's changes to one partition of a table, sent to the changelog only; keys and
    values as the local store takes them (see `send_changelog`)."""

    table: Any
    event: Any
    puts: dict[Any, Any]
    deletes: list[Any]
    sent: list[Any] = field(default_factory=list)


def send_changelog(table: Any, event: Any, puts: dict[str, Any], deletes: list[str],
                   ) -> TableWrite:
    """Send a flush's table changes to the changelog, in order, without touching the local
    store; `apply_local` writes the store once the producer has flushed.

    Faust's `table[k] = v` writes the local store at once and the changelog later, and
    marks the store up to date as each record is acknowledged. A worker killed in between
    leaves its store ahead of the changelog: the extra values are lost when the partition
    moves, so the store could only be trusted after a clean stop and every crash meant
    rebuilding it from the whole changelog (a restart growing with the history). Written
    changelog first, the store is never ahead, and after a crash Faust replays just the
    changelog records past the offset the store was marked with.

    A store of bytes (RocksDB, a `SerializedStore`) gets each key and value encoded once,
    with its own serializers, for the changelog record and the store alike (the bytes
    Faust's recovery copies from one to the other): `table[k] = v` encoded every value
    twice, and the join's chunks are most of a flush. The memory store holds the values
    themselves, and the changelog records are encoded from them as Faust would.
    """
    store = table.data
    if isinstance(store, SerializedStore):
        write = TableWrite(table, event,
                           {store._encode_key(key): store._encode_value(value)
                            for key, value in puts.items()},
                           [store._encode_key(key) for key in deletes])
        keys, values = "raw", "raw"
    else:
        write = TableWrite(table, event, puts, deletes)
        keys, values = table.key_serializer, table.value_serializer
    topic, partition = table.changelog_topic, event.message.partition
    write.sent += [topic.send_soon(key=key, value=None, partition=partition,
                                   key_serializer=keys, value_serializer="raw",
                                   eager_partitioning=True)
                   for key in write.deletes]
    write.sent += [topic.send_soon(key=key, value=value, partition=partition,
                                   key_serializer=keys, value_serializer=values,
                                   eager_partitioning=True)
                   for key, value in write.puts.items()]
    return write


def partition_items(table: Any, partition: int) -> Iterator[tuple[Any, Any]]:
    """The items of one partition of `table`, decoded as `table.items()` decodes them.

    Faust's `items()` reads the local store of every partition the worker owns, so a worker
    loading its N shards read all its state N times over (the join's chunks included). A
    RocksDB store keeps one database per partition (`Store._db_for_partition`, private):
    that one is read alone. Any other store (the memory store) is read whole."""
    store = table.data
    if not isinstance(store, RocksDBStore):
        yield from table.items()
        return
    for key, value in store._visible_items(store._db_for_partition(partition)):
        yield store._decode_key(key), store._decode_value(value)


def changelog_offset(table: Any, partition: int) -> int | None:
    """The offset of the last changelog record of `partition` that the table's local store
    holds (Faust's own bookkeeping, set by recovery and by `apply_local`); None where the
    store keeps none (the memory store)."""
    tp = TP(table.changelog_topic.get_topic_name(), partition)
    offset: int | None = table.data.persisted_offset(tp)
    return offset


async def make_durable(app: Any, writes: Iterable[TableWrite]) -> None:
    """Flush the producer (the changelog writes and every output sent before them), then
    write each table's local store: after this, and only after, may the caller acknowledge
    the input the writes came from. A failure raises before anything is acknowledged."""
    await app.producer.flush()
    for write in writes:
        await apply_local(write)


async def apply_local(write: TableWrite) -> None:
    """Once the changelog has `write.sent`: write the local store, then mark it as up to
    date with the changelog (last, so that a kill part-way replays the whole flush)."""
    delivered = await asyncio.gather(*write.sent)  # each raises if its record was refused
    store = write.table.data
    with acting_as(write.event):
        if isinstance(store, SerializedStore):  # the bytes sent (`send_changelog`)
            for key in write.deletes:
                store._del(key)
            for key, value in write.puts.items():
                store._set(key, value)
        else:
            for key in write.deletes:
                with suppress(KeyError):
                    del store[key]
            for key, value in write.puts.items():
                store[key] = value
    if delivered:
        tp = TP(write.table.changelog_topic.get_topic_name(), write.event.message.partition)
        store.set_persisted_offset(tp, max(meta.offset for meta in delivered))


class _LeaveGroupResponseV3(Response):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(("throttle_time_ms", Int32), ("error_code", Int16),
                    ("members", Array(("member_id", String("utf-8")),
                                      ("group_instance_id", String("utf-8")),
                                      ("error_code", Int16))))


class _LeaveGroupRequestV3(RequestStruct):  # type: ignore[misc]
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(("group", String("utf-8")),
                    ("members", Array(("member_id", String("utf-8")),
                                      ("group_instance_id", String("utf-8")))))


class _StaticLeave(Request[_LeaveGroupRequestV3]):  # type: ignore[misc]
    API_KEY = 13

    def __init__(self, group: str, member_id: str, instance_id: str) -> None:
        self._group, self._member = group, (member_id, instance_id)

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(self._group, [self._member])


_leave_dynamic = GroupCoordinator._maybe_leave_group


async def _leave(coordinator: Any) -> None:
    if coordinator.generation > 0 and coordinator._group_instance_id is not None:
        request = _StaticLeave(coordinator.group_id, coordinator.member_id,
                               coordinator._group_instance_id)
        try:
            response = await coordinator._send_req(request)
        except KafkaError as err:
            log.warning("leaving the group as %s failed: %s", coordinator._group_instance_id, err)
        else:
            codes = [response.error_code] + [member[2] for member in response.members]
            if any(codes):
                log.warning("leaving the group as %s: error codes %s",
                            coordinator._group_instance_id, codes)
            else:
                log.info("left the group as static member %s", coordinator._group_instance_id)
    await _leave_dynamic(coordinator)


def leave_static_group() -> None:
    """Make a static member that stops cleanly leave its group at once.

    aiokafka sends no LeaveGroup for a static member (group.instance.id), like Kafka's Java
    client before KIP-1092, so a clean stop (a scale-down, a deploy) leaves its partitions
    unread until the session timeout. KIP-345's LeaveGroup v3 names the member by its
    instance id; sent on close, the group rebalances at once. A killed worker still
    rejoins under its id without a rebalance. Idempotent; patches aiokafka's coordinator
    class, since Faust builds the consumer (and its coordinator) in its own thread.
    """
    GroupCoordinator._maybe_leave_group = _leave


# Where Faust's own web views live; each is a blueprint named by a string under this package.
_BUILTIN_VIEWS = "faust.web.apps."


# faust-streaming #173: the producer buffer flushes every 100 messages by default, which
# throttles changelog writes far below what one flush produces.
PRODUCER_BUFFER_MESSAGES = 10_000


def batches(stream: Any, size: int, within: float) -> Any:
    """Batches of up to `size` events (or what came within `within` seconds) that stay
    unacknowledged until the caller acks each, after its table writes are durable.

    Faust's public `Stream.take` acknowledges a batch as it yields it, so a crash between
    yield and write would commit records nobody applied; `noack_take` is faust-streaming's
    variant without that (0.15, undocumented)."""
    return stream.noack_take(size, within=within)


def send_watched(topic: Any, message: asyncio.Future[Any]) -> Any:
    """Hand `message` (from `topic.as_future_message`) to the producer's buffer without
    waiting for delivery; the message's own future reports the outcome.

    `Topic.send` awaits the producer's future, and a refusal (a record too large, an
    unknown topic) lands only on the message future, which nobody would read: callers keep
    and watch that one. `publish_message(..., wait=False)` is the channel API under `send`."""
    return topic.publish_message(message, wait=False)


def active_partitions(app: Any) -> set[TP]:
    """The partitions this worker owns as active (not as a standby replica of a table):
    only those report heartbeats. Faust's public `consumer.assignment()` mixes in the
    standbys; its assignor keeps them apart."""
    actives: set[TP] = app.assignor.assigned_actives()
    return actives


def widen_producer_buffer(app: Any) -> None:
    """Let Faust's producer buffer hold a whole flush (`app.producer.buffer` has no setting;
    its `max_messages` attribute is read at each send)."""
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES


async def refresh_metadata(consumer: Any) -> None:
    """Ask the broker for the topics' metadata now: aiokafka's consumer refreshes it only
    every `metadata_max_age_ms` (5 minutes), so a reader started before its topic exists
    would wait that long; the public API has no call for it (`_client` is private)."""
    await consumer._client.force_metadata_update()


def drop_builtin_views(app: Any) -> list[str]:
    """Serve none of Faust's built-in web views; return the prefixes of those dropped.

    Faust's web server mounts blueprints of `faust.web.apps` next to ours: `/router/` (which
    worker holds each table partition and key, and every worker's address), `/table/` (the
    tables, and any key's raw value), and, as settings and `debug` say, `/` with
    `/assignment/` (sensor counters, partition assignment), `/graph/` (the service tree),
    `/performance/` (monitor figures) or a bare index at `/`, where our dashboard is. Their
    settings (`web_router_enabled`, ...; also read from `APP_*` environment variables) cover
    all but the index, so the list the web server applies at start-up
    (`app.web.blueprints._enabled`, private) is filtered here instead, whatever the
    settings. Nothing of ours needs them (no `@app.table_route`, which forwards requests
    between workers through `/router/`). Call before the worker starts: the list is applied
    once, by `Web.init_server`; it raises if that has happened.
    """
    blueprints = app.web.blueprints
    if blueprints.applied:
        raise RuntimeError("Faust's web server has already mounted its views")
    kept: list[tuple[str, Any]] = []
    dropped: list[tuple[str, Any]] = []
    for prefix, blueprint in blueprints._enabled:
        builtin = isinstance(blueprint, str) and blueprint.startswith(_BUILTIN_VIEWS)
        (dropped if builtin else kept).append((prefix, blueprint))
    blueprints._enabled = kept
    return [prefix or "/" for prefix, _ in dropped]


def worker_class() -> type[Any]:
    """faust.Worker that arms `stop_deadline` when a stop signal (SIGTERM, SIGINT) arrives.

    mode's worker turns a signal into `_schedule_shutdown` (private); the loop's own signal
    handlers replace any installed with `signal.signal`, so this is the one place to hear it.
    """
    import faust

    from core.supervision import stop_deadline

    class Worker(faust.Worker):  # type: ignore[misc]
        def _schedule_shutdown(self, signal: Any) -> None:
            if not self._signal_stop_time:
                stop_deadline()
            super()._schedule_shutdown(signal)

    return Worker
