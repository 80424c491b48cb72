"""The join index on disk: reads through the flush's changes, chunks, expiry, rebuild."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.join_index import (
    CHUNK_CHARS,
    FILTER_BYTES,
    FILTERS_BYTES,
    ROW_CHARS_MIN,
    Join,
    Memory,
    _key_order,
)

CHUNK_ROWS = CHUNK_CHARS // ROW_CHARS_MIN  # rows of short ids and models per chunk


class Changelog:
    """What the table holds: the chunks written, less those expired."""

    def __init__(self) -> None:
        self.chunks: dict[str, dict[str, Any]] = {}

    def flush(self, join: Join, cutoff: float = float("-inf")) -> list[str]:
        self.chunks.update(join.write_chunks())
        gone = join.expire(cutoff)
        for key in gone:
            del self.chunks[key]
        return gone


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def predict(join: Join, names: list[str], ts: float, model: str = "m") -> None:
    join.add_predictions(names, [model] * len(names), [ts] * len(names),
                         list(range(len(names))))


@pytest.fixture
def join(tmp_path: Path) -> Join:
    return Join(tmp_path / "join" / "0")


def test_predictions_are_read_back_before_and_after_the_write(join: Join) -> None:
    predict(join, ["a", "b"], 100.0)
    join.add_prediction("c", "n", 101.5, {"class": "x"})
    assert join.prediction("a") == ("m", 100.0, 0, 0)
    assert join.prediction("zz") is None
    Changelog().flush(join)
    assert join.prediction("b") == ("m", 100.0, 1, 0)
    assert join.prediction("c") == ("n", 101.5, {"class": "x"}, 0)
    assert join.prediction("zz") is None
    assert join.joinable == 3


def test_holds_any_finds_held_predictions_and_waiting_labels(join: Join) -> None:
    predict(join, ["a"], 1.0)
    assert join.holds_any(["x", "a"])  # in this flush
    Changelog().flush(join)
    assert join.holds_any(["x", "a"])  # on disk
    assert not join.holds_any(["x", "y"])
    join.add_orphan("o", "cat", 2.0, None)
    assert join.holds_any(["o"])
    Changelog().flush(join)
    assert join.holds_any(["y", "o"])
    assert not join.holds_any(["y", "z"])


def test_an_orphan_is_answered_until_taken_once(join: Join) -> None:
    join.add_orphan("o1", "cat", 5.0, "m")
    join.add_orphan("o2", "dog", 6.0, None)
    assert join.waiting == 2
    assert join.answered("o1")
    assert join.pop_orphan("o1") == ("cat", 5.0, "m", 0)
    assert join.pop_orphan("o1") is None
    assert not join.answered("o1")
    Changelog().flush(join)
    assert join.answered("o2")
    assert join.pop_orphan("o2") == ("dog", 6.0, None, 0)
    assert not join.answered("o2")
    assert join.waiting == 0
    Changelog().flush(join)
    assert join.pop_orphan("o2") is None  # the taking was written too
    assert not join.holds_any(["o1", "o2"])


def test_labelled_is_answered_in_the_flush_and_after(join: Join) -> None:
    predict(join, ["a"], 1.0)
    join.label("a", 1.0)
    assert join.answered("a")
    Changelog().flush(join)
    assert join.answered("a")
    assert not join.answered("b")


def test_chunks_of_the_longest_names_stay_far_below_the_message_limit(join: Join) -> None:
    # 512-character ids, models and class names of 4-byte characters: 6 KB a row
    log = Changelog()
    n = 4000
    names = [f"{i:06d}" + "\U0001f600" * 506 for i in range(n)]
    join.add_predictions(names, ["\U0001f600" * 512] * n, [1.0] * n, names)
    for eid in names[:100]:
        join.add_orphan("o" + eid[:-1], eid, 2.0, "\U0001f600" * 512)
    log.flush(join)
    sizes = [len(orjson.dumps(value)) for value in log.chunks.values()]
    assert sum(len(v["i"]) for k, v in log.chunks.items() if k.startswith("c|P|")) == n
    assert max(sizes) < 700 * 1024, max(sizes)
    assert len(sizes) > 30  # split by size, not by rows


def test_rows_go_to_chunks_of_at_most_chunk_rows(join: Join) -> None:
    log = Changelog()
    first = ids("a", CHUNK_ROWS + 10)
    predict(join, first[:5], 10.0)
    predict(join, first[5:], 20.0)
    log.flush(join)
    assert sorted(log.chunks) == ["c|P|0", "c|P|1"]
    assert len(log.chunks["c|P|0"]["i"]) == CHUNK_ROWS
    assert log.chunks["c|P|1"]["i"] == first[CHUNK_ROWS:]
    assert log.chunks["c|P|1"]["x"] == 20.0
    assert join.prediction(first[CHUNK_ROWS - 1])[3] == 0  # type: ignore[index]
    assert join.prediction(first[CHUNK_ROWS])[3] == 1  # type: ignore[index]
    predict(join, ["b"], 30.0)
    log.flush(join)
    assert "c|P|2" in log.chunks


def test_batches_make_the_rows_and_chunks_of_one_at_a_time(tmp_path: Path) -> None:
    """`add_predictions` (the fast path) and `add_prediction` (event by event) must give the
    same chunks, reads and database: mixed, across chunk boundaries, with class names."""
    rng = random.Random(5)
    rows = [(f"e{i}" + "x" * rng.choice((0, 0, 40, 600)), rng.choice(("m", "model-" * 20)),
             float(i), rng.choice((0, 1.5, "cat" * rng.randint(1, 200), None, True)))
            for i in range(9000)]
    batched, single = Join(tmp_path / "b"), Join(tmp_path / "s")
    logs = Changelog(), Changelog()
    at = 0
    for size in (1, 700, 1, 1, 3000, 5, 2000, 1293, 1999):
        part = rows[at:at + size]
        at += size
        if size == 1:
            batched.add_prediction(*part[0])
        else:
            batched.add_predictions(*map(list, zip(*part, strict=True)))
        for row in part:
            single.add_prediction(*row)
        if size == 3000:
            assert [batched.prediction(r[0]) for r in rows[:at]] == [
                single.prediction(r[0]) for r in rows[:at]]
            for log, join in zip(logs, (batched, single), strict=True):
                log.flush(join)
    assert at == len(rows)
    for log, join in zip(logs, (batched, single), strict=True):
        log.flush(join)
    assert logs[0].chunks == logs[1].chunks
    assert len(logs[0].chunks) > 5
    assert [batched.prediction(r[0]) for r in rows] == [single.prediction(r[0]) for r in rows]
    assert batched.joinable == single.joinable == len(rows)
    stored = [dict(join._cf["P"].items()) for join in (batched, single)]
    assert stored[0] == stored[1]
    assert len(stored[0]) == len(rows)


def test_reads_after_a_prefetch_answer_as_without_it(tmp_path: Path) -> None:
    """`prefetch` reads ahead for a batch's labels; every read must answer as the database
    and the flush's changes would, also once the database has changed since."""
    read, plain = Join(tmp_path / "r"), Join(tmp_path / "p")
    logs = Changelog(), Changelog()

    def answers(join: Join, names: list[str]) -> list[Any]:
        return [(join.prediction(n), join.answered(n)) for n in names]

    names = ["a", "b", "c", "w", "x", "new"]
    for join, log in zip((read, plain), logs, strict=True):
        predict(join, ["a", "b", "c"], 10.0)
        join.add_orphan("w", 1, 11.0, None)  # a label waiting for its prediction
        log.flush(join)
        join.label("a", 10.0)
    read.prefetch([*names, "a"])
    assert answers(read, names) == answers(plain, names)
    for join in (read, plain):  # the flush's own changes come before what was read ahead
        join.add_prediction("new", "m", 12.0, 0)
        join.label("b", 10.0)
        assert join.pop_orphan("w") == (1, 11.0, None, 0)
    assert answers(read, names) == answers(plain, names)
    for join, log in zip((read, plain), logs, strict=True):
        log.flush(join)  # the database changed: what was read ahead is gone
    assert answers(read, names) == answers(plain, names)
    assert read.prediction("new") == ("m", 12.0, 0, 1)  # read ahead as absent, now written
    read.prefetch(["x"])
    for join in (read, plain):
        predict(join, ["x"], 13.0)
    assert answers(read, names) == answers(plain, names)
    assert read.prediction("x") == ("m", 13.0, 0, 2)
    assert answers(read, names)[1] == (("m", 10.0, 1, 0), True)


