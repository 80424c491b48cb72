"""Deployments: forwarded, validated, to the snapshot stage, which sees every model's steps.

Lifecycle steps are few, but pairing a run's start with its finish and knowing a model's newest
retrain need all of a model's steps in one place, whatever partition they were produced to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agents.messages import Deployments
from agents.shard import Message, Shard, ShardRuntime, group_by_entity
from core.settings import Settings
from schemas.codec import VALIDATORS, Rejection
from schemas.fields import JSON, Validator


class DeploymentLogic:
    family = "deployments"

    def __init__(self, settings: Settings, sources: dict[str, str]) -> None:
        self.settings = settings
        self.sources = sources
        self._pending: dict[int, list[tuple[int, list[JSON]]]] = {}

    def validator(self, src: str) -> Validator | None:
        return VALIDATORS["deployments"]

    def load(self, shard: Shard, items: Iterable[tuple[str, Any]],
             version: int | None = None) -> None:
        shard.extra = None

    def unload(self, shard: Shard) -> None:
        return None

    def keep(self, shard: Shard, version: int) -> None:
        return None

    def apply(self, shard: Shard, messages: list[Message]) -> list[tuple[Rejection, Message]]:
        groups, rejected = group_by_entity(shard, messages, lambda e: ("all",))
        rows = groups.get("all")
        if rows is not None:
            by_message: dict[int, list[JSON]] = {}
            for event, mi in zip(rows.events, rows.msg, strict=True):
                by_message.setdefault(mi, []).append(event)
            pending = self._pending.setdefault(shard.partition, [])
            pending.extend((messages[mi].offset, events) for mi, events in by_message.items())
        return rejected

    async def before_flush(self, shard: Shard, runtime: ShardRuntime) -> None:
        for offset, events in self._pending.pop(shard.partition, []):
            await runtime.partials.send(value=Deployments(
                f"deployments:{shard.partition}", offset, events).encode())
