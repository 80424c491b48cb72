"""Test session: one real Kafka broker for the whole run, started by the project's command."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import CLI, Env, Worker, broker_state

TEST_PORT = int(os.environ.get("FACTORY_TEST_BROKER_PORT", "19092"))
TEST_STATE = broker_state(TEST_PORT)


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of the session's broker (or FACTORY_TEST_BOOTSTRAP's, if set)."""
    external = os.environ.get("FACTORY_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    def broker(action: str) -> list[str]:
        return [*CLI, "broker", action, "--state-dir", str(TEST_STATE), "--port", str(TEST_PORT)]

    started = subprocess.run(broker("start"), capture_output=True, text=True, check=False)
    if started.returncode != 0:
        pytest.fail(f"broker did not start:\n{started.stdout}\n{started.stderr}")
    print(f"\n{started.stdout.strip()}")
    yield f"127.0.0.1:{TEST_PORT}"
    subprocess.run(broker("stop"), check=False)


@pytest.fixture
def own_broker(kafka: str) -> str:
    """The session's broker, for a test that kills and restarts it: skipped when the run
    uses an outside broker (FACTORY_TEST_BOOTSTRAP), which is not the suite's to kill."""
    if os.environ.get("FACTORY_TEST_BOOTSTRAP"):
        pytest.skip("kills and restarts the broker: not an outside one (FACTORY_TEST_BOOTSTRAP)")
    return kafka


@pytest.fixture
def env(kafka: str, tmp_path: Path) -> Env:
    """A unique topic prefix, app id, state folder and web port on the shared broker."""
    return Env(bootstrap=kafka, state_dir=tmp_path / "state")


@pytest.fixture
def worker_factory(env: Env, tmp_path: Path) -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for w in workers:
        if w.alive():
            w.stop()


@pytest.fixture
def worker(env: Env, tmp_path: Path, worker_factory: list[Worker]) -> Worker:
    """A started worker in the test's namespace; its topics exist before it starts."""
    env.create_topics()
    w = Worker(env, tmp_path / "worker.log")
    worker_factory.append(w)
    return w.start()
