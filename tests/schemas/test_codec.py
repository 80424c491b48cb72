from __future__ import annotations

import orjson

from schemas.codec import MAX_REJECTIONS, VALIDATORS, decode_message
from tests.events import VALID, with_field

VALIDATE = VALIDATORS["predictions"]


def test_single_object_and_batch_decode_to_events() -> None:
    one = VALID["predictions"]
    events, rejected = decode_message(orjson.dumps(one), VALIDATE)
    assert (len(events), rejected) == (1, [])
    events, rejected = decode_message(orjson.dumps([one] * 5), VALIDATE)
    assert (len(events), rejected) == (5, [])


def test_bad_events_in_a_batch_are_rejected_alone_with_their_index() -> None:
    good = VALID["predictions"]
    batch = [good, with_field("predictions", "ts", "x"), good, 42, good]
    events, rejected = decode_message(orjson.dumps(batch), VALIDATE)
    assert len(events) == 3
    assert [(r.batch_index, r.field) for r in rejected] == [(1, "ts"), (3, None)]
    assert orjson.loads(rejected[0].raw)["ts"] == "x"


def test_whole_message_rejections() -> None:
    cases = {
        b"": "empty message",
        b"{not json": "invalid JSON",
        b'{"ts": NaN}': "invalid JSON",
        b'{"ts": 1e999}': "invalid JSON",
        b'"a string"': "expected a JSON object or array, got str",
        b"\xff\xfe": "invalid JSON",
    }
    for raw, words in cases.items():
        events, rejected = decode_message(raw, VALIDATE)
        assert events == []
        assert len(rejected) == 1
        assert words in rejected[0].reason
        assert rejected[0].batch_index is None
        assert rejected[0].raw == raw


def test_empty_batch_is_no_events_and_no_rejection() -> None:
    assert decode_message(b"[]", VALIDATE) == ([], [])


def test_a_message_over_the_limit_is_rejected_whole_before_parsing() -> None:
    batch = orjson.dumps([VALID["predictions"]] * 50)
    events, rejected = decode_message(batch, VALIDATE, max_bytes=len(batch) - 1)
    assert events == []
    assert [(r.batch_index, r.raw) for r in rejected] == [(None, batch)]
    assert f"{len(batch):,} bytes" in rejected[0].reason
    assert "kafka.max_message_bytes" in rejected[0].reason
    assert len(decode_message(batch, VALIDATE, max_bytes=len(batch))[0]) == 50


def test_a_message_of_many_bad_events_makes_a_bounded_number_of_rejections() -> None:
    # the hostile message of the issue: one megabyte of zeros in a JSON array
    value = b"[" + b",".join([b"0"] * 520_000) + b"]"
    good = orjson.dumps(VALID["predictions"])
    events, rejections = decode_message(value[:-1] + b"," + good + b"]",
                                        VALIDATORS["predictions"], 4 * 1024 * 1024)
    assert len(events) == 1
    assert len(rejections) == MAX_REJECTIONS + 1
    assert [r.batch_index for r in rejections[:MAX_REJECTIONS]] == list(range(MAX_REJECTIONS))
    rest = rejections[-1]
    assert rest.count == 520_000 - MAX_REJECTIONS
    assert rest.batch_index == MAX_REJECTIONS
    assert "must be a JSON object" in rest.reason
    assert sum(r.count for r in rejections) == 520_000
    assert len(rest.raw) < 100  # a sample of the rest, not all of it
