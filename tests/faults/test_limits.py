"""Outputs the broker refuses: the worker counts and logs them and goes on working."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.harness import Env, Worker, configured_worker, produce, read_all, wait_for

CONFIG = '[windows]\nsizes = ["60s"]\ngrace = "1s"\n[worker]\nidle = "2s"\n'


async def _create_small_topic(bootstrap: str, name: str, partitions: int, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1,
                                            topic_configs={"max.message.bytes": str(limit)})])
    finally:
        await admin.close()


def _refused(worker: Worker, topic: str) -> int:
    text = worker.get_text("/metrics")
    found = re.search(rf'factory_output_failures_total{{topic="{re.escape(topic)}",'
                      rf'reason="too_large"}} (\d+)', text)
    return int(found.group(1)) if found else 0


def test_snapshots_refused_by_the_broker_are_counted_and_the_worker_goes_on(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    metrics = env.topic("metrics")
    asyncio.run(_create_small_topic(env.bootstrap, metrics, env.partitions, 200))
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 3600 - 1) * 3600

    def send(first: int) -> None:
        events = [{"event_id": f"o{i}", "ts": start + i, "model": "m", "version": "1"}
                  for i in range(first, first + 120)]
        produce(env.bootstrap, [(env.topic("predictions"), 0, orjson.dumps(events))])

    send(0)  # two windows, each snapshot well over 200 bytes
    wait_for(lambda: _refused(worker, metrics) >= 2, timeout_s=60,
                     what="refused snapshots to be counted")
    send(600)  # two more windows, ten minutes later: the snapshot stage is still running
    produce(env.bootstrap, [(env.topic("predictions"), 1, b"{broken")])
    wait_for(lambda: _refused(worker, metrics) >= 4, timeout_s=60, what="later refusals")
    letters = wait_for(lambda: read_all(env.bootstrap, env.topic("deadletter")),
                       what="the dead letter sent after the refusals")
    refused = _refused(worker, metrics)
    log = worker.log_path.read_text()
    print(f"\nmetrics topic limited to 200 bytes: snapshots refused and counted: {refused}; "
          f"published: {len(read_all(env.bootstrap, metrics))}; dead letters after: "
          f"{len(letters)}")
    assert len(letters) == 1
    assert read_all(env.bootstrap, metrics) == []
    assert "output to " + metrics + " not delivered" in log
    assert "never retrieved" not in log
    assert "Traceback" not in log
    assert worker.alive()


def test_a_snapshot_over_the_message_limit_is_never_sent_and_is_counted(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    env.extra["FACTORY_MAX_MESSAGE_BYTES"] = "1024"
    worker = configured_worker(env, tmp_path, worker_factory,
                               CONFIG + "[drift]\nreference_size = 10\nmin_predictions = 10\n")
    start = (time.time() // 3600 - 1) * 3600
    # 64 features, 8 per event (each message stays under 1 KiB): the second window's snapshot
    # carries a drift score per feature, and grows past the limit
    events = [{"event_id": f"w{i}", "ts": start + i * 3, "model": "wide", "version": "1",
               "features": {f"f{(i % 8) * 8 + j:02d}": float(i % 5 + j) for j in range(8)}}
              for i in range(40)]
    for i in range(0, len(events), 4):  # one at a time: the topic takes 4 KiB batches
        produce(env.bootstrap, [(env.topic("predictions"), 0, orjson.dumps(events[i:i + 4]))])
    metrics = env.topic("metrics")
    wait_for(lambda: _refused(worker, metrics) >= 1, timeout_s=60,
             what="the oversized snapshot to be counted")
    published = [orjson.loads(r.value) for r in read_all(env.bootstrap, metrics)]
    wide = [s["window_start"] for s in published if s["model"] == "wide"]
    log = worker.log_path.read_text()
    print(f"\nkafka.max_message_bytes 1024: snapshots refused before sending: "
          f"{_refused(worker, metrics)}; wide-model windows published: {len(wide)} of 2")
    assert wide == [start]  # the first (the drift reference) fits; the second never left
    assert read_all(env.bootstrap, env.topic("deadletter")) == []
    assert "over kafka.max_message_bytes (1,024)" in log
    assert "never retrieved" not in log
    assert worker.alive()
