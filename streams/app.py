"""`create_app(settings)`: the Faust app with its topics, tables, agents and HTTP views.

Nothing here runs at import time; building the app does not connect to Kafka either. The
worker command creates the topics, then hands the app to a Faust worker.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import faust

from agents.deployments import DeploymentLogic
from agents.feedback import FeedbackLogic
from agents.pipeline import PipelineLogic
from agents.predictions import PredictionLogic
from agents.shard import FORWARDED, ShardRuntime
from agents.snapshots import SnapshotStage
from agents.snapshots import run as run_snapshots
from agents.sources.runner import run as run_source
from agents.telemetry import TelemetryLogic
from core.faust_internals import leave_static_group, widen_producer_buffer
from core.kafka import faust_credentials
from core.settings import Settings
from core.sink import OutputSink
from core.supervision import fail_fast
from core.topics import BYID_TOPIC, PARTIALS_TOPIC, SNAPSHOT_TABLE, Topics, shard_table
from streams import http
from streams.alertmanager import AlertmanagerPush
from streams.loop_lag import LoopLag
from streams.metrics_view import AlertsView, MetricsView, follow
from streams.webhooks import Deliveries
from streams.webhooks import check as check_webhooks

JSON_SCHEMA = faust.Schema(key_serializer="json", value_serializer="json")
# How often shards report to the snapshot stage: closing lags event time by about two.
HEARTBEAT_S = 0.5


@dataclass(frozen=True, slots=True)
class Pulse:
    """The running service's parts, handed to views and tests instead of module globals."""

    settings: Settings
    app: Any
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    runtimes: dict[str, ShardRuntime]
    snapshots: SnapshotStage
    view: MetricsView
    alerts: AlertsView
    loop_lag: LoopLag
    output_failures: Counter[tuple[str, str]]


def _faust_app(settings: Settings) -> Any:
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=faust_credentials(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        # A record batch must fit the smallest topic limit it may go to (outputs: exactly
        # max_message_bytes): many small records batched together past it are refused whole
        # by the broker. A record larger than this goes alone in its batch.
        producer_max_batch_size=min(1024 * 1024, settings.max_message_bytes // 2),
        # room for a forward or partial next to outputs, which are capped at the limit
        producer_max_request_size=max(2 * 1024 * 1024, 2 * settings.max_message_bytes),
        stream_buffer_maxsize=max(4096, settings.max_batch * 2),
        # Batched messages are large: fetch many per round trip.
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_max_poll_records=None,
        broker_commit_interval=1.0,
        # A killed worker's partitions move once the group notices it is gone.
        broker_session_timeout=settings.session_timeout_s,
        consumer_group_instance_id=settings.instance_id,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 0.5),
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        autodiscover=False,
    )


def create_app(settings: Settings) -> Pulse:
    """Build the Faust app for these settings."""
    leave_static_group()
    app = _faust_app(settings)
    topics = Topics(settings.topic_prefix)
    n = settings.partitions
    inputs = topics.inputs
    failures: Counter[tuple[str, str]] = Counter()
    outputs = {base: OutputSink(app.topic(name, partitions=n), settings.max_message_bytes,
                                failures) for base, name in topics.outputs.items()}
    byid = app.topic(f"{settings.app_id}-{BYID_TOPIC}", partitions=n)
    partials = app.topic(f"{settings.app_id}-{PARTIALS_TOPIC}", partitions=1)

    families: dict[str, tuple[Any, dict[str, str]]] = {
        "predictions": (PredictionLogic, {inputs["predictions"]: "predictions",
                                          inputs["labels"]: "labels",
                                          byid.get_topic_name(): FORWARDED}),
        "feedback": (FeedbackLogic, {inputs["feedback"]: "feedback"}),
        "telemetry": (TelemetryLogic, {inputs["telemetry"]: "telemetry"}),
        "pipeline": (PipelineLogic, {inputs["pipeline"]: "pipeline"}),
        "deployments": (DeploymentLogic, {inputs["deployments"]: "deployments"}),
    }
    runtimes: dict[str, ShardRuntime] = {}
    for family, (logic_type, sources) in families.items():
        table = app.Table(shard_table(family), partitions=n, schema=JSON_SCHEMA)
        runtime = ShardRuntime(app, settings, logic_type(settings, sources), table, partials,
                               outputs["deadletter"], byid=byid)
        channel = app.topic(*sources, partitions=n)
        app.agent(channel, name=f"{family}_shards")(
            fail_fast(f"{family}_shards", runtime.run))
        app.timer(HEARTBEAT_S, name=f"{family}_heartbeat")(
            fail_fast(f"{family}_heartbeat", runtime.heartbeat))
        runtimes[family] = runtime

    table = app.Table(SNAPSHOT_TABLE, partitions=1, schema=JSON_SCHEMA)
    shards = [f"{r.logic.family}:{p}" for r in runtimes.values() for p in range(n)]
    stage = SnapshotStage(settings, table, outputs, app, shards)

    async def snapshots(stream: Any) -> None:
        await run_snapshots(stage, stream)

    app.agent(partials, name="snapshots")(fail_fast("snapshots", snapshots))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for runtime in runtimes.values():
            runtime.forget(tp.partition for tp in revoked if tp.topic in runtime.logic.sources)
        if any(tp.topic == partials.get_topic_name() for tp in revoked):
            stage.forget()

    @app.task
    async def tune_producer() -> None:
        widen_producer_buffer(app)

    view = MetricsView(settings.retention_s)

    alerts = AlertsView()

    for output, into in (("metrics", view), ("alerts", alerts), ("retraining", alerts)):
        app.task(fail_fast(f"follow_{output}", functools.partial(
            follow, settings, topics.outputs[output], into)))

    for source in settings.sources:
        app.task(fail_fast(f"source_{source.name}", functools.partial(
            run_source, settings, source)))
    if settings.alertmanager.urls:
        push = AlertmanagerPush(settings, failures)
        app.task(fail_fast("alertmanager_follow", functools.partial(
            follow, settings, topics.outputs["alerts"], push)))
        app.task(fail_fast("alertmanager_push", push.run))
    if settings.webhooks:
        check_webhooks(settings)
        app.task(fail_fast("webhooks", Deliveries(settings, failures).run))

    loop_lag = LoopLag()

    @app.task
    async def watch_loop() -> None:
        await loop_lag.run()

    pulse = Pulse(settings, app, inputs, outputs, runtimes, stage, view, alerts, loop_lag,
                  failures)
    http.register(pulse)
    return pulse

