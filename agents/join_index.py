"""The label join of one shard: predictions held for their label, on disk.

The changelog is the source of truth: each flush writes the join's new rows as table values
`c|<kind>|<seq>` of at most CHUNK_CHARS characters (P predictions, L labels applied, O labels that
came before their prediction), and the label horizon deletes whole chunks. What answers
"is this event_id held, by which model, what did it predict" is derived from those chunks: a
RocksDB database (`rocksdict`) under `<data_dir>/join/<partition>`, wiped and rebuilt from
the chunks whenever the shard is loaded, so a crash can never leave it inconsistent (nor
needs it a write-ahead log); only an index closed between flushes by a clean stop is kept,
for a load at the same changelog offset (`Join.keep`). At 100k predictions/s and a 24 h
horizon that is billions of entries: memory holds only the current flush's rows, counters,
and RocksDB's bounded memtables and block cache.

Column families (keys are event ids, seq is 8 bytes big-endian):
  P: seq + a prediction's model, ts and predicted value (`_Predictions`), for its label
     and for dedup
  L: seq                                 predictions labelled (the first label is kept)
  O: seq + JSON [label, ts, model]       labels waiting for their prediction
  X: newest ts + kind + seq -> JSON ids  every chunk, soonest to expire first
An entry belongs to the chunk whose seq it carries: a chunk's expiry deletes only those, so an
id written again in a later chunk outlives the earlier one.
"""

from __future__ import annotations

import itertools
import math
import operator
import shutil
import struct
from bisect import bisect_right
from collections import deque
from itertools import repeat
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from agents.messages import chunk_key, parse_chunk_key

# A chunk holds rows up to this many characters of ids, models and class values, each row
# counted as at least ROW_CHARS_MIN: about 4,000 rows of the usual kind, a few hundred of the
# longest names allowed (512 characters each), and never over ~650 KB of JSON, whatever the
# input (a chunk is one changelog record: past the message limit, the write would fail).
CHUNK_CHARS = 120_000
ROW_CHARS_MIN = 30
KINDS = ("P", "L", "O")
# What RocksDB may hold in memory for all the joins of a worker together, however many
# shards it has: memtables (this many bytes of recent writes; a full one goes to disk), and
# the block cache, which also holds the files' bloom filters and indexes (else those would
# stay in memory per file, and grow with the index).
MEMTABLES_BYTES = 128 << 20
CACHE_BYTES = 64 << 20
# One memtable. Each prediction is an insert into its skiplist, and a small one stays in the
# CPU's caches: 8 MB rather than 32 cost 3.63 against 3.92 µs of worker CPU an event
# (python bench/ab.py --kinds columnar; with --random-ids 4.96 against 5.07), though lookups
# then probe more files.
WRITE_BUFFER_BYTES = 8 << 20

Prediction = tuple[str, float, Any, int]  # model, ts, predicted, chunk seq
Orphan = tuple[Any, float, str | None, int]  # label, ts, model, chunk seq

_DOUBLE = struct.Struct(">d")
_UNREAD = object()


def _sortable(ts: float) -> bytes:
    """Eight bytes that sort as the float does (-inf and negatives included)."""
    bits = int.from_bytes(_DOUBLE.pack(ts), "big")
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return bits.to_bytes(8, "big")


