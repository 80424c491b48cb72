"""Every input kind, valid and invalid, through the real broker and a real worker process."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import orjson

from tests.events import INVALID_FIELDS, REQUIRED, VALID, with_field, without
from tests.harness import Env, Worker, consumer_lag, produce, read_all, wait_for


def _corpus(env: Env) -> tuple[list[tuple[str, int, bytes]], list[dict[str, Any]], Counter[str]]:
    """Messages to send, the dead letters each must cause, and the valid events per topic."""
    messages: list[tuple[str, int, bytes]] = []
    expected: list[dict[str, Any]] = []
    accepted: Counter[str] = Counter()

    def add(base: str, value: bytes, rejects: list[tuple[int | None, str]], good: int) -> None:
        partition = len(messages) % env.partitions
        messages.append((env.topic(base), partition, value))
        for index, words in rejects:
            expected.append({"topic": env.topic(base), "message": len(messages) - 1,
                             "batch_index": index, "words": words})
        accepted[env.topic(base)] += good

    for base, event in VALID.items():
        add(base, orjson.dumps(event), [], 1)
        add(base, orjson.dumps([event] * 50), [], 50)
        add(base, b'{"ts": 1, "model": ', [(None, "invalid JSON")], 0)
        add(base, b'{"ts": NaN, "model": "m"}', [(None, "invalid JSON")], 0)
        add(base, b'[{"ts": Infinity}]', [(None, "invalid JSON")], 0)
        add(base, b"", [(None, "empty message")], 0)
        add(base, b"12", [(None, "expected a JSON object or array")], 0)
        for name in REQUIRED[base]:
            add(base, orjson.dumps(without(base, name)), [(None, f"{name}: required")], 0)
        # one batch mixing good events with a bad one and a non-object
        add(base, orjson.dumps([event, without(base, "ts"), event, "x"]),
            [(1, "ts: required"), (3, "must be a JSON object")], 2)
    # 2.6 MB of valid predictions in one message: over the 1 MiB limit, dead-lettered whole
    add("predictions", orjson.dumps([VALID["predictions"]] * 12_000),
        [(None, "over the limit")], 0)
    # a label whose prediction never comes is accepted and waits (counted), not dead-lettered
    add("labels", orjson.dumps(dict(VALID["labels"], event_id="never-predicted")), [], 1)
    future = time.time() + 86400
    for base, event in VALID.items():  # a clock a day ahead would close every window early
        add(base, orjson.dumps([event, dict(event, ts=future)]), [(None, "in the future")], 1)
    for base, name, value, words in INVALID_FIELDS:
        add(base, orjson.dumps(with_field(base, name, value)), [(None, f"{name}")], 0)
        add(base, orjson.dumps([VALID[base], with_field(base, name, value)]),
            [(1, words)], 1)
    return messages, expected, accepted


def _ingest_totals(worker: Worker) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = worker.get("/api/v1/ingest")["topics"]
    return totals


def test_invalid_events_of_every_kind_go_to_deadletter_and_valid_ones_are_accepted(
    env: Env, worker: Worker,
) -> None:
    messages, expected, accepted = _corpus(env)
    sent = produce(env.bootstrap, messages)
    total_messages = len(messages)

    def all_ingested() -> bool:
        totals = _ingest_totals(worker)
        return sum(t["messages"] for t in totals.values()) == total_messages

    wait_for(all_ingested, timeout_s=60, what="the worker to ingest every message")
    letters = [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic("deadletter"))]
    print(f"\nsent {total_messages} messages, {len(expected)} invalid events; "
          f"dead letters out: {len(letters)}")

    assert len(letters) == len(expected)
    by_place = {(d["topic"], d["partition"], d["offset"], d["batch_index"]): d for d in letters}
    assert len(by_place) == len(letters), "a dead letter was duplicated"
    for want in expected:
        meta = sent[want["message"]]
        letter = by_place[(want["topic"], meta.partition, meta.offset, want["batch_index"])]
        assert want["words"] in letter["reason"], (want, letter)
    totals = _ingest_totals(worker)
    for topic, count in accepted.items():
        assert totals[topic]["accepted"] == count, topic
    assert sum(t["rejected"] for t in totals.values()) == len(expected)
    big = next(d for d in letters if "over the limit" in d["reason"])
    assert big["truncated"] is True
    assert len(big["value"]) == 512 * 1024
    wait_for(lambda: "\nfactory_labels_waiting 1\n" in worker.get_text("/metrics"),
             what="the label of an unknown prediction waiting")
    inputs = sorted({topic for topic, _, _ in messages})
    lag = wait_for(lambda: (lag := consumer_lag(env, inputs))
                   and not any(lag.values()) and lag, timeout_s=30, what="lag back to zero")
    print(f"every message had a null key; committed lag after: {lag}")
    assert worker.alive()
    log = worker.log_path.read_text()
    assert "Traceback" not in log
    assert "never retrieved" not in log


def test_counts_survive_a_restart_without_double_counting(env: Env, worker: Worker) -> None:
    batch = orjson.dumps([VALID["predictions"]] * 10)
    topic = env.topic("predictions")
    produce(env.bootstrap, [(topic, i % env.partitions, batch) for i in range(6)])
    wait_for(lambda: _ingest_totals(worker).get(topic, {}).get("accepted") == 60, what="60")
    assert worker.stop(signal.SIGTERM) == 0
    produce(env.bootstrap, [(topic, i % env.partitions, batch) for i in range(4)])
    worker.start()
    wait_for(lambda: _ingest_totals(worker).get(topic, {}).get("accepted") == 100,
             what="100 accepted after restart")
    totals = _ingest_totals(worker)[topic]
    assert (totals["messages"], totals["accepted"], totals["rejected"]) == (10, 100, 0)