def test_expiry_drops_whole_chunks_by_their_newest_row(join: Join) -> None:
    log = Changelog()
    predict(join, ["old1", "old2"], 100.0)
    join.add_orphan("lonely", "cat", 100.0, None)
    join.add_orphan("joined", "dog", 100.0, None)
    log.flush(join)
    predict(join, ["new"], 90.0)
    join.add_prediction("mixed", "m", 200.0, 1)  # same chunk as "new": it keeps it
    assert join.pop_orphan("joined") is not None
    join.label("joined", 120.0)
    log.flush(join)
    assert join.joinable == 4
    assert join.waiting == 1
    assert log.flush(join, cutoff=100.0) == []  # newest == cutoff stays
    gone = log.flush(join, cutoff=150.0)
    assert sorted(gone) == ["c|L|0", "c|O|0", "c|P|0"]
    assert join.prediction("old1") is None
    assert join.prediction("new") is not None
    assert join.joinable == 2
    assert join.waiting == 0
    assert join.unmatched_expired == 1  # "lonely"; "joined" had found its prediction
    assert not join.answered("joined")
    assert sorted(log.flush(join, cutoff=1e9)) == ["c|P|1"]
    assert join.joinable == 0
    assert not join.holds_any(["old1", "new", "mixed"])


def test_an_id_written_again_outlives_its_earlier_chunk(join: Join) -> None:
    log = Changelog()
    predict(join, ["a"], 10.0)
    log.flush(join)
    predict(join, ["b"], 50.0)
    log.flush(join)
    assert log.flush(join, cutoff=20.0) == ["c|P|0"]
    predict(join, ["a"], 60.0, model="later")  # expired, so new again
    log.flush(join)
    assert join.prediction("a") == ("later", 60.0, 0, 2)
    assert join.joinable == 2


