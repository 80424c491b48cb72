"""Every use of faust-streaming internals, in one place, each with the reason for it.

The shard runtime flushes batches outside Faust's per-message path, writes its tables
changelog first, and must not let Faust's consumer commit past a message it has not
applied; a static group member must leave its group when it stops (aiokafka's coordinator,
which Faust drives). Faust has no public API for any of these; what
is used here is read from faust-streaming 0.15.3 (pinned in pyproject.toml) and is checked
by the fault tests whenever that pin moves.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String
from faust.streams import _current_event
from faust.types import TP

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


def release(app: Any, event: Any) -> None:
    """Drop a delivered message without acknowledging it (it will be read again).

    Acknowledging would let the committed offset pass it; leaving it pending would make
    every later rebalance wait for it (Faust waits until no message is pending).
    """
    app.consumer._unacked_messages.discard(event.message)


@dataclass(slots=True)
class TableWrite:
    """One flush's changes to one partition of a table, sent to the changelog only."""

    table: Any
    event: Any
    puts: dict[str, Any]
    deletes: list[str]
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
    """
    write = TableWrite(table, event, puts, deletes)
    topic, partition = table.changelog_topic, event.message.partition
    write.sent += [topic.send_soon(key=key, value=None, partition=partition,
                                   key_serializer=table.key_serializer,
                                   value_serializer="raw", eager_partitioning=True)
                   for key in deletes]
    write.sent += [topic.send_soon(key=key, value=value, partition=partition,
                                   key_serializer=table.key_serializer,
                                   value_serializer=table.value_serializer,
                                   eager_partitioning=True)
                   for key, value in puts.items()]
    return write


async def apply_local(write: TableWrite) -> None:
    """Once the changelog has `write.sent`: write the local store, then mark it as up to
    date with the changelog (last, so that a kill part-way replays the whole flush)."""
    delivered = await asyncio.gather(*write.sent)  # each raises if its record was refused
    store = write.table.data
    with acting_as(write.event):
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

    from streams.supervision import stop_deadline

    class Worker(faust.Worker):  # type: ignore[misc]
        def _schedule_shutdown(self, signal: Any) -> None:
            if not self._signal_stop_time:
                stop_deadline()
            super()._schedule_shutdown(signal)

    return Worker
