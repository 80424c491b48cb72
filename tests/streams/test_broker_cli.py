"""`factory-pulse broker` as a developer uses it, on its own port and state folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streams.acls import Roles, deployment_acls
from streams.broker import BrokerError, BrokerSecurity, LocalBroker
from tests.harness import CLI, free_port, produce, read_all


@pytest.fixture
def broker(tmp_path: Path, kafka: str) -> list[str]:
    # depends on `kafka` only so that the jars are resolved once, by the session broker
    # a broker takes two ports: its own and the controller's, the next one
    return [*CLI, "broker", "--state-dir", str(tmp_path / "state"), "--port", str(free_port(2))]


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

        from core.kafka import ensure_topics
        from core.settings import load_settings

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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "broker", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_acls_lists_the_grants_of_a_deployment_per_principal() -> None:
    result = _cli("acls", "--prefix", "plant.", "--app-id", "line-7",
                  "--producer", "trainer", "--producer", "server")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("super users: User:admin, User:controller")
    by_user: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_user.setdefault(line.split()[0], []).append(line)
    assert set(by_user) == {"User:pulse", "User:trainer", "User:server", "User:viewer"}
    writes = {user: {line.split()[2] for line in rows if "WRITE" in line}
              for user, rows in by_user.items()}
    inputs = {f"plant.{t}" for t in ("predictions", "labels", "feedback", "deployments",
                                     "telemetry", "pipeline")}
    assert writes["User:trainer"] == writes["User:server"] == inputs
    assert writes["User:viewer"] == set()
    assert "line-7-*" in writes["User:pulse"]
    assert not writes["User:pulse"] & inputs


def test_acls_need_users_and_a_valid_prefix(tmp_path: Path) -> None:
    result = _cli("start", "--acls", "--state-dir", str(tmp_path))
    assert (result.returncode, result.stderr.strip()) == (
        1, "factory-pulse broker: ACLs need SASL users: give --users-file")
    assert not (tmp_path / "kafka").exists()
    result = _cli("acls", "--prefix", "no spaces.")
    assert result.returncode == 2
    assert "FACTORY_TOPIC_PREFIX" in result.stderr


def test_a_secured_broker_starts_with_its_acls_and_grants_them_again(
    broker: list[str], tmp_path: Path,
) -> None:
    users = tmp_path / "users"
    users.write_text("admin=admin-secret\npulse=p\nproducer=q\nviewer=v\n")
    secured = [*broker, "--users-file", str(users), "--prefix", "sec.", "--app-id", "sec"]
    try:
        started = _run([*secured, "--acls"], "start")
        assert started.returncode == 0, started.stderr
        count = len(_cli("acls", "--prefix", "sec.", "--app-id", "sec").stdout.splitlines())
        granted = len(deployment_acls("sec.", "sec", Roles()))
        assert f"authorizer on: {granted} ACLs granted" in started.stdout
        assert "FACTORY_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in started.stdout
        again = _run([*secured, "--apply"], "acls")
        assert again.returncode == 0, again.stderr
        assert len(again.stdout.splitlines()) == count
        assert "admin-secret" not in started.stdout + again.stdout
    finally:
        _run(broker, "stop")


def test_a_state_folder_keeps_the_security_it_was_created_with(tmp_path: Path) -> None:
    users = {"admin": "a"}
    secured = tmp_path / "secured" / "kafka"
    secured.mkdir(parents=True)
    (secured / "security").write_text("scram+acls")
    for weaker in (None, BrokerSecurity(users)):  # refused before any Java runs
        with pytest.raises(BrokerError, match=r"was started with security scram\+acls"):
            LocalBroker(secured.parent, port=1, security=weaker).start()
    (tmp_path / "plain" / "kafka" / "data").mkdir(parents=True)  # no marker: older folders
    with pytest.raises(BrokerError, match="created without users"):
        LocalBroker(tmp_path / "plain", port=1, security=BrokerSecurity(users)).start()
