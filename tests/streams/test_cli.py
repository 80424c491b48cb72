from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import CLI, Env, free_port


def _worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "worker"], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_bad_config_stops_the_worker_at_start_naming_the_key(tmp_path: Path) -> None:
    result = _worker({"FACTORY_PARTITIONS": "lots"})
    assert result.returncode == 2
    assert "invalid configuration FACTORY_PARTITIONS: expected an integer" in result.stderr
    config = tmp_path / "bad.toml"
    config.write_text('[windows]\nsizes = ["1m", "eventually"]\n')
    result = _worker({"FACTORY_CONFIG": str(config)})
    assert result.returncode == 2
    assert "windows.sizes[1]" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_input_topics_with_another_partition_count(env: Env) -> None:
    env.create_topics()
    result = _worker({**env.vars(), "FACTORY_PARTITIONS": str(env.partitions + 1)})
    assert result.returncode == 2
    assert f"has {env.partitions} partitions but FACTORY_PARTITIONS is" in result.stderr


def test_without_a_broker_each_command_says_so_in_one_line() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    for command in (["worker"], ["collect", "--count", "1"], ["simulate", "--duration", "1"]):
        result = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "FACTORY_KAFKA_BOOTSTRAP": nobody},
                                check=False)
        assert result.returncode == 1, (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"no Kafka broker answers at {nobody}" in lines[0]
        assert "factory-pulse broker start" in lines[0]


def test_a_group_coordinator_not_ready_at_start_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiokafka import errors

    from streams.cli import _Retrying

    logger = logging.getLogger("aiokafka.consumer.group_coordinator")
    retrying = _Retrying()
    logger.addFilter(retrying)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.error("Group Coordinator Request failed: %s",
                         errors.GroupCoordinatorNotAvailableError())
            logger.error("Group Coordinator Request failed: %s",
                         errors.GroupAuthorizationFailedError())  # not retriable: an error
    finally:
        logger.removeFilter(retrying)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "group coordinator not ready yet ([Error 15] "
                 "GroupCoordinatorNotAvailableError); retrying"),
        ("ERROR", "Group Coordinator Request failed: [Error 30] "
                  "GroupAuthorizationFailedError")]
