"""`create_app(settings)`: the Faust app with its topics, tables, agents and HTTP views.

Nothing here runs at import time; building the app does not connect to Kafka either. The
worker command creates the topics, then hands the app to a Faust worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from agents import ingest
from streams import http
from streams.kafka import faust_credentials
from streams.settings import Settings
from streams.topics import INGEST_TABLE, Topics


@dataclass(frozen=True, slots=True)
class Pulse:
    """The running service's parts, handed to agents and views instead of module globals."""

    settings: Settings
    app: Any
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    ingest: Any


JSON_SCHEMA = faust.Schema(key_serializer="json", value_serializer="json")


def create_app(settings: Settings) -> Pulse:
    """Build the Faust app for these settings."""
    app = faust.App(
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
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        autodiscover=False,
    )
    topics = Topics(settings.topic_prefix)
    inputs = {base: app.topic(name, partitions=settings.partitions)
              for base, name in topics.inputs.items()}
    outputs = {base: app.topic(name, partitions=settings.partitions)
               for base, name in topics.outputs.items()}
    progress = app.Table(INGEST_TABLE, partitions=settings.partitions, schema=JSON_SCHEMA)
    for base, source in inputs.items():
        ingest.register(app, source, base, outputs["deadletter"], progress)
    pulse = Pulse(settings, app, inputs, outputs, progress)
    http.register(pulse)
    return pulse
