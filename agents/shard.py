"""The runtime of a sharded, exactly-counting metric agent.

One shard is one partition number of an agent's input topics (Faust co-partitions every topic
with the same partition count, so partition p of all of them, and of the agent's table, live on
the same worker). Events are taken in batches without acknowledging them; each flush applies
the batch to in-memory window slots, writes every touched table key once, publishes the
touched partial states for the snapshot stage, waits for the producer, and only then
acknowledges the batch, so a committed offset never passes state that is not yet durable.

Every slot stores, next to its state, the highest source offset already applied to it, in
the same changelog record. After a crash the replayed messages at or below a slot's offset
are skipped for that slot: replays cannot double count, without Kafka transactions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from agents.aggregators.window import WindowState
from agents.messages import (
    FORMAT,
    FORMAT_KEY,
    Floors,
    Heartbeats,
    Partial,
    check_format,
    ingest_key,
    is_window_key,
    parse_ingest_key,
    parse_window_key,
    window_key,
    window_start,
)
from core import deadletter
from core.faust_internals import (
    BulkReader,
    TableWrite,
    acknowledge,
    active_partitions,
    as_event,
    changelog_offset,
    make_durable,
    partition_items,
    release,
    rewind,
    send_changelog,
    send_watched,
)
from core.kafka import first_offset
from core.settings import Settings
from schemas.codec import VALIDATORS, Rejection, decode_message, validate_batch
from schemas.columnar import Columns
from schemas.entities import FIELDS, LIMITS, SCOPES
from schemas.fields import JSON, Validator

log = logging.getLogger(__name__)

# After a rewind, deliveries past the record read again are stale (fetched before the seek)
# and dropped, for at most this long; then the log is asked again.
REWIND_WAIT_S = 10.0

# The source name of events another shard forwarded through `<app>-byid`.
FORWARDED = "byid"
# How long a shard holds windows at the oldest event it forwarded: two heartbeats, by when
# the receiver's own report counts the forwards as waiting (or applied).
FORWARD_HOLD_S = 1.0


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """Counts of one source partition, and the offset they include."""

    offset: int = -1
    messages: int = 0
    accepted: int = 0
    rejected: int = 0

    def to_state(self) -> dict[str, int]:
        return {"offset": self.offset, "messages": self.messages,
                "accepted": self.accepted, "rejected": self.rejected}

    @classmethod
    def from_state(cls, state: dict[str, int] | None) -> IngestProgress:
        return cls(**state) if state else cls()


class Message:
    """The decoded, valid events of one Kafka message and where the message came from.

    The events of a columnar batch stay `columns`, which the predictions' fast path reads
    as they are; `events` are made from them only when something reads those (an event
    applied one by one, forwarded, or of another family)."""

    __slots__ = ("_events", "columns", "kind", "offset", "size", "src")

    def __init__(self, src: str, offset: int, events: list[JSON] | Columns,
                 kind: str = "") -> None:
        self.src = src
        self.offset = offset
        self.kind = kind
        self.size = events.size if isinstance(events, Columns) else len(events)
        self.columns = events if isinstance(events, Columns) else None
        self._events = None if isinstance(events, Columns) else events

    @property
    def events(self) -> list[JSON]:
        if self._events is None:
            assert self.columns is not None
            self._events = self.columns.rows()
        return self._events

    def __repr__(self) -> str:
        form = "columns" if self.columns is not None else "events"
        return f"Message({self.src!r}, {self.offset}, {self.size} {form}, {self.kind!r})"


@dataclass(frozen=True, slots=True)
class Batch:
    """A flush's messages for one shard, and per source the lowest offset among them: what
    each window slot compares its offsets with (`Shard.windows`), found once per batch
    rather than once per entity."""

    messages: list[Message]
    lowest: dict[str, int]

    @classmethod
    def of(cls, messages: list[Message]) -> Batch:
        lowest: dict[str, int] = {}
        for message in messages:
            if message.offset < lowest.get(message.src, message.offset + 1):
                lowest[message.src] = message.offset
        return cls(messages, lowest)


@dataclass(slots=True)
class Slot:
    """The state of one (entity, window) in one shard, and the offsets it includes."""

    state: WindowState
    offsets: dict[str, int]
    end: float
    dirty: bool = False

    def accepts(self, message: Message) -> bool:
        return message.offset > self.offsets.get(message.src, -1)


@dataclass
class Shard:
    """In-memory view of one partition of a family's table.

    Holds the slots touched recently (the table keeps all of them until retention) and the
    family's own extra state (the label join, for predictions).
    """

    family: str
    partition: int
    settings: Settings
    slots: dict[str, Slot] = field(default_factory=dict)
    # Every window slot of this partition as last written. Reads never go to the table:
    # Faust looks a key up in the store of the *current event's* partition, which in a
    # batched flush can be another shard's, and would answer "absent" for a slot that exists.
    stored: dict[str, Any] = field(default_factory=dict)
    # (window end, key) of every stored slot, soonest first: expiry finds the cold ones too
    ends: list[tuple[float, str]] = field(default_factory=list)
    ingest: dict[str, IngestProgress] = field(default_factory=dict)
    # what the last completed flush made durable (dead letters included): what the API shows
    ingest_durable: dict[str, IngestProgress] = field(default_factory=dict)
    # Newest event time applied (any source), and per source: newest event time and when
    # (monotonic) it last had an event.
    watermark: float = -math.inf
    source_clocks: dict[str, tuple[float, float]] = field(default_factory=dict)
    # What heartbeats report: event time up to which this shard is complete, as of the last
    # flush (the snapshot stage must never hear of a time whose partials are not yet sent).
    durable_watermark: float = -math.inf
    # Events before this are past retention (dead-lettered), and windows ending before it
    # were deleted: never recreate one empty. Moves at flushes, never back.
    expired_before: float = -math.inf
    # Events of this shard's own sources bound for another shard are dead-lettered before
    # this (its own sources' completeness minus the retention), and this is what it
    # announces as its floor. It depends on nothing the others announce: no shard can wait
    # on another that waits on it. Moves at flushes, never back.
    forward_floor: float = -math.inf
    # Own sources' completeness as of the last flush: all they held up to here is forwarded.
    durable_own: float = -math.inf
    # What the other shards announced (sender partition -> [forward floor, own sources
    # complete until], None when the sender's own sources are quiet): what they forward is
    # never older than their floor, and all they forwarded from before the second is here.
    floors: dict[int, list[float] | None] = field(default_factory=dict)
    floors_changed: bool = False
    # The oldest event time this shard forwarded recently, and when (monotonic): until the
    # receivers' own reports show those forwards, this shard holds windows at that time.
    forwarded_min: float = math.inf
    forwarded_at: float = -math.inf
    extra: Any = None
    # Entity keys with a window inside the retention -> the latest window end, and how many
    # of each scope there are: what `[limits]` caps (`admit`).
    entity_ends: dict[str, float] = field(default_factory=dict)
    entity_counts: Counter[str] = field(default_factory=Counter)
    # Sent in this order at each flush: slots, then join chunks, then ingest progress. A
    # crash part-way leaves a prefix on the changelog, and every prefix replays correctly.
    # The local store is written after the changelog has them (`core.faust_internals`).
    pending_writes: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = field(
        default_factory=lambda: ({}, {}, {}))
    pending_deletes: set[str] = field(default_factory=set)

    def key(self, local: str) -> str:
        return f"{self.partition}|{local}"

    def slot(self, entity: str, size: float, start: float) -> Slot | None:
        """The slot of a window, loaded or created; None when the window is past retention."""
        local = window_key(entity, size, start)
        slot = self.slots.get(local)
        if slot is not None:
            return slot
        end = start + size
        stored = self.stored.get(local)
        if stored is None:
            if end < self.expired_before:
                return None
            slot = Slot(WindowState(), {}, end)
        else:
            slot = Slot(WindowState.from_state(stored["s"]), dict(stored["o"]), end)
        self.slots[local] = slot
        return slot

    def store(self, local: str, value: Any, end: float) -> None:
        """Keep a slot's written value (and know when it expires)."""
        if local not in self.stored:
            heapq.heappush(self.ends, (end, local))
            self._hold(parse_window_key(local)[0], end)
        self.stored[local] = value

    def expire(self) -> None:
        """Delete every slot that ended before `expired_before`, hot or cold."""
        popped = False
        while self.ends and self.ends[0][0] < self.expired_before:
            _, local = heapq.heappop(self.ends)
            if self.stored.pop(local, None) is not None:
                self.delete(local)
            self.slots.pop(local, None)
            popped = True
        if popped:
            for key, end in list(self.entity_ends.items()):
                if end < self.expired_before:
                    del self.entity_ends[key]
                    self.entity_counts[key[0]] -= 1

    def admit(self, keys: Iterable[str], ts: float) -> Rejection | None:
        """Count the entities of an event at `ts` new to this partition, or say why it is
        refused: one of them would be one more than its `[limits]` setting allows here.
        Known ones cost a lookup each: their windows' ends are kept by `store`."""
        new = [key for key in keys if key not in self.entity_ends]
        if not new:
            return None
        for scope, n in Counter(key[0] for key in new).items():
            setting = LIMITS.get(scope)
            if setting is None:
                continue
            cap = getattr(self.settings.limits, setting)
            if self.entity_counts[scope] + n > cap:
                name = SCOPES[scope]
                return Rejection(f"{name}: partition {self.partition} already holds {cap} "
                                 f"{setting} (limits.{setting}); a new {name} is refused "
                                 "until one ages out of the retention",
                                 FIELDS[scope][0], None, b"")
        end = ts + self.settings.window_sizes[-1]
        for key in new:
            self._hold(key, end)
        return None

    def _hold(self, key: str, end: float) -> None:
        if key[0] not in LIMITS:
            return
        before = self.entity_ends.get(key)
        if before is None:
            self.entity_counts[key[0]] += 1
            self.entity_ends[key] = end
        elif end > before:
            self.entity_ends[key] = end

    def put(self, local: str, value: Any, phase: int) -> None:
        self.pending_writes[phase][local] = value
        self.pending_deletes.discard(local)

    def delete(self, local: str) -> None:
        for writes in self.pending_writes:
            writes.pop(local, None)
        self.pending_deletes.add(local)

    def windows(self, entity: str, ts: npt.NDArray[np.float64], msg: npt.NDArray[np.int64],
                batch: Batch) -> Iterator[tuple[WindowState, npt.NDArray[np.int64]]]:
        """For each configured window size and each window the rows fall in: its state and
        the rows (indices into `batch.messages` by `msg`) not yet applied to it. Marks the
        yielded slots dirty.

        A slot whose offsets are all below the batch's (the usual case: no replay) takes
        every row without asking each message; a batch of 4,000 one-event messages asked
        them all for every slot it touched."""
        messages = batch.messages
        for size in self.settings.window_sizes:
            starts = window_start(ts, size)
            for start in np.unique(starts).tolist():
                rows = np.flatnonzero(starts == start)
                slot = self.slot(entity, size, start)
                if slot is None:
                    continue
                offsets = slot.offsets
                if any(offsets.get(src, -1) >= low for src, low in batch.lowest.items()):
                    accepted = np.fromiter((slot.accepts(m) for m in messages), bool,
                                           len(messages))
                    rows = rows[accepted[msg[rows]]]
                    if not rows.size:
                        continue
                slot.dirty = True
                yield slot.state, rows

    def observe(self, newest: dict[str, float]) -> None:
        """Record the newest event time applied from each source in a batch."""
        if not newest:
            return
        now = time.monotonic()
        for src, ts in newest.items():
            before = self.source_clocks.get(src, (-math.inf, now))[0]
            self.source_clocks[src] = (max(before, ts), now)
        self.watermark = max(self.watermark, *newest.values())

    def complete_until(self, own: bool = False) -> float:
        """Event time up to which every source still sending has been applied.

        Sources are read at their own pace (labels run ahead of predictions in a backlog, a
        forwarded stream lags), so the shard is only as far as its slowest active source;
        one silent for `worker.idle` does not hold it back. `own`: the shard's own input
        topics only, without what other shards forwarded to it.
        """
        now = time.monotonic()
        clocks = [clock for src, clock in self.source_clocks.items()
                  if not own or src != FORWARDED]
        active = [ts for ts, wall in clocks if now - wall <= self.settings.idle_s]
        if active:
            return min(active)
        return max((ts for ts, _ in clocks), default=-math.inf) if own else self.watermark

    def forwarded(self, oldest: float) -> None:
        """Record that events as old as `oldest` were just forwarded (and delivered)."""
        now = time.monotonic()
        recent = now - self.forwarded_at < FORWARD_HOLD_S
        self.forwarded_min = min(self.forwarded_min, oldest) if recent else oldest
        self.forwarded_at = now

    def own_quiet(self, now: float) -> bool:
        """No event from the shard's own input topics for `worker.idle` (or ever)."""
        walls = [wall for src, (_, wall) in self.source_clocks.items() if src != FORWARDED]
        return not walls or now - max(walls) > self.settings.idle_s