def scenario(join: Join, log: Changelog) -> None:
    """Predictions, labels, orphans joined and not, expiry, over several flushes."""
    predict(join, ids("p", 50), 100.0)
    for eid in ids("p", 50)[:20]:
        join.label(eid, 100.0)
    for eid in ids("o", 10):
        join.add_orphan(eid, 1, 101.0, None)
    log.flush(join)
    predict(join, ids("o", 4), 102.0)
    for eid in ids("o", 4):
        assert join.pop_orphan(eid) is not None
        join.label(eid, 102.0)
    predict(join, ids("q", CHUNK_ROWS + 3), 300.0)
    log.flush(join)
    predict(join, ["late"], 50.0)
    log.flush(join)
    log.flush(join, cutoff=60.0)  # the chunk of "late" only


def state(join: Join, names: list[str]) -> tuple[Any, ...]:
    return ([join.prediction(n) for n in names], [join.answered(n) for n in names],
            join.joinable, join.waiting, join.holds_any(["late"]))


def test_a_rebuild_from_the_chunks_in_any_order_matches(tmp_path: Path) -> None:
    live = Join(tmp_path / "live")
    log = Changelog()
    scenario(live, log)
    names = [*ids("p", 50), *ids("o", 10), *ids("q", 5), "late", "none"]
    expected = state(live, names)
    assert expected[2:4] == (50 + 4 + CHUNK_ROWS + 3, 6)
    for order in (sorted(log.chunks), sorted(log.chunks, reverse=True)):
        rebuilt = Join(tmp_path / "rebuilt")  # wiped: whatever it held is gone
        for key in order:
            rebuilt.restore(key, log.chunks[key])
        assert state(rebuilt, names) == expected
        rebuilt.close()
    # and the rebuilt index keeps working: expiry, counters, new chunk numbers
    rebuilt = Join(tmp_path / "rebuilt")
    keys = list(log.chunks)
    random.Random(7).shuffle(keys)
    for key in keys:
        rebuilt.restore(key, log.chunks[key])
    predict(rebuilt, ["z"], 400.0)
    [(new, _)] = rebuilt.write_chunks()
    assert new not in log.chunks  # never over a chunk the table holds
    assert new.startswith("c|P|")
    assert sorted(rebuilt.expire(200.0)) == sorted(k for k in log.chunks
                                                   if log.chunks[k]["x"] < 200.0)
    assert rebuilt.joinable == 4 + CHUNK_ROWS + 3 + 1  # the "o" predictions share "q"'s chunk
    assert rebuilt.unmatched_expired == 6


