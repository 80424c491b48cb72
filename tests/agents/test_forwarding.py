"""Forwarded events are split into messages that stay under the message limit."""

from __future__ import annotations

import orjson

from agents.predictions import FORWARD_EVENTS, forward_messages


def test_forwards_split_by_count_and_by_size_and_keep_every_event_in_order() -> None:
    events = [{"event_id": f"e{i}", "ts": float(i), "pad": "x" * (i % 300)}
              for i in range(2500)]
    messages = list(forward_messages("predictions", events, max_bytes=64 * 1024))
    docs = [orjson.loads(m) for m in messages]
    assert all(d["k"] == "predictions" for d in docs)
    assert [e for d in docs for e in d["e"]] == events
    assert all(len(m) <= 32 * 1024 + 64 for m in messages)
    assert max(len(d["e"]) for d in docs) <= FORWARD_EVENTS
    small = list(forward_messages("labels", events[:10], max_bytes=1 << 20))
    assert len(small) == 1


def test_an_event_larger_than_the_budget_still_travels_alone() -> None:
    big = {"event_id": "big", "ts": 1.0, "pad": "y" * 5000}
    messages = list(forward_messages("labels", [big, big], max_bytes=4096))
    assert [orjson.loads(m)["e"] for m in messages] == [[big], [big]]