def _seq(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def _key_order(keys: list[bytes]) -> list[int]:
    """The positions of `keys` in byte order, by their first 16 bytes (keys that share
    those keep their order, so the later of two equal keys is still written last).

    A memtable is a skiplist, and RocksDB inserts a batch's keys in the order given: a key
    that sorts just after the one before is found from that one's position, where any other
    walks the list from the top through memory no longer in the CPU's caches. Sorted first,
    a flush's predictions went in at 120 against 400 ns each (ids `p-<n>` from four
    interleaved messages) and 240 against 900 (random ids), for 90 and 200-300 ns of
    sorting (numpy, on the prefixes as integers).
    """
    prefixes = np.array(keys, "S16").view(">u8").reshape(-1, 2)
    first = prefixes[:, 0]
    order = first.argsort(kind="stable")
    if not np.diff(first[order]).all():  # shared 8-byte prefixes: sort on the next 8 too
        order = np.lexsort((prefixes[:, 1], first))
    return cast(list[int], order.tolist())


# Bloom filters of the ids each join holds (`_Filter`): this many bytes each, and for all
# the joins of a worker together at most FILTERS_BYTES (a join past it looks every id up).
FILTER_BYTES = 8 << 20
FILTERS_BYTES = 64 << 20


class Memory:
    """The memory budget the joins of one worker share (see MEMTABLES_BYTES and
    FILTERS_BYTES)."""

    def __init__(self) -> None:
        self.cache = Cache(CACHE_BYTES)
        self.memtables = WriteBufferManager(MEMTABLES_BYTES, False)
        self.filters_left = FILTERS_BYTES

    def filter(self) -> _Filter | None:
        """A filter for a new join, if the budget holds one (`release` gives it back)."""
        if self.filters_left < FILTER_BYTES:
            return None
        self.filters_left -= FILTER_BYTES
        return _Filter(FILTER_BYTES * 8)

    def release(self, kept: _Filter | None) -> None:
        if kept is not None:
            self.filters_left += FILTER_BYTES

    def options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_write_buffer_manager(self.memtables)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        # Most lookups are misses (a new prediction): bloom filters answer them without
        # searching the memtables or reading the files.
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
        options.set_allow_concurrent_memtable_write(False)  # one writer: the event loop
        options.set_keep_log_file_num(2)
        # Filters and indexes in the cache, in partitions of a few KiB: a file's whole filter
        # (about a MiB per million keys) would be evicted by data blocks and read again and
        # again; only the small top level of each stays pinned.
        table = BlockBasedOptions()
        table.set_block_cache(self.cache)
        table.set_bloom_filter(10, False)
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        return options


class _Filter:
    """A Bloom filter of the ids in P: most ids a batch brings are new, and the filter says
    so for 120 ns an id, where the database's lookup of a missing key costs 400-600 ns
    (its own filters sit in many files' cached partitions). An id it may hold is looked up.

    Every id written to P is added first (by `write_chunks`, or earlier, and at each load
    by `restore`, or by `refill` for a kept index), so it never misses one. Ids that expire
    stay set; once as many ids were added as fill half its bits (3 hashes: a 12 %
    false-positive rate) it is no help any more, and every id is looked up, until the next
    load builds a new one.
    Python's hash of the id (salted per process) gives the bit positions.
    """

    HASHES = 3

    def __init__(self, bits: int) -> None:
        self.bits = np.zeros(bits // 8, np.uint8)
        self.mask = np.uint64(bits - 1)  # (a power of two)
        self.added = 0
        self.capacity = int(bits * math.log(2) / self.HASHES)

    @property
    def useful(self) -> bool:
        return self.added <= self.capacity

    def positions(self, ids: list[str]) -> npt.NDArray[np.uint64]:
        hashed = np.fromiter(map(hash, ids), np.int64, len(ids)).view(np.uint64)
        low, high = hashed & np.uint64(0xFFFF_FFFF), (hashed >> np.uint64(32)) | np.uint64(1)
        steps = np.arange(self.HASHES, dtype=np.uint64)[:, None]
        return ((low + steps * high) & self.mask).ravel()

    def add(self, ids: list[str], at: npt.NDArray[np.uint64] | None = None) -> None:
        """Add `ids` (whose `positions` are `at`, when known)."""
        if not ids or not self.useful:
            return
        at = self.positions(ids) if at is None else at
        np.bitwise_or.at(self.bits, at >> np.uint64(3),
                         np.left_shift(np.uint8(1), (at & np.uint64(7)).astype(np.uint8)))
        self.added += len(ids)

    def may_hold(self, at: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Per id (of `positions` `at`), whether it may have been added."""
        found = (self.bits[at >> np.uint64(3)] >> (at & np.uint64(7)).astype(np.uint8)) & 1
        held: npt.NDArray[np.bool_] = found.reshape(self.HASHES, -1).all(axis=0)
        return held


_FIXED_ROWS = np.dtype([("seq", ">u8"), ("mark", "u1"), ("ts", ">f8"), ("name", ">u2"),
                        ("kind", "u1"), ("value", ">f8")])
_KINDS: dict[type, int] = {type(None): 0, bool: 1, int: 2, float: 3, str: 4}


class _Predictions:
    """The encoding of P values, made for a chunk's rows at once.

    A value is the chunk seq (8 bytes) and then, most often, 20 fixed bytes: a zero byte,
    the time (a big-endian double), the model's code (2 bytes), the predicted value's kind
    (1 byte) and the value (a double, or a name's code). numpy makes those for a whole chunk
    in one pass, seq included: a JSON array per row, the other form, cost 215 ns a row
    against 26. That form (`[model, ts, predicted]`, which starts with `[`) remains for what
    does not fit: a number predicted in a chunk that also predicts names, or names past the
    code table.

    Codes are this index's own (made again when it is rebuilt from the chunks, kept with it
    by `Join.keep`), one table for model names and predicted names, bounded: past MAX_CODES
    names the JSON form is used.
    """

    MAX_CODES = 16_384

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []

    def encode(self, seq: int, models: list[str], ts: list[float],
               predicted: list[Any]) -> list[bytes]:
        n = len(models)
        kinds = set(map(type, predicted))
        if (len(kinds) > 1 and str in kinds) or not kinds <= _KINDS.keys() \
                or not self._coded(models, predicted, kinds):
            tag = _seq(seq)
            return [tag + orjson.dumps(row) for row in zip(models, ts, predicted, strict=True)]
        rows = np.zeros(n, _FIXED_ROWS)
        rows["seq"] = seq
        rows["ts"] = ts
        rows["name"] = np.fromiter(map(self.codes.__getitem__, models), np.uint16, n)
        if len(kinds) == 1:
            kind = kinds.pop()
            rows["kind"] = _KINDS[kind]
            if kind is str:
                rows["value"] = np.fromiter(map(self.codes.__getitem__, predicted), np.float64, n)
            elif kind is not type(None):
                rows["value"] = predicted
        else:  # numbers, booleans and nulls
            rows["kind"] = np.fromiter(map(_KINDS.__getitem__, map(type, predicted)),
                                       np.uint8, n)
            rows["value"] = [0.0 if p is None else p for p in predicted]
        return cast(list[bytes], rows.view(np.dtype(("V", _FIXED_ROWS.itemsize))).tolist())

    def _coded(self, models: list[str], predicted: list[Any], kinds: set[type]) -> bool:
        """Give every name a code; False when the table has no room for them."""
        names = set(models) | (set(predicted) if str in kinds else set())
        new = names - self.codes.keys()
        if len(self.names) + len(new) > self.MAX_CODES:
            return False
        for name in new:
            self.codes[name] = len(self.names)
            self.names.append(name)
        return True

    def decode(self, raw: bytes) -> tuple[str, float, Any]:
        """(model, ts, predicted) of a P value (its seq is the first 8 bytes)."""
        if raw[8] != 0:
            model, ts, guess = orjson.loads(raw[8:])
            return model, ts, guess
        predicted: Any
        _, ts, name, kind, value = _FIXED.unpack_from(raw, 8)
        if kind == 0:
            predicted = None
        elif kind == 1:
            predicted = bool(value)
        elif kind == 2:
            predicted = int(value)
        elif kind == 3:
            predicted = value
        else:
            predicted = self.names[int(value)]
        return self.names[name], ts, predicted


_FIXED = struct.Struct(">BdHBd")  # `_FIXED_ROWS` after the seq, one at a time


_KEPT_NOTE = "kept.json"  # what `Join.keep` left, and for which changelog offset


def _take_kept(path: Path, version: int | None) -> dict[str, Any] | None:
    """The note `Join.keep` left in `path` if it was kept for `version`; the note is
    removed either way, before the files are opened (from then on they may change)."""
    note = path / _KEPT_NOTE
    try:
        kept: dict[str, Any] = orjson.loads(note.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    note.unlink()
    if version is None or kept.get("version") != version:
        return None
    return kept


class Join:
    """The join index of one shard (see the module docstring); `path` is wiped on open,
    unless `keep` left it for this `version` (`reused`: the load then calls `refill`, not
    `restore`).

    Reads see the current flush's changes (kept in memory until `write_chunks`) over the
    database. `joinable` and `waiting` count the entries of P and O, kept as they change.
    """

    def __init__(self, path: Path, memory: Memory | None = None,
                 version: int | None = None) -> None:
        kept = _take_kept(path, version)
        if kept is None:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        self.path = path
        memory = self._memory = memory or Memory()
        self._filter = memory.filter()
        self._db = Rdict(str(path), memory.options(),
                         column_families={name: memory.options() for name in (*KINDS, "X")})
        no_wal = WriteOptions()
        no_wal.disable_wal = True  # rebuilt from the changelog, or flushed by `keep`
        self._db.set_write_options(no_wal)
        self._cf = {name: self._db.get_column_family(name) for name in (*KINDS, "X")}
        self._handle = {name: self._db.get_column_family_handle(name)
                        for name in (*KINDS, "X")}
        self.next_seq = dict.fromkeys(KINDS, 0)
        self._codec = _Predictions()
        # This flush's predictions, most of its rows, as columns in chunk order: a batch of
        # thousands is a few list extends, and a chunk's value is slices of them. Chunk
        # seq `_chunk_seq[k]` starts at row `_chunk_row[k]`; `_predictions` is each id's
        # row, for reads.
        self._ids: list[str] = []
        self._models: list[str] = []
        self._ts: list[float] = []
        self._predicted: list[Any] = []
        self._chunk_row: list[int] = []
        self._chunk_seq: list[int] = []
        self._predictions: dict[str, int] = {}
        # The id filter holds this flush's ids too: a batch's as it is added (from the
        # positions its check just computed), the others' (`_unfiltered`) before the write.
        self._checked: tuple[list[str], npt.NDArray[np.uint64] | None] = ([], None)
        self._unfiltered: list[str] = []
        # This flush's labels and waiting labels, few per event, as rows (each with its
        # chunk seq last), and by id for reads (an orphan joined this flush is None:
        # deleted at the next write).
        self.new_labelled: list[tuple[str, float, int]] = []
        self.new_orphans: list[tuple[str, Any, float, str | None, int]] = []
        self._filled = dict.fromkeys(KINDS, 0)  # characters of this flush's rows, per kind
        self._labelled: dict[str, int] = {}
        self._orphans: dict[str, Orphan | None] = {}
        # Entries read ahead for a batch's labels (`prefetch`), by kind and id: good until
        # the database next changes (`write_chunks`, `expire`, `restore`).
        self._read_ahead: dict[str, dict[str, bytes | None]] = {}
        self.joinable = 0  # predictions held (labelled or not)
        self.waiting = 0  # labels waiting for their prediction
        self.duplicates = 0
        self.unmatched_expired = 0
        self.closed = False
        self.reused = kept is not None
        if kept is not None:
            self._resume(kept)

    # -- kept across a clean stop ----------------------------------------------------------

    def keep(self, version: int) -> None:
        """Close, leaving the files for the next `Join(path, version=version)` to open
        as they are, instead of rebuilding them from the chunks.

        `version` names what the chunks were when this index last matched them: the
        changelog offset the shard's table holds after the last flush, which must be
        durable (the caller keeps a join only between flushes). A later open reuses the
        files only at the same offset: a write to the changelog since (another owner's
        flush) means other chunks, and a rebuild. As Kafka Streams' checkpoint file, the
        note is removed when the files are opened, so a crash after that rebuilds too.
        """
        if self.closed or self._ids or self.new_labelled or self.new_orphans:
            self.close()  # (a flush's rows not written: not a state to keep)
            return
        self._db.flush()  # the memtables to files: there is no write-ahead log to replay
        state: dict[str, Any] = {
            "version": version, "next_seq": self.next_seq, "joinable": self.joinable,
            "waiting": self.waiting, "duplicates": self.duplicates,
            "unmatched_expired": self.unmatched_expired, "names": self._codec.names}
        self.close()
        note = self.path / (_KEPT_NOTE + ".new")
        note.write_bytes(orjson.dumps(state))
        note.replace(self.path / _KEPT_NOTE)

    def _resume(self, kept: dict[str, Any]) -> None:
        """Take up the counters and codes `keep` left. (The id filter is not kept: its
        bit positions come from Python's hash, salted per process. The load refills it
        from the chunks' ids, `refill`.)"""
        self.next_seq = {kind: int(kept["next_seq"][kind]) for kind in KINDS}
        self.joinable, self.waiting = int(kept["joinable"]), int(kept["waiting"])
        self.duplicates = int(kept["duplicates"])
        self.unmatched_expired = int(kept["unmatched_expired"])
        self._codec.names = list(kept["names"])
        self._codec.codes = {name: code for code, name in enumerate(self._codec.names)}

    def refill(self, key: str, value: dict[str, Any]) -> None:
        """What a load does with each chunk of a reused index (`reused`) instead of
        `restore`: the ids of a P chunk go into the id filter (an id the files hold that the
        filter lacked would be taken for new). Chunks expired since stay out, and ids
        written again are added twice, which a Bloom filter does not mind."""
        parsed = parse_chunk_key(key)
        if parsed is None:
            raise ValueError(f"not a chunk key: {key!r}")
        if parsed[0] == "P" and self._filter is not None:
            self._filter.add(value["i"])

    def close(self) -> None:
        """Release the files (and RocksDB's lock: the column families hold the database).

        A shard revoked between its batch and the flush still sends that batch's chunks to
        the changelog (the next owner counts on them): closed, `write_chunks` only returns
        them, and `expire` leaves expiry to the next owner.
        """
        if self.closed:
            return
        self.closed = True
        self._memory.release(self._filter)
        self._filter = None
        self._cf.clear()
        self._handle.clear()
        self._db.close()

    def destroy(self) -> None:
        """Close and delete the files (the shard moved away; the changelog keeps it all)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def _row_seq(self, kind: str, *texts: Any) -> int:
        """The chunk sequence number of a new row of `kind` made of `texts`."""
        filled = self._filled[kind]
        self._filled[kind] = filled + max(ROW_CHARS_MIN, sum(
            len(t) for t in texts if type(t) is str))
        return self.next_seq[kind] + filled // CHUNK_CHARS

    # -- reads -------------------------------------------------------------------------

    def prediction(self, eid: str) -> Prediction | None:
        row = self._predictions.get(eid)
        if row is not None:
            seq = self._chunk_seq[bisect_right(self._chunk_row, row) - 1]
            return self._models[row], self._ts[row], self._predicted[row], seq
        raw = self._get("P", eid)
        if raw is None:
            return None
        model, ts, predicted = self._codec.decode(raw)
        return model, ts, predicted, int.from_bytes(raw[:8], "big")

    def answered(self, eid: str) -> bool:
        """Whether a label of `eid` was applied already or waits for its prediction."""
        if eid in self._labelled:
            return True
        if eid in self._orphans:
            return self._orphans[eid] is not None
        return self._get("L", eid) is not None or (
            bool(self.waiting) and self._get("O", eid) is not None)

    def prefetch(self, ids: list[str]) -> None:
        """Read what the labels `ids` will look up, in one batched read per kind.

        A label's lookups read index blocks no lookup has read before: one by one about
        10-12 µs each in an index of millions of predictions, batched about a third less
        (README, Performance). The reads then answer from these until the database changes.
        """
        self._read_ahead = {}
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        keys = [eid.encode() for eid in wanted]
        for kind in ("P", "L", "O") if self.waiting else ("P", "L"):
            self._read_ahead[kind] = dict(zip(wanted, self._cf[kind].get(keys), strict=True))

    def _get(self, kind: str, eid: str) -> bytes | None:
        """The stored entry of `eid` in `kind`, from what `prefetch` read if it read it."""
        ahead = self._read_ahead.get(kind)
        if ahead is not None:
            raw = ahead.get(eid, _UNREAD)
            if raw is not _UNREAD:
                return raw  # type: ignore[return-value]
        found: bytes | None = self._cf[kind].get(eid.encode())
        return found

    def holds_any(self, ids: list[str]) -> bool:
        """Whether any of `ids` is a prediction held or a label waiting: two lookups of the
        whole batch. Also true for an orphan joined in this flush (the caller then takes
        the event-by-event path, which is exact)."""
        if not self._predictions.keys().isdisjoint(ids):
            return True
        if self.waiting and not self._orphans.keys().isdisjoint(ids):
            return True
        held = ids  # those the database may hold: all, or what the filter cannot rule out
        if self._filter is not None and self._filter.useful:
            at = self._filter.positions(ids)
            self._checked = (ids, at)  # (new ones next: `add_predictions`)
            held = [ids[i] for i in np.flatnonzero(self._filter.may_hold(at)).tolist()]
        if held and self._cf["P"].get([eid.encode() for eid in held]).count(None) != len(held):
            return True
        return bool(self.waiting) and self._cf["O"].get([eid.encode() for eid in ids]).count(
            None) != len(ids)

    # -- changes of this flush -----------------------------------------------------------

    def add_predictions(self, ids: list[str], models: list[str], ts: list[float],
                        predicted: list[Any]) -> None:
        """New predictions, none held yet (see `holds_any`): the same rows and chunks as
        `add_prediction` one at a time, with no Python loop over them."""
        n = len(ids)
        if not n == len(models) == len(ts) == len(predicted):
            raise ValueError("columns of different lengths")
        if not n:
            return
        chars = np.fromiter(map(len, ids), np.int64, n) + np.fromiter(map(len, models),
                                                                    np.int64, n)
        if str in set(map(type, predicted)):
            chars += np.fromiter((len(p) if type(p) is str else 0 for p in predicted),
                                 np.int64, n)
        counted = np.maximum(chars, ROW_CHARS_MIN)
        ends = self._filled["P"] + np.cumsum(counted)
        self._filled["P"] = int(ends[-1])
        seqs = self.next_seq["P"] + (ends - counted) // CHUNK_CHARS
        first = len(self._ids)
        for at in np.flatnonzero(np.diff(seqs, prepend=-1)).tolist():
            self._new_chunk(first + at, int(seqs[at]))
        self._ids.extend(ids)
        self._models.extend(models)
        self._ts.extend(ts)
        self._predicted.extend(predicted)
        self._predictions.update(zip(ids, range(first, first + n), strict=True))
        if self._filter is not None and self._checked[0] is ids:
            self._filter.add(ids, self._checked[1])
        else:
            self._unfiltered.extend(ids)
        self._checked = ([], None)
        self.joinable += n

    def add_prediction(self, eid: str, model: str, ts: float, predicted: Any) -> None:
        row = len(self._ids)
        self._new_chunk(row, self._row_seq("P", eid, model, predicted))
        self._ids.append(eid)
        self._models.append(model)
        self._ts.append(ts)
        self._predicted.append(predicted)
        self._predictions[eid] = row
        self._unfiltered.append(eid)
        self.joinable += 1

    def _new_chunk(self, row: int, seq: int) -> None:
        """Note that prediction row `row` is in chunk `seq` (a new one, or the last)."""
        if not self._chunk_seq or self._chunk_seq[-1] != seq:
            self._chunk_row.append(row)
            self._chunk_seq.append(seq)

    def label(self, eid: str, ts: float) -> None:
        """Record that the prediction `eid` (made at `ts`) got its label."""
        seq = self._labelled[eid] = self._row_seq("L", eid)
        self.new_labelled.append((eid, ts, seq))

    def add_orphan(self, eid: str, label: Any, ts: float, model: str | None) -> None:
        seq = self._row_seq("O", eid, label, model)
        self._orphans[eid] = (label, ts, model, seq)
        self.new_orphans.append((eid, label, ts, model, seq))
        self.waiting += 1

    def pop_orphan(self, eid: str) -> Orphan | None:
        """The label waiting for `eid`, no longer waiting; None if there is none."""
        if eid in self._orphans:
            orphan = self._orphans[eid]
        else:
            raw = self._get("O", eid) if self.waiting else None
            if raw is None:
                return None
            label, ts, model = orjson.loads(raw[8:])
            orphan = (label, ts, model, int.from_bytes(raw[:8], "big"))
        if orphan is not None:
            self._orphans[eid] = None
            self.waiting -= 1
        return orphan

    # -- flush ---------------------------------------------------------------------------

    def write_chunks(self) -> list[tuple[str, dict[str, Any]]]:
        """This flush's rows as changelog chunks (`c|<kind>|<seq>` -> columns), now also
        written to the database in one batch."""
        self._read_ahead = {}
        chunks: list[tuple[str, dict[str, Any]]] = []
        ends = [*self._chunk_row[1:], len(self._ids)] if self._ids else []
        for seq, start, end in zip(self._chunk_seq, self._chunk_row, ends, strict=True):
            ts = self._ts[start:end]
            chunks.append((chunk_key("P", seq), {
                "i": self._ids[start:end], "m": self._models[start:end], "t": ts,
                "p": self._predicted[start:end], "x": max(ts)}))
            self.next_seq["P"] = seq + 1
        self._filled["P"] = 0
        pending: dict[str, list[tuple[Any, ...]]] = {
            "L": self.new_labelled, "O": self.new_orphans}
        columns = {"L": ("i", "t"), "O": ("i", "l", "t", "m")}
        for kind, rows in pending.items():
            for seq, grouped in itertools.groupby(rows, key=operator.itemgetter(-1)):
                part = list(grouped)
                value: dict[str, Any] = {name: [r[i] for r in part]
                                         for i, name in enumerate(columns[kind])}
                value["x"] = max(value["t"])
                chunks.append((chunk_key(kind, seq), value))
                self.next_seq[kind] = seq + 1
            rows.clear()
            self._filled[kind] = 0
        if self._filter is not None:  # (before the ids are in the database)
            self._filter.add(self._unfiltered)
        self._unfiltered.clear()
        self._checked = ([], None)
        if not self.closed:
            self._write(chunks)
        for column in (self._ids, self._models, self._ts, self._predicted, self._chunk_row,
                       self._chunk_seq):
            column.clear()
        self._predictions.clear()
        self._labelled.clear()
        self._orphans.clear()
        return chunks

    def _write(self, chunks: list[tuple[str, dict[str, Any]]]) -> None:
        batch = WriteBatch(raw_mode=True)
        handle = self._handle
        keys: list[bytes] = []
        rows: list[bytes] = []
        for key, value in chunks:
            _, kind, number = key.split("|")
            tag = _seq(int(number))
            batch.put(_sortable(value["x"]) + kind.encode() + tag, orjson.dumps(value["i"]),
                      handle["X"])
            if kind == "P":
                rows += self._codec.encode(int(number), value["m"], value["t"], value["p"])
                keys += map(str.encode, value["i"])
        if len(keys) > 1:
            in_order = operator.itemgetter(*_key_order(keys))
            keys, rows = in_order(keys), in_order(rows)
        # a put per prediction, with no Python frame per row
        deque(map(batch.put, keys, rows, repeat(handle["P"])), maxlen=0)
        for eid, seq in self._labelled.items():
            batch.put(eid.encode(), _seq(seq), handle["L"])
        for eid, orphan in self._orphans.items():
            if orphan is None:
                batch.delete(eid.encode(), handle["O"])
            else:
                batch.put(eid.encode(), _seq(orphan[3]) + orjson.dumps(orphan[:3]),
                          handle["O"])
        self._db.write(batch)

    def expire(self, cutoff: float) -> list[str]:
        """Forget every chunk whose newest row is older than `cutoff`, after `write_chunks`;
        labels that waited in vain are counted. Returns the chunk keys, for the table."""
        gone: list[str] = []
        self._read_ahead = {}
        if self.closed:
            return gone
        bound = _sortable(cutoff)
        chunks = self._cf["X"].iter()
        chunks.seek_to_first()
        while chunks.valid() and chunks.key()[:8] < bound:
            where = chunks.key()
            kind, tag = where[8:9].decode(), where[9:17]
            keys = [eid.encode() for eid in orjson.loads(chunks.value())]
            batch = WriteBatch(raw_mode=True)  # one per chunk: an expiry's batch is bounded
            batch.delete(where, self._handle["X"])
            dropped = 0
            for key, raw in zip(keys, self._cf[kind].get(keys), strict=True):
                if raw is not None and raw.startswith(tag):  # the entry is this chunk's
                    batch.delete(key, self._handle[kind])
                    dropped += 1
            self._db.write(batch)
            if kind == "P":
                self.joinable -= dropped
            elif kind == "O":
                self.waiting -= dropped
                self.unmatched_expired += dropped
            gone.append(chunk_key(kind, int.from_bytes(tag, "big")))
            chunks.next()
        return gone

    # -- rebuild from the changelog --------------------------------------------------------

    def restore(self, key: str, value: dict[str, Any]) -> None:
        """Add one chunk read back from the table, in any order: of two entries for one id,
        the later chunk's wins, and a label applied removes the same id's waiting one."""
        parsed = parse_chunk_key(key)
        if parsed is None:
            raise ValueError(f"not a chunk key: {key!r}")
        kind, seq = parsed
        self._read_ahead = {}
        self.next_seq[kind] = max(self.next_seq[kind], seq + 1)
        tag = _seq(seq)
        ids: list[str] = value["i"]
        keys = [eid.encode() for eid in ids]
        batch = WriteBatch(raw_mode=True)
        batch.put(_sortable(value["x"]) + kind.encode() + tag, orjson.dumps(ids),
                  self._handle["X"])
        if kind == "P":
            if self._filter is not None:
                self._filter.add(ids)
            rows = self._codec.encode(seq, value["m"], value["t"], value["p"])
        elif kind == "L":
            rows = [tag] * len(keys)
            waiting = self._cf["O"].get(keys)
            for k, raw in zip(keys, waiting, strict=True):
                if raw is not None:
                    batch.delete(k, self._handle["O"])
            self.waiting -= len(waiting) - waiting.count(None)
        else:
            rows = [tag + orjson.dumps(row) for row in
                    zip(value["l"], value["t"], value["m"], strict=True)]
            labelled = self._cf["L"].get(keys)
            keys = [k for k, done in zip(keys, labelled, strict=True) if done is None]
            rows = [r for r, done in zip(rows, labelled, strict=True) if done is None]
        added = 0
        for k, row, old in zip(keys, rows, self._cf[kind].get(keys), strict=True):
            if old is None or old[:8] < tag:
                batch.put(k, row, self._handle[kind])
                added += old is None
        self._db.write(batch)
        if kind == "P":
            self.joinable += added
        elif kind == "O":
            self.waiting += added