def test_open_wipes_what_was_there(tmp_path: Path) -> None:
    first = Join(tmp_path / "j")
    predict(first, ["a"], 1.0)
    Changelog().flush(first)
    first.close()
    again = Join(tmp_path / "j")
    assert again.prediction("a") is None
    assert again.joinable == 0
    again.destroy()
    assert not (tmp_path / "j").exists()


def test_a_join_closed_mid_flush_still_gives_its_chunks(join: Join) -> None:
    """A shard revoked between its batch and the flush: the chunks still go to the table."""
    predict(join, ["a", "b"], 1.0)
    join.close()
    chunks = join.write_chunks()
    assert [(key, value["i"]) for key, value in chunks] == [("c|P|0", ["a", "b"])]
    assert join.expire(1e9) == []


@pytest.mark.parametrize("predicted", [
    [None, None], [True, False], [0, -5, 2**53, -(2**53)], [1.0, -0.0, 0.25, 1e-300],
    ["spam", "ham", "spam"], [1, 2.5, None, True], ["spam", 1], [{"a": 1}, [1]]])
def test_predictions_read_back_exactly_whatever_they_predicted(
        tmp_path: Path, predicted: list[Any]) -> None:
    """A chunk's P values are made at once in a fixed binary form (numbers, booleans, nulls,
    or names by code) or, when they do not fit it, as JSON: either reads back the model, time
    and value as they were, type and sign included; a rebuild from the chunk too."""
    names = ids("x", len(predicted))
    models = ["churn", "intent"] * len(predicted)
    times = [100.0 + i / 3 for i in range(len(predicted))]
    log = Changelog()
    rebuilt = []
    for write in range(2):
        join = Join(tmp_path / str(write))
        if write == 0:
            join.add_predictions(names, models[:len(names)], times, predicted)
            log.flush(join)
        else:
            for key, value in log.chunks.items():
                join.restore(key, value)
        rebuilt.append(join)
        for eid, model, ts, value in zip(names, models, times, predicted, strict=False):
            got = join.prediction(eid)
            assert got is not None
            assert got[:2] == (model, ts)
            assert got[2] == value
            assert type(got[2]) is type(value)
            assert repr(got[2]) == repr(value)  # -0.0 stays -0.0
    assert dict(rebuilt[0]._cf["P"].items()) == dict(rebuilt[1]._cf["P"].items())


