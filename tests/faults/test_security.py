"""Kafka security settings reach every client: a worker against a SASL/SCRAM-only broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.broker import BrokerSecurity, LocalBroker
from streams.client import FactoryClient
from tests.harness import Env, Worker, free_port, wait_for

SECRET = "pulse-s3cret-do-not-log"  # noqa: S105 (a test credential)


@pytest.fixture
def scram_broker(kafka: str, tmp_path: Path) -> Iterator[str]:
    # depends on `kafka` only so that the jars are resolved once, by the session broker
    broker = LocalBroker(tmp_path / "scram", port=free_port(span=2), heap="384m",
                         security=BrokerSecurity({"admin": "admin-secret", "pulse": SECRET}))
    status, _ = broker.start()
    try:
        yield status.bootstrap
    finally:
        broker.stop()


def test_a_worker_runs_against_a_scram_broker_and_never_logs_the_secret(
    scram_broker: str, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    env = Env(scram_broker, tmp_path / "state", extra={
        "FACTORY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FACTORY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "FACTORY_KAFKA_SASL_USERNAME": "pulse",
        "FACTORY_KAFKA_SASL_PASSWORD": SECRET})
    env.create_topics()  # the admin client authenticates too
    worker = Worker(env, tmp_path / "worker.log")
    worker_factory.append(worker.start())

    async def send() -> None:
        async with FactoryClient(env.settings()) as client:
            for i in range(50):
                client.prediction(event_id=f"s{i}", model="m", version="1", ts=time.time())

    asyncio.run(send())
    topic = env.topic("predictions")
    wait_for(lambda: worker.get("/api/v1/ingest")["topics"].get(topic, {}).get("accepted") == 50,
             what="50 predictions through SASL/SCRAM")
    assert SECRET not in worker.log_path.read_text(errors="replace")

    wrong = Env(scram_broker, tmp_path / "wrong", extra={**env.extra,
                                                         "FACTORY_KAFKA_SASL_PASSWORD": "nope"})
    with pytest.raises(KafkaConnectionError):  # aiokafka reports a failed login this way
        wrong.create_topics()
    assert worker.get("/healthz")["status"] == "ok"
