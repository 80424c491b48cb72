"""Retraining requests POSTed to the systems that retrain: Airflow, Argo Workflows, GitHub
Actions, or any URL, with a JSON body made from a template.

The worker reads the `retraining` topic in a consumer group of its own
(`<app_id>-webhooks`) and commits a request's offset only once every webhook has taken it or
given up, so a request is never lost across a restart: it is sent again, with the same
`Idempotency-Key` (the request id), which Airflow's `dag_run_id` and any receiver that keys on
it turn into one run. Each delivery is signed (`X-Factory-Signature-256: sha256=<hex>`, an
HMAC-SHA256 of the body with the webhook's secret, as GitHub signs its own webhooks), retried
with exponential backoff on a network error, a timeout, 408, 429 or a 5xx, and written to the
delivery log (`<state_dir>/webhooks/deliveries.jsonl`, one line per attempt). A failure never
blocks metrics: it is counted in `factory_output_failures_total{topic="webhook:<name>"}`.

Templates: every string of the body may hold `${name}` placeholders, filled from the request
(`request_id`, `model`, `version`, `rule`, `reason`, `window_start`, `window_end`, `ts`) and
the webhook's `vars`; a string that is only `${evidence}` (or any one placeholder) takes the
value itself, an object or a number, not its text. The URL takes placeholders too, escaped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import string
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError

from core.kafka import client_kwargs
from core.settings import ConfigError, Settings, Webhook
from core.topics import Topics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Factory-Signature-256"
RETRY_STATUSES = frozenset({408, 429})
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
# The longest one request may take at webhooks.max_attempts (20) and timeout (60 s): backoff
# 1 + 2 + ... + 32 + 14 x 60 s and 20 timeouts, about 37 minutes.
MAX_DELIVERY_S = 3600

# Ready-made bodies (`template = "airflow"`, ...); `body` in the config replaces them.
TEMPLATES: dict[str, Any] = {
    # Airflow 2 REST API: POST /api/v1/dags/{dag_id}/dagRuns. A repeated dag_run_id is
    # refused with 409, which counts as delivered: the run exists.
    "airflow": {"dag_run_id": "factory-pulse-${request_id}",
                "conf": {"request_id": "${request_id}", "model": "${model}",
                         "version": "${version}", "rule": "${rule}", "reason": "${reason}",
                         "evidence": "${evidence}"}},
    # Argo Workflows: POST /api/v1/workflows/{namespace}/submit, from a WorkflowTemplate
    # whose name is the webhook's `vars.workflow_template`.
    "argo": {"namespace": "${namespace}", "resourceKind": "WorkflowTemplate",
             "resourceName": "${workflow_template}",
             "submitOptions": {"generateName": "${workflow_template}-",
                               "parameters": ["request_id=${request_id}", "model=${model}",
                                              "version=${version}", "rule=${rule}"]}},
    # GitHub: POST /repos/{owner}/{repo}/dispatches, a repository_dispatch event that a
    # workflow `on: repository_dispatch: types: [retrain]` picks up.
    "github": {"event_type": "retrain",
               "client_payload": {"request_id": "${request_id}", "model": "${model}",
                                  "version": "${version}", "rule": "${rule}",
                                  "reason": "${reason}", "evidence": "${evidence}"}},
}
REQUEST_FIELDS = ("request_id", "model", "version", "rule", "reason", "window_start",
                  "window_end", "ts", "evidence")


class TemplateError(ValueError):
    """A placeholder names nothing the request or the webhook's vars hold."""


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """The body for one request: placeholders filled, a lone placeholder by its value."""
    if isinstance(template, str):
        name = template[2:-1] if template.startswith("${") and template.endswith("}") else None
        if name is not None and name.isidentifier():
            if name not in values:
                raise TemplateError(f"unknown placeholder ${{{name}}}")
            return values[name]
        try:
            return string.Template(template).substitute(
                {k: v if isinstance(v, str) else orjson.dumps(v).decode()
                 for k, v in values.items()})
        except (KeyError, ValueError) as exc:
            raise TemplateError(f"bad placeholder in {template[:80]!r}: {exc}") from None
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    return template


def sample_request() -> dict[str, Any]:
    """A request of every field, to check templates at start."""
    return {"request_id": "m:rule:0", "model": "m", "version": "v", "rule": "rule",
            "reason": "r", "window_start": 0.0, "window_end": 60.0, "ts": 0.0,
            "evidence": {}}


def values_for(webhook: Webhook, request: Mapping[str, Any]) -> dict[str, Any]:
    return {**webhook.vars, **{k: request.get(k) for k in REQUEST_FIELDS}}


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def body_template(webhook: Webhook) -> Any:
    return webhook.body if webhook.body is not None else TEMPLATES[webhook.template]