def test_names_past_the_code_table_are_written_as_json(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.join_index._Predictions.MAX_CODES", 3)
    join = Join(tmp_path / "j")
    log = Changelog()
    join.add_predictions(["a", "b"], ["m1", "m2"], [1.0, 2.0], ["yes", "no"])  # 4 names
    log.flush(join)
    join.add_predictions(["c"], ["m1"], [3.0], [1])  # 1 name
    log.flush(join)
    assert [join.prediction(e) for e in "abc"] == [("m1", 1.0, "yes", 0), ("m2", 2.0, "no", 0),
                                                   ("m1", 3.0, 1, 1)]
    assert join._codec.names == ["m1"]
    assert join._cf["P"][b"a"][8:9] == b"["
    assert join._cf["P"][b"c"][8] == 0


@pytest.mark.parametrize("filter_bytes", [8 << 20, 64, 8])
def test_the_id_filter_never_hides_a_held_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            filter_bytes: int) -> None:
    """Ids held (written by a flush, or rebuilt from chunks) are found through the filter,
    also when a tiny filter says "maybe" for everything or has filled past its use; new
    ids are not."""
    monkeypatch.setattr("agents.join_index.FILTER_BYTES", filter_bytes)
    log = Changelog()
    first = Join(tmp_path / "first", Memory())
    held = ids("h", 3000)
    for start in range(0, len(held), 500):
        predict(first, held[start:start + 500], 10.0)
        log.flush(first)
    rebuilt = Join(tmp_path / "rebuilt", Memory())
    for key, value in log.chunks.items():
        rebuilt.restore(key, value)
    for join in (first, rebuilt):
        assert join._filter is not None
        assert join._filter.useful == (filter_bytes > 64)
        assert all(join.holds_any([eid]) for eid in held[::37])
        assert join.holds_any([*ids("new", 50), held[-1]])
        assert not join.holds_any(ids("new", 2000))