class FamilyLogic(Protocol):
    """What a metric family plugs into the shard runtime."""

    family: str
    sources: dict[str, str]  # full topic name -> short source name

    def validator(self, src: str) -> Validator | None:
        """The validator for events of `src`, or None for trusted internal topics."""

    def load(self, shard: Shard, items: Iterable[tuple[str, Any]],
             version: int | None = None) -> None:
        """Rebuild the family's extra state from the shard's other stored keys (local
        names), streamed from the table: iterable once, and while it is read the shard's own
        keys (windows, progress) are still being restored. `version` is the offset of the
        table's changelog the keys reflect (None when the store keeps none): what `keep`
        left for the same version may be taken up instead of rebuilt."""

    def unload(self, shard: Shard) -> None:
        """Release what `load` holds outside memory (files): the shard is no longer here."""

    def keep(self, shard: Shard, version: int) -> None:
        """The worker stops between two flushes (every write durable) with the table's
        changelog at offset `version`: release what `load` holds, leaving on disk what a
        load at the same version can take up."""

    def apply(self, shard: Shard, messages: list[Message]) -> list[tuple[Rejection, Message]]:
        """Apply a batch to the shard's slots; return rejected events with their messages."""

    async def before_flush(self, shard: Shard, runtime: ShardRuntime) -> None:
        """Family-specific writes and sends just before the flush (forwards, chunks)."""


