"""Internal messages and table keys: one encoding each, read back, old records still read,
newer ones refused."""

from __future__ import annotations

import orjson
import pytest

from agents.messages import (
    FORMAT,
    Deployments,
    Floors,
    FormatError,
    Heartbeats,
    Partial,
    alert_key,
    check_format,
    decode_stage_record,
    parse_part_key,
    parse_window_key,
    part_key,
    stage_key_kind,
    window_key,
)
from agents.snapshots import SnapshotStage
from core.settings import load_settings

DEPLOYED = {"ts": 1.0, "model": "churn", "version": "v2", "kind": "deployed"}


@pytest.mark.parametrize("record", [
    Partial("predictions:3", window_key("m:churn", 60, 120), {"quality": {"n": 2, "ok": 1}}),
    Heartbeats({"predictions:0": (12.5, True), "labels:1": (None, False)}),
    Deployments("deployments:0", 7, [DEPLOYED]),
])
def test_stage_records_read_back(record: object) -> None:
    raw = record.encode()  # type: ignore[attr-defined]
    assert orjson.loads(raw)["v"] == FORMAT
    back = decode_stage_record(raw)
    assert type(back) is type(record)
    if isinstance(record, Deployments):
        assert isinstance(back, Deployments)
        assert (back.source, back.offset) == (record.source, record.offset)
        assert back.events[0]["version"] == "v2"
    else:
        assert back == record


def test_records_of_earlier_releases_still_read() -> None:
    """Before FORMAT, records had the same fields and no "v"."""
    key = window_key("m:a", 60, 0)
    old = {"t": "p", "shard": "predictions:0", "key": key, "s": {}}
    assert decode_stage_record(orjson.dumps(old)) == Partial("predictions:0", key, {})
    floors = Floors.from_doc({"k": "floors", "e": [], "f": {"2": [1.0, 2.0], "3": None}})
    assert floors.floors == {2: [1.0, 2.0], 3: None}


@pytest.mark.parametrize("doc", [
    {"t": "h", "v": FORMAT + 1, "shards": {}},
    {"t": "p", "v": "1", "shard": "x", "key": "w|m:a|60|0", "s": {}},
])
def test_a_record_of_a_newer_release_is_refused_not_misread(doc: dict[str, object]) -> None:
    with pytest.raises(FormatError, match="this release reads up to"):
        decode_stage_record(orjson.dumps(doc))
    with pytest.raises(FormatError):
        check_format(FORMAT + 1, "a table")
    check_format(0, "a table")


@pytest.mark.parametrize("doc", [
    {"t": "p", "shard": 3, "key": "w|m:a|60|0", "s": {}},
    {"t": "p", "shard": "x", "key": "nonsense", "s": {}},
    {"t": "d", "src": "deployments:0", "o": 1, "e": [{"model": "a"}]},
    {"t": "x"},
    {"shards": {}},
])
def test_malformed_records_raise_what_the_stage_counts(doc: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError, KeyError, IndexError)):
        decode_stage_record(orjson.dumps(doc))


def test_keys_read_back_with_a_bar_in_the_name() -> None:
    key = window_key("m:we|ird", 60, 1_700_000_040)
    assert parse_window_key(key) == ("m:we|ird", 60.0, 1_700_000_040.0)
    assert parse_part_key(part_key("predictions:1", key)) == ("predictions:1", key)
    assert stage_key_kind(alert_key("drift", "m:a|b")) == ("alert", "drift|m:a|b")
    assert stage_key_kind("horizon") == ("horizon", "")


@pytest.mark.parametrize("stored", [None, 0, FORMAT])
def test_the_stage_reads_its_table_and_marks_the_format_it_writes(stored: int | None) -> None:
    stage = _stage({} if stored is None else {"format": stored})
    stage.load()
    assert stage.writes["format"] == FORMAT


def test_the_stage_refuses_a_table_a_newer_release_wrote() -> None:
    with pytest.raises(FormatError, match="the snapshot stage's table has format 2"):
        _stage({"format": FORMAT + 1}).load()


def _stage(table: dict[str, object]) -> SnapshotStage:
    outputs = dict.fromkeys(("metrics", "alerts", "retraining"))
    return SnapshotStage(load_settings({}), table, outputs, None, [])
