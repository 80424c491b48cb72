"""Helpers for integration tests: real worker processes, producing and reading topics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata

from core.kafka import client_kwargs, ensure_topics
from core.settings import Settings, load_settings
from streams.broker import free_port

CLI = [sys.executable, "-m", "streams.cli"]


@dataclass
class Env:
    """A unique namespace on the shared broker: topic prefix, app id, state folder, port."""

    bootstrap: str
    state_dir: Path
    partitions: int = 2
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    web_port: int = field(default_factory=free_port)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{self.name}."

    def topic(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def vars(self) -> dict[str, str]:
        return {
            "FACTORY_KAFKA_BOOTSTRAP": self.bootstrap,
            "FACTORY_TOPIC_PREFIX": self.prefix,
            "FACTORY_APP_ID": self.name,
            "FACTORY_PARTITIONS": str(self.partitions),
            "FACTORY_STATE_DIR": str(self.state_dir),
            "FACTORY_WEB_PORT": str(self.web_port),
            "FACTORY_SESSION_TIMEOUT": "6s",
            **self.extra,
        }

    def settings(self) -> Settings:
        return load_settings(self.vars())

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.settings()))


class Worker:
    """A `factory-pulse worker` process, as users run it."""

    def __init__(self, env: Env, log: Path) -> None:
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Worker:
        environ = {**os.environ, **self.env.vars(), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*CLI, "worker"], env=environ, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        marker = b"[^Worker]: Ready"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.log_path.read_bytes().count(marker) > self.ready_seen:
                self.ready_seen += 1
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout_s}s:\n{self.log_tail()}")

    ready_seen = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.env.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return orjson.loads(resp.read())

    def get_text(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.env.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def configured_worker(env: Env, tmp_path: Path, workers: list[Worker], config: str,
                      ) -> Worker:
    """Write `config` as the TOML file, create the topics, start a worker (stopped at the end
    of the test by the `worker_factory` fixture that owns `workers`)."""
    path = tmp_path / "factory.toml"
    path.write_text(config)
    env.extra["FACTORY_CONFIG"] = str(path)
    env.create_topics()
    worker = Worker(env, tmp_path / "worker.log")
    workers.append(worker.start())
    return worker


def wait_for(predicate: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


async def _produce(bootstrap: str, records: Iterable[tuple[str, int | None, bytes | None]],
                   ) -> list[RecordMetadata]:
    # room for the oversized messages the fault tests send on purpose
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, partition=partition)
                   for topic, partition, value in records]
        return [await f for f in futures]
    finally:
        await producer.stop()


def produce(bootstrap: str, records: Iterable[tuple[str, int | None, bytes | None]],
            ) -> list[RecordMetadata]:
    """Produce (topic, partition, value) records in order; return their metadata."""
    return asyncio.run(_produce(bootstrap, list(records)))


async def _read_all(topic: str, group: str | None = None, **client: Any) -> list[Any]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=group, **client)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(topic, p)
                     for p in (consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                out.extend(messages)
        if group:
            await consumer.commit()
        return out
    finally:
        await consumer.stop()


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record currently in `topic`, all partitions, from the beginning to the end."""
    return asyncio.run(_read_all(topic, bootstrap_servers=bootstrap))


def read_as(settings: Settings, topic: str, group: str | None = None) -> list[Any]:
    """`read_all` as the user of `settings` (Kafka security included); with a group, its
    offsets are committed there."""
    return asyncio.run(_read_all(topic, group, **client_kwargs(settings)))


async def _lag(bootstrap: str, group: str, topics: list[str], partitions: int,
               ) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        ends = await consumer.end_offsets(parts)
        lag: dict[str, int] = {}
        for tp, end in ends.items():
            meta = committed.get(tp)
            lag[tp.topic] = lag.get(tp.topic, 0) + end - (meta.offset if meta else 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


def consumer_lag(env: Env, topics: list[str]) -> dict[str, int]:
    """Messages per topic not yet committed by the env's app (Faust commits as its id)."""
    return asyncio.run(_lag(env.bootstrap, env.name, topics, env.partitions))


def snapshots_by_window(env: Env, model: str) -> dict[float, list[dict[str, Any]]]:
    """Every published snapshot of `model`, every revision, by window start."""
    out: dict[float, list[dict[str, Any]]] = {}
    for record in read_all(env.bootstrap, env.topic("metrics")):
        snap = orjson.loads(record.value)
        if snap.get("model") == model:
            out.setdefault(snap["window_start"], []).append(snap)
    return out


def broker_state(port: int | str) -> Path:
    """The test broker's folder: one per port, so that two test runs on one machine do not
    stop each other's broker."""
    return Path(__file__).resolve().parent.parent / ".factory-test" / str(port)


def restart_broker(env: Env, sig: int = signal.SIGKILL, pause_s: float = 0.0) -> float:
    """Stop the session's broker by `sig` (SIGTERM: the project's controlled stop) and start
    it again `pause_s` later; return the seconds it was down."""
    port = env.bootstrap.rsplit(":", 1)[1]
    broker = [*CLI, "broker", "{}", "--state-dir", str(broker_state(port)), "--port", port]

    def run(action: str) -> None:
        subprocess.run([action if a == "{}" else a for a in broker], check=True,
                       capture_output=True)

    began = time.monotonic()
    if sig == signal.SIGTERM:
        run("stop")
    else:
        pid = int((broker_state(port) / "kafka" / "broker.pid").read_text().split()[0])
        os.kill(pid, sig)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the broker to die")
    time.sleep(pause_s)
    run("start")
    return time.monotonic() - began


@dataclass
class Demo:
    """A running `factory-pulse demo` on private ports (see `demo`)."""

    process: subprocess.Popen[bytes]
    out: Path  # its terminal output
    web: int  # the dashboard's port
    code: int | None = None  # its exit code, once stopped


@contextlib.contextmanager
def demo(tmp_path: Path, *flags: str) -> Iterator[Demo]:
    """Run the README's main command as a user would, on free ports with its state in
    `tmp_path`; stop it with Ctrl-C (SIGINT to its process group) on the way out, as a user
    would, and record its exit code (a kill only if it has not stopped within 60 s)."""
    port, web = free_port(2), free_port()
    environ = {**os.environ, "FACTORY_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
               "FACTORY_STATE_DIR": str(tmp_path), "FACTORY_WEB_PORT": str(web),
               "PYTHONUNBUFFERED": "1"}
    environ.pop("FACTORY_CONFIG", None)
    out = tmp_path / "demo.out"
    with out.open("wb") as log:
        process = subprocess.Popen([*CLI, "demo", "--drift-at", "3600", *flags], env=environ,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    running = Demo(process, out, web)
    try:
        yield running
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            running.code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            running.code = process.wait()