def time_rejection(event: JSON, reason: str) -> Rejection:
    return Rejection(reason, "ts", None, orjson.dumps(event))


@dataclass(slots=True)
class Rows:
    """The events of one entity in a batch, with the index of the message each came from."""

    events: list[JSON] = field(default_factory=list)
    msg: list[int] = field(default_factory=list)

    def column(self, name: str) -> npt.NDArray[np.float64]:
        """A numeric column, NaN where the optional field is absent."""
        return np.array([math.nan if e.get(name) is None else e[name] for e in self.events],
                        dtype=np.float64)

    def arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        return self.column("ts"), np.array(self.msg, dtype=np.int64)


def retention_rejection(event: JSON, settings: Settings) -> Rejection:
    return time_rejection(event, f"ts: older than the retention ({settings.retention_s:g}s)")


def group_by_entity(shard: Shard, messages: list[Message],
                    entities: Callable[[JSON], Iterable[str]],
                    ) -> tuple[dict[str, Rows], list[tuple[Rejection, Message]]]:
    """Split a batch by entity, rejecting events older than the retention."""
    oldest = shard.expired_before
    groups: dict[str, Rows] = {}
    rejected: list[tuple[Rejection, Message]] = []
    newest: dict[str, float] = {}
    for mi, message in enumerate(messages):
        for event in message.events:
            ts = event["ts"]
            if ts < oldest:
                rejected.append((retention_rejection(event, shard.settings), message))
                continue
            if ts > newest.get(message.src, -math.inf):
                newest[message.src] = ts
            keys = tuple(entities(event))
            refused = shard.admit(keys, ts)
            if refused is not None:
                rejected.append((dataclasses.replace(refused, raw=orjson.dumps(event)), message))
                continue
            for entity in keys:
                rows = groups.get(entity)
                if rows is None:
                    rows = groups[entity] = Rows()
                rows.events.append(event)
                rows.msg.append(mi)
    shard.observe(newest)
    return groups, rejected