def test_filters_stay_within_the_workers_budget(tmp_path: Path) -> None:
    memory = Memory()
    joins = [Join(tmp_path / str(i), memory) for i in range(FILTERS_BYTES // FILTER_BYTES + 2)]
    assert [j._filter is not None for j in joins].count(True) == FILTERS_BYTES // FILTER_BYTES
    joins[0].destroy()
    joins[0].close()  # (twice: nothing is given back twice)
    assert memory.filters_left == FILTER_BYTES
    assert Join(tmp_path / "again", memory)._filter is not None
    assert memory.filters_left == 0


def test_ids_added_one_by_one_are_found_by_the_next_batch_check(join: Join) -> None:
    """The event-by-event path adds ids one at a time; a run of the same flush that repeats
    one of them must see it (in the flush), and so must the next flush (in the database)."""
    join.add_prediction("single", "m", 1.0, 1)
    predict(join, ids("run", 100), 2.0)
    assert join.holds_any([*ids("new", 100), "single"])
    assert join.holds_any(["run7"])
    assert not join.holds_any(ids("new", 100))
    join.add_prediction("later", "m", 3.0, 0)
    Changelog().flush(join)
    assert join.holds_any(["later"])
    assert join.holds_any(["single"])
    assert join.prediction("later") == ("m", 3.0, 0, 0)


@pytest.mark.parametrize("shape", ["counted", "random", "mixed"])
def test_key_order_sorts_by_bytes_and_keeps_equal_keys_in_order(shape: str) -> None:
    """The write's key order: byte order on the first 16 bytes, ties in batch order (the
    later of two puts of one key must stay the later)."""
    rng = random.Random(7)
    if shape == "counted":  # four interleaved runs, as four models' messages come
        keys = [f"p-{4 * i + k}".encode() for k in range(4) for i in range(2_000)]
    elif shape == "random":
        keys = [f"{rng.getrandbits(128):032x}".encode() for _ in range(5_000)]
    else:  # lengths 0 to 40, shared 16-byte prefixes, and repeats
        keys = [bytes(rng.choice(b"ab\x01") for _ in range(rng.randint(0, 40)))
                for _ in range(5_000)]
        keys += keys[:500]
    order = _key_order(keys)
    assert sorted(order) == list(range(len(keys)))
    ordered = [keys[i][:16] for i in order]
    assert ordered == sorted(k[:16] for k in keys)
    for a, b in itertools.pairwise(order):
        if keys[a][:16] == keys[b][:16]:
            assert a < b


def kept_and_reopened(tmp_path: Path, version: int, log: Changelog,
                      memory: Memory | None = None) -> Join:
    """A join kept at changelog offset 7, opened again at `version` and loaded as the
    worker loads it (`refill` when reused, else `restore`)."""
    reopened = Join(tmp_path / "j", memory, version)
    load = reopened.refill if reopened.reused else reopened.restore
    for key, value in log.chunks.items():
        load(key, value)
    return reopened


def test_an_index_kept_by_a_clean_stop_is_taken_up_at_the_same_offset(
        tmp_path: Path) -> None:
    live = Join(tmp_path / "j")
    log = Changelog()
    scenario(live, log)
    live.duplicates = 3
    names = [*ids("p", 50), *ids("o", 10), *ids("q", 5), "late", "none"]
    expected = state(live, names)
    live.keep(7)
    assert live.closed
    reopened = kept_and_reopened(tmp_path, 7, log)
    assert reopened.reused
    assert state(reopened, names) == expected
    assert (reopened.duplicates, reopened.unmatched_expired) == (3, live.unmatched_expired)
    # the id filter was refilled: held ids are found by the batch check
    assert reopened.holds_any(["new-1", "q7"])
    assert not reopened.holds_any(["new-1", "new-2"])
    # it goes on as the live one would: codes, chunk numbers, expiry
    predict(reopened, ["z"], 400.0, model="m2")
    [(new, _)] = reopened.write_chunks()
    assert new not in log.chunks
    assert reopened.prediction("z") == ("m2", 400.0, 0, int(new.split("|")[2]))
    assert reopened.prediction("p3")[:3] == ("m", 100.0, 3)
    assert sorted(reopened.expire(200.0)) == sorted(k for k in log.chunks
                                                    if log.chunks[k]["x"] < 200.0)
    reopened.close()
    # the note was taken when the files were opened: a crash from then on rebuilds
    again = Join(tmp_path / "j", version=7)
    assert not again.reused
    assert again.joinable == 0


@pytest.mark.parametrize("version", [8, None])
def test_a_kept_index_is_rebuilt_at_another_offset(tmp_path: Path,
                                                   version: int | None) -> None:
    """Another owner wrote to the changelog since (or the store keeps no offset)."""
    live = Join(tmp_path / "j")
    log = Changelog()
    scenario(live, log)
    names = [*ids("p", 50), *ids("o", 10), "late", "none"]
    expected = state(live, names)
    live.keep(7)
    log.chunks.pop("c|P|0")  # (what the other owner's expiry did)
    reopened = kept_and_reopened(tmp_path, version, log)  # type: ignore[arg-type]
    assert not reopened.reused
    assert state(reopened, names) != expected
    assert reopened.prediction("p1") is None


def test_an_index_with_a_flush_unwritten_is_not_kept(tmp_path: Path) -> None:
    live = Join(tmp_path / "j")
    log = Changelog()
    predict(live, ["a"], 1.0)
    log.flush(live)
    predict(live, ["b"], 2.0)  # applied, its chunk not written: the stop is not clean
    live.keep(7)
    assert live.closed
    assert not Join(tmp_path / "j", version=7).reused


@pytest.mark.parametrize("budget", [0, FILTERS_BYTES])
def test_a_kept_index_finds_held_ids_with_a_filter_or_without(tmp_path: Path,
                                                              budget: int) -> None:
    """Kept without a filter (the worker's filter budget spent), reopened with one (refilled
    from the chunks) or without (every id looked up in the files)."""
    memory = Memory()
    memory.filters_left = 0
    live = Join(tmp_path / "j", memory)
    log = Changelog()
    predict(live, ids("p", 100), 1.0)
    log.flush(live)
    live.keep(3)
    memory.filters_left = budget
    reopened = kept_and_reopened(tmp_path, 3, log, memory)
    assert reopened.reused
    assert (reopened._filter is not None) == bool(budget)
    assert reopened.holds_any(["x", "p42"])
    assert not reopened.holds_any(["x", "y"])
