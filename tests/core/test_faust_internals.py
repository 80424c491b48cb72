"""The bulk reader against a stand-in for Faust's consumer: what it diverts from a fetch, in
which order, and what it drops, tracks and pauses as Faust's own fetch loop would."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from core.faust_internals import BulkReader, acknowledge


@dataclass
class Record:
    offset: int
    value: bytes = b"{}"


@dataclass(eq=False)
class FakeMessage:
    tp: TP
    offset: int
    generation_id: int
    value: bytes
    tracked: bool = False

    @property
    def partition(self) -> int:
        return self.tp.partition


class FakeConsumer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.fetches: list[dict[TP, list[Record]]] = []
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._buffered_partitions: set[TP] = set()
        self._unacked_messages: set[Any] = set()
        self.flow_active = True
        self.scheduler = DefaultSchedulingStrategy()
        self.gaps: list[tuple[TP, int, int]] = []

    async def _wait_next_records(self, wait: float) -> tuple[Any, Any]:
        return self.fetches.pop(0), None

    async def _add_gap(self, tp: TP, first: int, last: int) -> None:
        self.gaps.append((tp, first, last))

    def _to_message(self, tp: TP, record: Record) -> FakeMessage:
        return FakeMessage(tp, record.offset, self.app.consumer_generation_id, record.value)

    def on_buffer_full(self, tp: TP) -> None:
        self._buffered_partitions.add(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        self._buffered_partitions.discard(tp)


def rig(limit: int = 100) -> tuple[Any, FakeConsumer, BulkReader]:
    app = SimpleNamespace(consumer_generation_id=1,
                          topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
                          flow_control=SimpleNamespace(is_active=lambda: True))
    app.consumer = FakeConsumer(app)
    return app, app.consumer, BulkReader(app, {"p", "l"}, limit)


P0, P1, L0, OTHER = TP("p", 0), TP("p", 1), TP("l", 0), TP("other", 0)
ANY_SIZE = 1 << 30


def test_the_family_topics_leave_faust_in_faust_order_and_are_tracked() -> None:
    async def run() -> None:
        _, consumer, reader = rig()
        consumer.fetches.append({P0: [Record(0), Record(1)], L0: [Record(0)],
                                 P1: [Record(5)], OTHER: [Record(0)]})
        records, _ = await consumer._wait_next_records(1.0)
        assert list(records) == [OTHER]  # the rest is Faust's
        taken = await reader.take(10, ANY_SIZE, 0.01)
        # Faust's round robin over topics (a label next to its prediction), each topic's
        # partitions in turn, each partition in order
        assert [(m.tp, m.offset) for m in taken] == [
            (P0, 0), (L0, 0), (P1, 5), (P0, 1)]
        assert consumer._unacked_messages == set(taken)
        assert all(m.tracked for m in taken)
        assert consumer._read_offset[P0] == 1

    asyncio.run(run())


def test_gaps_are_recorded_stale_records_and_generations_dropped() -> None:
    async def run() -> None:
        app, consumer, reader = rig()
        consumer.fetches.append({P0: [Record(3), Record(7)]})
        await consumer._wait_next_records(1.0)
        assert consumer.gaps == [(P0, 4, 7)]
        consumer._read_offset[P0] = 5  # a seek back: 3 was fetched before it
        consumer.fetches.append({P0: [Record(3), Record(5)]})
        app.consumer_generation_id = 2  # a rebalance: what was queued comes again
        await consumer._wait_next_records(1.0)
        taken = await reader.take(10, ANY_SIZE, 0.01)
        assert [(m.offset, m.generation_id) for m in taken] == [(5, 2)]

    asyncio.run(run())


def test_a_full_partition_is_paused_until_half_is_taken() -> None:
    async def run() -> None:
        _, consumer, reader = rig(limit=4)
        consumer.fetches.append({P0: [Record(i) for i in range(4)]})
        await consumer._wait_next_records(1.0)
        assert consumer._buffered_partitions == {P0}
        assert len(await reader.take(1, ANY_SIZE, 0.01)) == 1
        assert consumer._buffered_partitions == {P0}
        assert len(await reader.take(1, ANY_SIZE, 0.01)) == 1
        assert consumer._buffered_partitions == set()
        reader.forget([0])
        assert not reader.queue
        assert not reader.held

    asyncio.run(run())


def test_a_batch_ends_at_its_byte_bound_but_holds_at_least_one_message() -> None:
    async def run() -> None:
        _, consumer, reader = rig()
        consumer.fetches.append({P0: [Record(i, b"x" * 400) for i in range(10)]})
        await consumer._wait_next_records(1.0)
        assert reader.queued_bytes == 4000
        assert [m.offset for m in await reader.take(100, 1000, 0.01)] == [0, 1, 2]
        assert reader.queued_bytes == 2800
        assert [m.offset for m in await reader.take(100, 10, 0.01)] == [3]  # one, too big
        reader.forget([0])
        assert reader.queued_bytes == 0

    asyncio.run(run())


def test_the_private_attributes_the_adapter_sets_and_calls_exist_in_the_pinned_versions(
) -> None:
    """What `widen_producer_buffer` and `refresh_metadata` rely on: a Faust producer buffer
    whose `max_messages` is an attribute read at send time, and an aiokafka consumer client
    with `force_metadata_update`. A version bump that renames either fails here."""
    import inspect

    import faust
    from aiokafka import AIOKafkaConsumer
    from aiokafka.client import AIOKafkaClient

    from core.faust_internals import PRODUCER_BUFFER_MESSAGES, widen_producer_buffer

    app = faust.App("pin-check", broker="kafka://localhost:1")
    assert app.producer.buffer.max_messages != PRODUCER_BUFFER_MESSAGES
    widen_producer_buffer(app)
    assert app.producer.buffer.max_messages == PRODUCER_BUFFER_MESSAGES
    assert "self.max_messages" in inspect.getsource(type(app.producer.buffer))
    assert callable(AIOKafkaClient.force_metadata_update)  # returns an awaitable future
    assert "_client" in inspect.getsource(AIOKafkaConsumer.__init__)


def test_the_undocumented_channel_stream_and_assignor_calls_exist_in_the_pinned_versions(
) -> None:
    """What `batches`, `send_watched` and `active_partitions` call: `Stream.noack_take`
    (which must not acknowledge what it yields), `Channel.publish_message` with `wait`, and
    the assignor's `assigned_actives`."""
    import inspect

    import faust
    from faust.assignor import PartitionAssignor
    from faust.channels import Channel
    from faust.streams import Stream

    def acks(method: object) -> bool:
        source = inspect.getsource(method)  # type: ignore[arg-type]
        code = [line.split("#")[0] for line in source.splitlines()]
        return any("self.ack(" in line for line in code)

    assert acks(Stream.take)
    assert not acks(Stream.noack_take)
    assert "wait" in inspect.signature(Channel.publish_message).parameters
    assert callable(Channel.as_future_message)
    assert callable(PartitionAssignor.assigned_actives)
    app = faust.App("pin-check-2", broker="kafka://localhost:1")
    assert app.assignor.assigned_actives() == set()