class SimpleLogic:
    """A family without cross-event state: group by entity, update window states."""

    family = ""
    topic = ""

    def __init__(self, settings: Settings, sources: dict[str, str]) -> None:
        self.settings = settings
        self.sources = sources

    def validator(self, src: str) -> Validator | None:
        return VALIDATORS[self.topic]

    def load(self, shard: Shard, items: Iterable[tuple[str, Any]],
             version: int | None = None) -> None:
        shard.extra = None

    def unload(self, shard: Shard) -> None:
        return None

    def keep(self, shard: Shard, version: int) -> None:
        return None

    def entities(self, event: JSON) -> Iterable[str]:
        raise NotImplementedError

    def update(self, entity: str, state: WindowState, rows: Rows,
               picked: npt.NDArray[np.int64]) -> None:
        raise NotImplementedError

    def apply(self, shard: Shard, messages: list[Message]) -> list[tuple[Rejection, Message]]:
        groups, rejected = group_by_entity(shard, messages, self.entities)
        batch = Batch.of(messages)
        for entity, rows in groups.items():
            ts, msg = rows.arrays()
            for state, picked in shard.windows(entity, ts, msg, batch):
                self.update(entity, state, rows, picked)
        return rejected

    async def before_flush(self, shard: Shard, runtime: ShardRuntime) -> None:
        return None


