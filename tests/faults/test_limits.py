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