def check(settings: Settings) -> None:
    """Fail at start, naming the webhook, when its body or URL names a placeholder that
    neither a request nor its `vars` fill."""
    for index, webhook in enumerate(settings.webhooks):
        where = f"webhooks[{index}] ({webhook.name})"
        values = values_for(webhook, sample_request())
        try:
            render(body_template(webhook), values)
        except TemplateError as exc:
            raise ConfigError(f"{where}.body", str(exc)) from None
        try:
            string.Template(webhook.url).substitute(values)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{where}.url", f"bad placeholder: {exc}") from None


class Deliveries:
    """Sends each request to every webhook, logging each attempt."""

    def __init__(self, settings: Settings, failures: Counter[tuple[str, str]]) -> None:
        self.settings = settings
        self.failures = failures
        self.log_path = settings.state_dir / "webhooks" / "deliveries.jsonl"

    def _record(self, entry: dict[str, Any]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(orjson.dumps(entry) + b"\n")

    async def deliver(self, session: aiohttp.ClientSession, webhook: Webhook,
                      request: Mapping[str, Any]) -> bool:
        """POST until taken, refused for good or out of attempts; True when taken."""
        values = values_for(webhook, request)
        body = orjson.dumps(render(body_template(webhook), values))
        url = string.Template(webhook.url).substitute(
            {k: quote(str(v), safe="") for k, v in values.items()})
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": str(request["request_id"]),
                   "User-Agent": "factory-pulse"}
        headers.update({name: os.environ.get(var, "") for name, var in
                        webhook.headers_env.items()})
        if webhook.secret_env:
            headers[SIGNATURE_HEADER] = signature(
                os.environ.get(webhook.secret_env, "").encode(), body)
        backoff = FIRST_BACKOFF_S
        for attempt in range(1, webhook.max_attempts + 1):
            status, error = await self._post(session, url, body, headers, webhook.timeout_s)
            taken = status is not None and (200 <= status < 300 or status == 409)
            retry = not taken and (status is None or status >= 500 or status in RETRY_STATUSES)
            last = attempt == webhook.max_attempts or not retry
            outcome = "delivered" if taken else ("retrying" if not last else "failed")
            self._record({"ts": time.time(), "request_id": request["request_id"],
                          "model": request.get("model"), "webhook": webhook.name,
                          "attempt": attempt, "status": status, "outcome": outcome,
                          "error": error})
            if taken:
                return True
            if last:
                reason = "refused" if status is not None and not retry else "error"
                self.failures[(f"webhook:{webhook.name}", reason)] += 1
                log.error("retraining request %s not delivered to webhook %s after %d "
                          "attempt(s): %s", request["request_id"], webhook.name, attempt,
                          error or f"HTTP {status}")
                return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        return False

    @staticmethod
    async def _post(session: aiohttp.ClientSession, url: str, body: bytes,
                    headers: dict[str, str], timeout_s: float) -> tuple[int | None, str | None]:
        try:
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                text = await resp.text()
                return resp.status, None if resp.status < 300 else text[:300]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a header
            return None, f"{type(exc).__name__}: {exc}"  # aiohttp refuses, from a forged request

    async def run(self) -> None:
        """Follow `retraining` in the group `<app_id>-webhooks`, until cancelled."""
        topic = Topics(self.settings.topic_prefix).name("retraining")
        consumer = AIOKafkaConsumer(topic, group_id=f"{self.settings.app_id}-webhooks",
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                                    # a request retried `max_attempts` times takes minutes
                                    max_poll_interval_ms=MAX_DELIVERY_S * 1000,
                                    **client_kwargs(self.settings))
        await consumer.start()
        try:
            async with aiohttp.ClientSession() as session:
                while True:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=1)
                    for tp, records in batch.items():
                        for record in records:
                            await self._one(session, record.value, record.offset)
                            try:
                                await consumer.commit({tp: record.offset + 1})
                            except (CommitFailedError, IllegalStateError):
                                log.info("retraining partition %d moved before a commit; its "
                                         "next owner sends offset %d again (same "
                                         "Idempotency-Key)", tp.partition, record.offset)
        finally:
            await consumer.stop()

    async def _one(self, session: aiohttp.ClientSession, value: bytes | None,
                   offset: int) -> None:
        try:
            request = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("request_id"), str):
            log.warning("skipping an unreadable retraining request at offset %d", offset)
            return
        ts = request.get("ts")
        if isinstance(ts, int | float) and math.isfinite(ts) and (
                time.time() - ts > self.settings.webhook_max_age_s):
            self._record({"ts": time.time(), "request_id": request["request_id"],
                          "model": request.get("model"), "webhook": None, "attempt": 0,
                          "status": None, "outcome": "skipped", "error": "older than "
                          f"retraining.webhook_max_age ({self.settings.webhook_max_age_s:g}s)"})
            return
        await asyncio.gather(*(self.deliver(session, webhook, request)
                               for webhook in self.settings.webhooks))

