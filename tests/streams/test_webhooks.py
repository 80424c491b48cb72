"""Retraining requests POSTed by a real worker to a real HTTP receiver: templated, signed,
retried with backoff, logged, and not lost when the worker is killed mid-delivery."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from core.settings import ConfigError, load_settings
from streams.webhooks import TEMPLATES, check, render, sample_request
from tests.harness import Env, Worker, configured_worker, produce, wait_for

SECRET = "s3cret"  # noqa: S105


class Receiver:
    """An HTTP server in a thread of its own that answers `failures` 503s per request id
    before it takes one, and keeps every request it got."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        seen = sum(1 for g in self.got if g["key"] == key)
        self.got.append({"path": request.path, "headers": dict(request.headers), "key": key,
                         "body": body, "status": 503 if seen < self.failures else 200})
        return web.Response(status=self.got[-1]["status"], text="{}")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> Receiver:
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def taken(self) -> list[dict[str, Any]]:
        return [g for g in self.got if g["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2).start()
    yield r
    r.stop()


def _request(request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "model": "churn", "version": "v3",
            "rule": "concept-drift", "reason": "error_shift was 0.12 > 0 for 1 window(s)",
            "window_start": time.time() - 60, "window_end": time.time(), "ts": time.time(),
            "evidence": {"metric": "error_shift", "windows": [{"start": 0, "end": 60}]}}


def test_ready_made_templates_render_every_placeholder() -> None:
    request = sample_request()
    vars_ = {"namespace": "argo", "workflow_template": "retrain"}
    airflow = render(TEMPLATES["airflow"], {**request, **vars_})
    assert airflow["dag_run_id"] == "factory-pulse-m:rule:0"
    assert airflow["conf"]["evidence"] == {}  # a lone placeholder keeps its value's type
    argo = render(TEMPLATES["argo"], {**request, **vars_})
    assert argo["resourceName"] == "retrain"
    assert "model=m" in argo["submitOptions"]["parameters"]
    github = render(TEMPLATES["github"], request)
    assert github["event_type"] == "retrain"
    assert github["client_payload"]["model"] == "m"
    assert len(github["client_payload"]) <= 10  # GitHub's limit on top-level properties


def test_a_template_naming_an_unknown_placeholder_fails_at_start(tmp_path: Path) -> None:
    config = tmp_path / "f.toml"
    config.write_text('[[webhooks]]\nname = "x"\nurl = "http://h/"\nbody = {a = "${modle}"}\n')
    with pytest.raises(ConfigError, match=r"webhooks\[0\] \(x\)\.body: unknown placeholder"):
        check(load_settings({"FACTORY_CONFIG": str(config)}))
    config.write_text('[[webhooks]]\nname = "x"\nurl = "http://h/"\ntemplate = "argo"\n')
    with pytest.raises(ConfigError, match=r"namespace"):
        check(load_settings({"FACTORY_CONFIG": str(config)}))


@pytest.mark.integration
def test_requests_are_delivered_signed_retried_and_survive_a_kill(
        env: Env, tmp_path: Path, worker_factory: list[Worker], receiver: Receiver) -> None:
    env.extra["HOOK_SECRET"] = SECRET
    config = (f'[[webhooks]]\nname = "airflow"\ntemplate = "airflow"\n'
              f'url = "http://127.0.0.1:{receiver.port}/api/v1/dags/retrain_${{model}}/dagRuns"\n'
              'secret_env = "HOOK_SECRET"\n')
    worker = configured_worker(env, tmp_path, worker_factory, config)
    first = _request("churn:concept-drift:1000")
    produce(env.bootstrap, [(env.topic("retraining"), 0, orjson.dumps(first))])
    (taken,) = wait_for(receiver.taken, 30, "the request taken after two 503s")
    assert [g["status"] for g in receiver.got] == [503, 503, 200]
    assert taken["path"] == "/api/v1/dags/retrain_churn/dagRuns"
    assert taken["key"] == "churn:concept-drift:1000"
    expected = "sha256=" + hmac.new(SECRET.encode(), taken["body"], hashlib.sha256).hexdigest()
    assert taken["headers"]["X-Factory-Signature-256"] == expected
    body = orjson.loads(taken["body"])
    assert body["dag_run_id"] == "factory-pulse-churn:concept-drift:1000"
    assert body["conf"]["model"] == "churn"
    assert body["conf"]["version"] == "v3"
    assert body["conf"]["evidence"] == first["evidence"]
    log = [orjson.loads(line) for line in
           (env.state_dir / "webhooks" / "deliveries.jsonl").read_bytes().splitlines()]
    assert [(e["attempt"], e["status"], e["outcome"]) for e in log] == [
        (1, 503, "retrying"), (2, 503, "retrying"), (3, 200, "delivered")]

    # killed while a request is being retried: the restarted worker delivers it
    second = _request("churn:concept-drift:2000")
    produce(env.bootstrap, [(env.topic("retraining"), 1, orjson.dumps(second))])
    wait_for(lambda: any(g["key"] == second["request_id"] for g in receiver.got), 20,
             "a first attempt of the second request")
    worker.stop(signal.SIGKILL)
    worker.start()
    wait_for(lambda: len(receiver.taken()) == 2, 40, "the second request taken after restart")
    assert receiver.taken()[1]["key"] == second["request_id"]
    time.sleep(2)  # the first request, committed, is not sent again
    assert sum(1 for g in receiver.taken() if g["key"] == first["request_id"]) == 1
