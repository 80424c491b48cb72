"""Kafka security settings reach every client: a worker against a SASL/SCRAM-only broker, and
with the authorizer on, each principal can do its part and no more."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from core.kafka import client_kwargs, ensure_topics
from core.settings import Settings
from core.topics import PARTIALS_TOPIC, Topics
from streams.acls import Roles, deployment_acls, viewer_group_prefix
from streams.broker import BrokerSecurity, LocalBroker
from streams.client import FactoryClient
from tests.harness import CLI, Env, Worker, free_port, read_as, wait_for

SECRET = "pulse-s3cret-do-not-log"  # noqa: S105 (a test credential)
USERS = {"admin": "admin-secret", "pulse": SECRET, "producer": "producer-secret",
         "viewer": "viewer-secret"}
FORGED = b'{"forged": "by a principal that may not write here"}'


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


@pytest.fixture
def acl_broker(kafka: str, tmp_path: Path) -> Iterator[tuple[Env, LocalBroker]]:
    """A broker denying all but the ACLs of one deployment, and that deployment's Env."""
    name = f"t{uuid.uuid4().hex[:10]}"
    acls = tuple(deployment_acls(f"{name}.", name, Roles()))
    broker = LocalBroker(tmp_path / "acl", port=free_port(span=2), heap="384m",
                         security=BrokerSecurity(USERS, acls=acls))
    status, _ = broker.start()
    try:
        yield Env(status.bootstrap, tmp_path / "state", name=name), broker
    finally:
        broker.stop()


def _as(env: Env, user: str) -> Env:
    return replace(env, extra={**env.extra, "FACTORY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                               "FACTORY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                               "FACTORY_KAFKA_SASL_USERNAME": user,
                               "FACTORY_KAFKA_SASL_PASSWORD": USERS[user]})


async def _send(settings: Settings, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings), request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def _visible(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_with_acls_each_principal_does_its_part_and_forgeries_are_refused(
    acl_broker: tuple[Env, LocalBroker], tmp_path: Path, worker_factory: list[Worker],
) -> None:
    env, broker = acl_broker
    config = tmp_path / "factory.toml"
    config.write_text('[windows]\nsizes = ["10s"]\ngrace = "1s"\n[worker]\nidle = "2s"\n')
    env.extra["FACTORY_CONFIG"] = str(config)
    pulse, producer, viewer, admin = (_as(env, u) for u in ("pulse", "producer", "viewer", "admin"))
    # a producer's tool started before the worker may not create topics: one line, no trace
    early = subprocess.run([*CLI, "simulate", "--duration", "1", "--quiet"], text=True,
                           capture_output=True, timeout=60, check=False,
                           env={**os.environ, **producer.vars()})
    assert early.returncode == 2, early.stderr[-2000:]
    assert "Traceback" not in early.stderr
    assert "may not create it: start the worker first" in early.stderr.strip().splitlines()[-1]
    worker = Worker(pulse, tmp_path / "worker.log")  # it creates the layout as `pulse`
    worker_factory.append(worker.start())
    # the producers' tools check the layout before sending: they must see it complete
    assert asyncio.run(ensure_topics(producer.settings())) == []

    start = (time.time() // 10 - 12) * 10  # a closed 10 s window two minutes ago

    async def predictions() -> None:
        async with FactoryClient(producer.settings()) as client:
            for i in range(50):
                client.prediction(event_id=f"a{i}", model="m", version="1", predicted=1,
                                  ts=start + i * 0.1)

    asyncio.run(predictions())
    metrics = env.topic("metrics")
    group = f"{viewer_group_prefix('viewer')}dashboard"

    def published() -> list[dict[str, object]]:
        values = [r.value for r in read_as(viewer.settings(), metrics, group)]
        return [s for s in map(orjson.loads, values)
                if s.get("model") == "m" and s.get("predictions") == 50]

    snapshot = wait_for(published, timeout_s=60, what="the window, read by the viewer")[0]
    assert snapshot["window_start"] == start

    partials = f"{env.name}-{PARTIALS_TOPIC}"
    refused = [(producer, partials), (producer, metrics), (viewer, metrics)]
    for who, topic in refused:
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_send(who.settings(), topic, FORGED))
    # a topic a principal may not describe is left out of its metadata: viewers see outputs
    assert asyncio.run(_visible(viewer.settings())) == set(Topics(env.prefix).outputs.values())
    for topic in (partials, metrics):
        assert FORGED not in [r.value for r in read_as(admin.settings(), topic)]
    assert worker.get("/healthz")["status"] == "ok"
    denied = re.findall(r"Principal = User:(\w+) is Denied [Oo]peration = (\w+)",
                        broker.log_path.read_text(errors="replace"))
    print(f"\nbroker denials by principal and operation: {sorted(set(denied))}")
    assert "pulse" not in {who for who, _ in denied}, worker.log_tail()  # it lacks no grant