class ShardRuntime:
    """Drives one family: batching, table writes, partials, acks and heartbeats."""

    def __init__(self, app: Any, settings: Settings, logic: FamilyLogic, table: Any,
                 partials: Any, deadletters: Any, byid: Any = None) -> None:
        self.app = app
        self.settings = settings
        self.logic = logic
        self.table = table
        self.partials = partials
        self.deadletters = deadletters
        self.byid = byid
        self.shards: dict[int, Shard] = {}
        # Only a family fed through `byid` receives forwards, so only it needs the floors.
        self.forwarding = FORWARDED in logic.sources.values()
        self.announced: dict[int, list[float] | None] = {}
        # topic partition -> (offset the rewind reads again from, when)
        self.rewound: dict[Any, tuple[int, float]] = {}
        self.reader: BulkReader | None = None
        self.kept = False  # the agent stopped, leaving its shards' state (`_keep`)
        # each loaded shard's table changelog offset, as of its load or last flush
        self.versions: dict[int, int | None] = {}

    def shard(self, partition: int) -> Shard:
        shard = self.shards.get(partition)
        if shard is None:
            shard = Shard(self.logic.family, partition, self.settings)
            prefix = f"{partition}|"
            items = ((k[len(prefix):], v) for k, v in partition_items(self.table, partition)
                     if isinstance(k, str) and k.startswith(prefix))
            rest = self._restore(shard, items)
            version = self.versions[partition] = changelog_offset(self.table, partition)
            self.logic.load(shard, rest, version)
            deque(rest, maxlen=0)  # what the family did not read restores the shard all the same
            shard.put(FORMAT_KEY, FORMAT, 2)  # what this release writes from now on
            shard.durable_watermark = shard.watermark
            shard.expired_before = shard.watermark - self.settings.retention_s
            self._resend_open_windows(shard)
            self.shards[partition] = shard
        return shard

    @staticmethod
    def _restore(shard: Shard, items: Iterable[tuple[str, Any]],
                 ) -> Iterator[tuple[str, Any]]:
        """Restore the shard's own keys as the table streams by (the join's chunks alone can
        be gigabytes: never all in a list); yield the family's keys."""
        for local, value in items:
            if (topic := parse_ingest_key(local)) is not None:
                shard.ingest[topic] = IngestProgress.from_state(value)
                shard.ingest_durable[topic] = shard.ingest[topic]
            elif local == FORMAT_KEY:
                check_format(value, f"the table of shard {shard.family}:{shard.partition}")
            elif local == "floors":
                shard.floors = {int(k): v for k, v in value.items()}
            elif is_window_key(local):
                shard.watermark = max(shard.watermark, value.get("wm", -math.inf))
                _, size, start = parse_window_key(local)
                shard.store(local, value, start + size)
            else:
                yield local, value

    def _resend_open_windows(self, shard: Shard) -> None:
        """Publish the partials of recent windows again when a shard is (re)loaded.

        A partial lost between the table write and its send would otherwise stay missing
        from the snapshot stage until the window changes again; the stage replaces partials,
        so sending one twice is harmless.
        """
        recent = shard.watermark - self.settings.grace_s - self.settings.window_sizes[-1]
        for local in shard.stored:
            entity, size, start = parse_window_key(local)
            if start + size >= recent:
                slot = shard.slot(entity, size, start)
                if slot is not None:
                    slot.dirty = True

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop in-memory state of revoked partitions; the table keeps it for the next owner."""
        gone = set(partitions)
        for partition in gone:
            self.versions.pop(partition, None)
            shard = self.shards.pop(partition, None)
            if shard is not None:
                self.logic.unload(shard)
            self.announced.pop(partition, None)
        for tp in [tp for tp in self.rewound if tp[1] in gone]:
            del self.rewound[tp]
        if self.reader is not None:
            self.reader.forget(gone)

    async def run(self, stream: Any) -> None:
        """The agent body: batches of unacknowledged messages, each flushed then acknowledged.

        The messages come in bulk from the consumer's fetches (`BulkReader`), not one by one
        through the stream; the stream's channel is still iterated once, which subscribes the
        topics and makes this agent own their partitions. A batch ends at `max_batch`
        messages, `max_batch_bytes` of them, or once its oldest message has waited
        `flush_interval_s` since its fetch, whichever comes first: the bytes bound what a
        flush holds in memory whatever the messages' size, the count lets a flush spread
        its fixed cost over many one-event messages. A flush also stops at the message that
        brings it to `max_batch_events` events (known as messages are decoded: the rest go
        back to the reader, first in line), which bounds how long it holds the event loop.
        """
        settings = self.settings
        self.kept = False
        aiter(stream.channel)
        self.reader = BulkReader(self.app, self.logic.sources, self.app.conf.stream_buffer_maxsize)
        while True:
            try:
                messages = await self.reader.take(settings.max_batch, settings.max_batch_bytes,
                                                  settings.flush_interval_s)
            except asyncio.CancelledError:  # a stop, between flushes
                self._keep()
                raise
            try:
                await self._process(messages)
            except BaseException:
                # In-memory state may now be ahead of what was written: drop it, so the
                # shards reload from their tables and the unacknowledged messages replay.
                self.shards.clear()
                raise

    def _keep(self) -> None:
        """Leave each shard's on-disk state for the next load (`FamilyLogic.keep`): the last
        flush is durable, so the table's changelog offset after it (read then: Faust closes
        the table stores before it stops the agents) names what that state reflects.
        The shards are dropped: a load (after a restart, or if the agent runs again) takes
        the state up or rebuilds it."""
        for partition, shard in self.shards.items():
            version = self.versions.get(partition)
            if version is None:
                self.logic.unload(shard)
            else:
                self.logic.keep(shard, version)
        self.shards.clear()
        self.kept = True

    async def _process(self, delivered: list[Any]) -> None:
        by_partition: dict[int, list[Message]] = {}
        shards: dict[int, Shard] = {}
        rejected: list[tuple[Rejection, str, int, int, bytes | None]] = []
        # Events of a partition revoked while this batch was taken are applied all the same:
        # its offsets cannot be committed by this member any more, and the new owner's replay
        # is skipped slot by slot wherever these writes reached the changelog first.
        taken = []
        accepted = self._accepted_times(time.time())  # one clock: the batch was taken just now
        # Per (partition, topic): [offset, messages, accepted, rejected] as the batch goes,
        # made `IngestProgress` once at the end (not one object per message).
        counts: dict[tuple[int, str], list[int]] = {}
        events, most = 0, self.settings.max_batch_events
        for at, msg in enumerate(delivered):
            if events >= most and self.reader is not None:
                self.reader.give_back(delivered[at:])  # the next batch's first
                break
            src = self.logic.sources[msg.topic]
            partition = msg.partition
            shard = shards.get(partition)
            if shard is None:
                shard = shards[partition] = self.shard(partition)
            count = counts.get((partition, msg.topic))
            if count is None:
                progress = shard.ingest.get(msg.topic) or IngestProgress()
                count = counts[partition, msg.topic] = [
                    progress.offset, progress.messages, progress.accepted, progress.rejected]
            if msg.offset <= count[0]:
                taken.append(msg)
                continue  # replayed after a crash: this message is already fully applied
            if msg.offset > count[0] + 1 and not await self._next_in_log(
                    msg.tp, count[0], msg.offset):
                release(self.app, msg)  # not applied, not acknowledged: read again
                continue
            taken.append(msg)
            validate = self.logic.validator(src)
            if validate is None:
                message, rejections = self._internal(shard, src, msg.offset, msg.value,
                                                     accepted)
            else:
                valid, rejections = decode_message(msg.value, validate,
                                                   self.settings.max_message_bytes)
                valid, late = self._screen_time(valid, accepted)
                rejections.extend(late)
                message = Message(src, msg.offset, valid, src)
            if rejections:
                rejected.extend((r, msg.topic, partition, msg.offset, msg.key)
                                for r in rejections)
                count[3] += sum(r.count for r in rejections)
            count[0] = msg.offset
            count[1] += 1
            count[2] += message.size
            events += message.size
            by_partition.setdefault(partition, []).append(message)
        for (partition, topic), count in counts.items():
            shards[partition].ingest[topic] = IngestProgress(*count)
        topics = {src: topic for topic, src in self.logic.sources.items()}
        for partition, messages in by_partition.items():
            for rejection, message in self.logic.apply(shards[partition], messages):
                rejected.append((rejection, topics[message.src], partition, message.offset,
                                 None))
        sent = []
        for rejection, topic, partition, offset, key in rejected:
            sent += await deadletter.publish(self.deadletters, [rejection], topic, partition,
                                             offset, key)
        await deadletter.delivered(sent)  # out before the offsets are recorded
        last = {msg.partition: msg for msg in taken}
        written = []
        for partition, messages in by_partition.items():
            high: dict[str, int] = {}
            for message in messages:
                high[message.src] = max(high.get(message.src, -1), message.offset)
            written.append(await self._flush(shards[partition], high,
                                             as_event(self.app, last[partition])))
        await make_durable(self.app, written)
        for partition in shards:
            self.versions[partition] = changelog_offset(self.table, partition)
        for shard in shards.values():
            shard.ingest_durable = dict(shard.ingest)
            shard.durable_watermark = self._complete_until(shard)
        acknowledge(self.app, taken)
        if self.forwarding:  # at once, not at the next heartbeat: receivers wait for it
            now = time.monotonic()
            await self._announce({p: self._floor(s) for p, s in shards.items()
                                  if not s.own_quiet(now)})

    async def _next_in_log(self, tp: Any, applied: int, offset: int) -> bool:
        """Whether `offset` is the next record of the partition after offset `applied`.

        An offset counts as applied only when its own message was: a delivery that jumps
        over records (Faust around a seek or a rebalance, see `rewind`) is never applied.
        The log says whether the offsets between hold records; if they do, the partition
        is read again from the first of them and deliveries past it are dropped until it
        comes. Offsets with no record between (transaction markers) are a true next.
        """
        rewound = self.rewound.get(tp)
        if rewound is not None:
            expected, since = rewound
            if offset == expected:
                del self.rewound[tp]
                return True
            if expected > applied and time.monotonic() - since < REWIND_WAIT_S:
                return False  # fetched before the rewind: it comes again after `expected`
        first = await first_offset(self.settings, tp.topic, tp.partition, applied + 1)
        if first is not None and first >= offset:
            return True
        log.warning("%s[%d]: delivery jumped from offset %d to %d over records; reading "
                    "again from %s", tp.topic, tp.partition, applied, offset, first)
        self.rewound[tp] = (applied + 1 if first is None else first, time.monotonic())
        await rewind(self.app, tp, applied + 1)
        return False

    def _internal(self, shard: Shard, src: str, offset: int, value: bytes | None,
                  accepted: tuple[float, float]) -> tuple[Message, list[Rejection]]:
        """A record of the shards' own topic: events forwarded by another shard, or its
        floors. Checked like input all the same (anyone who can write to the topic can send
        anything): what is malformed is dead-lettered, never let crash the agent."""
        try:
            doc = orjson.loads(value or b"")
            kind = doc["k"]
            if kind == Floors.KIND:
                shard.floors.update(Floors.from_doc(doc).floors)
                shard.floors_changed = True
                return Message(src, offset, [], kind), []
            validate = self.logic.validator(kind) if isinstance(kind, str) else None
            if validate is None or not isinstance(doc["e"], list):
                raise ValueError(f"unknown kind {kind!r}" if validate is None
                                 else "events must be an array")
            events, rejections = validate_batch(doc["e"], validate)
            screened, late = self._screen_time(events, accepted)
            return Message(src, offset, screened, kind), rejections + late
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
                IndexError) as exc:
            reason = f"malformed record on an internal topic: {type(exc).__name__}: {exc}"
            return Message(src, offset, [], src), [Rejection(reason[:500], None, None,
                                                            value or b"")]

    def _accepted_times(self, now: float) -> tuple[float, float]:
        """The earliest and latest event time accepted at `now` (`_screen_time`)."""
        return now - self.settings.max_age_s, now + self.settings.max_future_s

    def _screen_time(self, events: list[JSON] | Columns, accepted: tuple[float, float],
                     ) -> tuple[list[JSON] | Columns, list[Rejection]]:
        """Events stamped too far in the future would close every window early; events
        older than `windows.max_age` would open windows the retention has long forgotten.
        (A columnar batch with such events is screened as its events.)"""
        low, high = accepted
        if isinstance(events, Columns):
            ts = events.floats("ts")
            if not events.size or (low <= ts.min() and ts.max() <= high):
                return events, []
            events = events.rows()
        for event in events:  # (a loop, not all(): most messages hold one event)
            if not low <= event["ts"] <= high:
                break
        else:
            return events, []
        keep = [e for e in events if low <= e["ts"] <= high]
        out = [time_rejection(e, f"ts: more than {self.settings.max_future_s:g}s in the future"
                              if e["ts"] > high else f"ts: older than windows.max_age "
                              f"({self.settings.max_age_s:g}s) before now")
               for e in events if not low <= e["ts"] <= high]
        return keep, out

    async def _flush(self, shard: Shard, high: dict[str, int], event: Any) -> TableWrite:
        """Apply the batch's slot offsets, send partials and changelog records; the local
        store is written by the caller once the producer has flushed."""
        await self.logic.before_flush(shard, self)
        for local, slot in shard.slots.items():
            if slot.dirty:
                for src, offset in high.items():
                    slot.offsets[src] = max(slot.offsets.get(src, -1), offset)
                value = {"s": slot.state.to_state(), "o": dict(slot.offsets),
                         "wm": shard.watermark}
                shard.put(local, value, 0)
                shard.store(local, value, slot.end)
        for topic, progress in shard.ingest.items():
            shard.put(ingest_key(topic), progress.to_state(), 2)
        max_size = self.settings.window_sizes[-1]
        retention = self.settings.retention_s
        shard.durable_own = shard.complete_until(own=True)
        shard.forward_floor = max(shard.forward_floor, shard.durable_own - retention)
        shard.expired_before = max(shard.expired_before, min(
            self._complete_until(shard) - retention, self._sender_cap(shard, 0)))
        if shard.floors_changed:
            shard.put("floors", {str(k): v for k, v in shard.floors.items()}, 2)
            shard.floors_changed = False
        for local in list(shard.slots):
            slot = shard.slots[local]
            if slot.dirty:
                await self.partials.send(value=Partial(
                    f"{shard.family}:{shard.partition}", local, slot.state.to_state()).encode())
                slot.dirty = False
            if slot.end < shard.watermark - self.settings.grace_s - max_size:
                del shard.slots[local]  # cold: reloaded from the table if touched again
        shard.expire()  # after the partials: an expiring window's last change is sent
        puts = {shard.key(local): value
                for writes in shard.pending_writes for local, value in writes.items()}
        written = send_changelog(self.table, event, puts,
                                 [shard.key(local) for local in shard.pending_deletes])
        for writes in shard.pending_writes:
            writes.clear()
        shard.pending_deletes.clear()
        return written

    def _sender_cap(self, shard: Shard, index: int) -> float:
        """The lowest forward floor (index 0) or "complete until" (1) of the other shards.

        Another shard may still forward events as old as its floor, and has forwarded all it
        read up to its "complete until". Until every other partition has announced, nothing
        moves: a backlog read at start would otherwise run past what is yet to be forwarded.
        """
        if not self.forwarding:
            return math.inf
        cap = math.inf
        for sender in range(self.settings.partitions):
            if sender == shard.partition:
                continue
            if sender not in shard.floors:
                return -math.inf
            announced = shard.floors[sender]
            if announced is not None:
                cap = min(cap, announced[index])
        return cap

    def _complete_until(self, shard: Shard) -> float:
        """Event time up to which the shard has applied its own sources and its forwards."""
        return min(shard.complete_until(), self._sender_cap(shard, 1))

    @staticmethod
    def _floor(shard: Shard) -> list[float]:
        """What a shard whose own sources are busy announces (JSON has no -inf)."""
        return [max(shard.forward_floor, -1e308), max(shard.durable_own, -1e308)]

    async def _announce(self, floors: dict[int, list[float] | None]) -> None:
        """Tell every shard how far these shards are, for those where that changed.

        A shard forwards nothing older than its `forward_floor`, and has forwarded all its own
        sources held up to `durable_own`; one whose own sources are quiet (no event for
        `worker.idle`, nothing waiting) holds nobody back (None). Both figures come from the
        shard's own input topics only, never from what others announced or forwarded to it,
        so announcements cannot wait on each other in a circle. Sent right after the flush
        whose forwards they cover, on the same partitions, so a receiver applies those
        first; sent only on change, so that quiet partitions go quiet.
        """
        changed = {p: f for p, f in floors.items()
                   if p not in self.announced or self.announced[p] != f}
        if not changed:
            return
        value = Floors(changed).encode()
        self.announced.update(changed)
        for partition in range(self.settings.partitions):
            # Not awaited (a heartbeat must not wait out a broker outage): the partition
            # keeps the order, and a failed send makes the next heartbeat announce again.
            message = self.byid.as_future_message(value=value, partition=partition)
            message.add_done_callback(self._announce_failed)
            await send_watched(self.byid, message)

    def _announce_failed(self, message: asyncio.Future[Any]) -> None:
        if not message.cancelled() and message.exception() is not None:
            log.warning("announcing to %s failed (%s); announcing again",
                        self.byid.get_topic_name(), message.exception())
            self.announced.clear()

    async def heartbeat(self) -> None:
        """Tell the snapshot stage how far each assigned shard has got in event time.

        Every assigned shard is loaded here (from its table) once the rebalance and table
        recovery are over, whether or not an event has come since: a shard that waits for
        its first event would report nothing, and hold windows open, forever.

        A shard holds windows open only while records wait in its partitions (end offsets as
        of the consumer's last fetch, which runs continuously, past its durable progress; a
        partition not fetched yet counts as waiting), or while a shard that forwards to it
        has not announced that its own inputs went quiet. A shard that has applied every
        record there is holds nothing: what it gets next is either newer, or late by more
        than the grace and republishes its window. Watermark and offsets are the durable ones:
        partials of what a heartbeat reports are already sent. One message covers all of
        this worker's shards of the family, so the snapshot stage never sees half a tick.
        """
        if self.app.rebalancing or self.app.in_recovery:
            return  # the assignment and the tables are not settled yet
        if self.kept:
            return  # stopping: a load now would take up what `_keep` left, for nothing
        tps = [tp for tp in active_partitions(self.app) if tp.topic in self.logic.sources]
        if not tps:
            return
        consumer = self.app.consumer
        now = time.monotonic()
        backlog: dict[int, int] = {}
        own_backlog: dict[int, int] = {}
        for tp in tps:
            shard = self.shard(tp.partition)
            durable = shard.ingest_durable
            done = durable[tp.topic].offset + 1 if tp.topic in durable else 0
            end = consumer.highwater(tp)
            # Not fetched yet: its backlog is unknown, and a shard that might have one must
            # hold windows open (else the first shard to report would close them all).
            waiting = 1 if end is None else max(0, end - done)
            backlog[tp.partition] = backlog.get(tp.partition, 0) + waiting
            if self.logic.sources[tp.topic] != FORWARDED:
                own_backlog[tp.partition] = own_backlog.get(tp.partition, 0) + waiting
        report: dict[str, tuple[float | None, bool]] = {}
        for partition, waiting in backlog.items():
            shard = self.shards[partition]
            wm = None if shard.durable_watermark == -math.inf else shard.durable_watermark
            # Another shard still sending may have forwards on the way that this one's
            # partitions do not show yet: its announcement caps the watermark, and holds.
            held = self._sender_cap(shard, 1) < math.inf
            if now - shard.forwarded_at < FORWARD_HOLD_S:  # the receivers may not show them
                held = True
                wm = shard.forwarded_min if wm is None else min(wm, shard.forwarded_min)
            report[f"{self.logic.family}:{partition}"] = (wm, waiting == 0 and not held)
        await self.partials.send(value=Heartbeats(report).encode())
        if self.forwarding:
            await self._announce({
                p: None if self.shards[p].own_quiet(now) and not own_backlog.get(p)
                else self._floor(self.shards[p]) for p in backlog})
