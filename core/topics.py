"""Every topic and table name in one place.

Changelog topics are named after the app id and the table name: renaming either loses the
state kept in them, so these names are part of the deployment's contract.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from core.settings import Source
from schemas.events import INPUT_RECORDS
from schemas.outputs import OUTPUT_RECORDS

INPUT_TOPICS: tuple[str, ...] = tuple(r.TOPIC for r in INPUT_RECORDS)
OUTPUT_TOPICS: tuple[str, ...] = tuple(r.TOPIC for r in OUTPUT_RECORDS)

# Internal topics, named `<app_id>-<name>` like Faust's own changelogs.
BYID_TOPIC = "byid"  # predictions and labels re-keyed to the shard of their event_id
PARTIALS_TOPIC = "partials"  # shard partial states, heartbeats and deployment steps

# Table names (the changelog topic is `<app_id>-<table>-changelog`).
SNAPSHOT_TABLE = "snapshots"


def shard_table(family: str) -> str:
    return f"shards-{family}"


@dataclass(frozen=True, slots=True)
class Topics:
    """Full topic names under one prefix."""

    prefix: str

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def inputs(self) -> dict[str, str]:
        return {base: self.name(base) for base in INPUT_TOPICS}

    @property
    def outputs(self) -> dict[str, str]:
        return {base: self.name(base) for base in OUTPUT_TOPICS}

    def all(self) -> list[str]:
        return [*self.inputs.values(), *self.outputs.values()]


def route(key: str, partitions: int) -> int:
    """The partition of an event id (or a model name): producers and shards agree on it."""
    return zlib.crc32(key.encode()) % partitions


def source_topic(app_id: str, source: str) -> str:
    """A `[[sources]]` entry's records re-keyed by the id that pairs them (agents.sources)."""
    return f"{app_id}-source-{source}"


def external_topics(source: Source) -> tuple[str, ...]:
    """The topics a `[[sources]]` entry reads: KServe's logs are on one topic, a Seldon
    model's requests and answers on two."""
    if source.kind == "seldon":
        return (f"{source.topic}.inputs", f"{source.topic}.outputs")
    return (source.topic,)


def internal_topics(app_id: str, partitions: int) -> dict[str, int]:
    """The app's own topics (name -> partition count) besides Faust's changelogs."""
    return {f"{app_id}-{BYID_TOPIC}": partitions, f"{app_id}-{PARTIALS_TOPIC}": 1}