def test_a_bulk_acknowledgement_books_what_faust_books_acking_one_message_at_a_time() -> None:
    """`acknowledge` against Faust's own `Message.ack`, on two real consumers given the same
    messages: new offsets, one acknowledged already, one at or below a committed offset, and
    a topic without acknowledgements."""
    import faust
    from faust.types.tuples import ConsumerMessage

    def rigged(name: str) -> tuple[Any, list[Any]]:
        app = faust.App(name, broker="kafka://localhost:1")
        app.topics.acks_enabled_for = lambda topic: topic != "noack"  # type: ignore[method-assign]
        consumer = app.consumer
        consumer._committed_offset[P1] = 4
        messages = [ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v",
                                    None, tp=tp)
                    for tp, offsets in ((P0, range(6)), (P1, range(2, 8)),
                                        (TP("noack", 0), range(3)))
                    for offset in offsets]
        messages[1].ack(consumer)  # acknowledged before the batch
        for message in messages:
            consumer._unacked_messages.add(message)
        return app, messages

    faust_app, by_faust = rigged("ack-one-by-one")
    bulk_app, by_bulk = rigged("ack-in-bulk")
    for message in by_faust:
        message.ack(faust_app.consumer)
    acknowledge(bulk_app, by_bulk)
    want, got = faust_app.consumer, bulk_app.consumer
    assert dict(got._acked) == dict(want._acked)
    assert dict(got._acked_index) == dict(want._acked_index)
    assert got._n_acked == want._n_acked == 10
    assert {(m.tp, m.offset) for m in got._unacked_messages} == {
        (m.tp, m.offset) for m in want._unacked_messages}
    assert [m.acked for m in by_bulk] == [m.acked for m in by_faust] == [True] * len(by_faust)


