"""What every source adapter shares: the record it reads, the half of an inference it reads
from it, and the refusal that becomes a dead letter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class NotMapped(ValueError):
    """A payload that does not map to the service's events; dead-lettered with this reason,
    naming the field (header, attribute or JSON path) that failed."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class Record(Protocol):
    """The parts of a Kafka record an adapter reads (aiokafka's ConsumerRecord has them)."""

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...

    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Half:
    """One side of an inference: the id that pairs it, which side, its time (seconds since
    the epoch), its body, and what else its adapter reads of it (KServe: the CloudEvent;
    Seldon: the model its topic names)."""

    id: str
    is_request: bool
    ts: float
    body: Any
    context: Any = None
