"""`factory-pulse broker` as a developer uses it, on its own port and state folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import CLI, free_port, produce, read_all


@pytest.fixture
def broker(tmp_path: Path, kafka: str) -> list[str]:
    # depends on `kafka` only so that the jars are resolved once, by the session broker
    return [*CLI, "broker", "--state-dir", str(tmp_path / "state"), "--port", str(free_port())]


def _run(cmd: list[str], action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd[:4], action, *cmd[4:]], capture_output=True, text=True,
                          check=False, timeout=120)


def test_start_stop_are_idempotent_and_data_survives_a_restart(broker: list[str]) -> None:
    port = broker[-1]
    bootstrap = f"127.0.0.1:{port}"
    try:
        first = _run(broker, "start")
        assert first.returncode == 0, first.stderr
        assert f"started on {bootstrap}" in first.stdout
        second = _run(broker, "start")
        assert second.returncode == 0
        assert "already running" in second.stdout
        assert _run(broker, "status").returncode == 0

        import asyncio

        from streams.kafka import ensure_topics
        from streams.settings import load_settings

        settings = load_settings({"FACTORY_KAFKA_BOOTSTRAP": bootstrap,
                                  "FACTORY_TOPIC_PREFIX": "keep.", "FACTORY_PARTITIONS": "1"})
        asyncio.run(ensure_topics(settings))
        produce(bootstrap, [("keep.predictions", 0, b"kept across restarts")])

        assert "stopped" in _run(broker, "stop").stdout
        again = _run(broker, "stop")
        assert again.returncode == 0
        assert "was not running" in again.stdout
        status = _run(broker, "status")
        assert (status.returncode, status.stdout.strip()) == (3, "Kafka broker stopped")

        assert _run(broker, "start").returncode == 0
        values = [r.value for r in read_all(bootstrap, "keep.predictions")]
        assert values == [b"kept across restarts"]
    finally:
        _run(broker, "stop")