def test_a_batch_waits_from_its_oldest_fetch_not_from_the_take() -> None:
    """`within` bounds how long a message waits after its fetch: one fetched while the
    previous batch was applied is taken at once, a fresh one after what is left of it."""
    async def run() -> None:
        _, consumer, reader = rig()
        consumer.fetches.append({P0: [Record(0)]})
        await consumer._wait_next_records(1.0)
        await asyncio.sleep(0.3)  # (the previous batch being applied)
        began = time.monotonic()
        assert [m.offset for m in await reader.take(100, ANY_SIZE, 0.3)] == [0]
        assert time.monotonic() - began < 0.1
        consumer.fetches.append({P0: [Record(1)]})
        await consumer._wait_next_records(1.0)
        fetched = time.monotonic()
        await asyncio.sleep(0.1)
        consumer.fetches.append({P0: [Record(2)]})
        await consumer._wait_next_records(1.0)
        assert [m.offset for m in await reader.take(100, ANY_SIZE, 0.3)] == [1, 2]
        assert 0.29 < time.monotonic() - fetched < 0.4

    asyncio.run(run())


def test_an_empty_reader_waits_for_a_fetch() -> None:
    async def run() -> None:
        _, consumer, reader = rig()
        take = asyncio.ensure_future(reader.take(100, ANY_SIZE, 0.01))
        await asyncio.sleep(0.1)
        assert not take.done()
        consumer.fetches.append({P0: [Record(0)]})
        await consumer._wait_next_records(1.0)
        assert [m.offset for m in await asyncio.wait_for(take, 1.0)] == [0]

    asyncio.run(run())


def test_messages_given_back_come_first_at_once_and_untracked() -> None:
    """A flush that ends at its event bound gives the rest back: they are taken first by
    the next batch, without waiting, and are not acknowledged-pending meanwhile."""
    async def run() -> None:
        _, consumer, reader = rig()
        consumer.fetches.append({P0: [Record(i, b"x" * 10) for i in range(4)]})
        await consumer._wait_next_records(1.0)
        taken = await reader.take(100, ANY_SIZE, 0.01)
        assert [m.offset for m in taken] == [0, 1, 2, 3]
        reader.give_back(taken[2:])
        assert consumer._unacked_messages == set(taken[:2])
        assert not taken[2].tracked
        assert (reader.queued_bytes, reader.held[P0]) == (20, 2)
        consumer.fetches.append({P0: [Record(4, b"x" * 10)]})
        await consumer._wait_next_records(1.0)
        began = time.monotonic()
        again = await reader.take(100, ANY_SIZE, 5.0)  # due at once: the first waited
        assert time.monotonic() - began < 0.5
        assert [m.offset for m in again] == [2, 3, 4]
        assert all(m.tracked for m in again)
        assert consumer._unacked_messages == set(taken[:2]) | set(again)

    asyncio.run(run())
