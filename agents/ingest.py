"""The ingest agents: every input topic is read through this one validation path.

Each agent decodes a message (one event or a batch), sends what fails validation to the
dead-letter topic, and records per source partition how far it got and how many events it
accepted and rejected. That record carries the highest offset applied, written in the same
changelog entry as the counts, so a replay after a crash skips what was already counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.codec import VALIDATORS, decode_message
from streams import deadletter


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """Counts of one source partition, and the offset they include."""

    offset: int = -1
    messages: int = 0
    accepted: int = 0
    rejected: int = 0

    def to_state(self) -> dict[str, int]:
        return {"offset": self.offset, "messages": self.messages,
                "accepted": self.accepted, "rejected": self.rejected}

    @classmethod
    def from_state(cls, state: dict[str, int] | None) -> IngestProgress:
        return cls(**state) if state else cls()

    def advance(self, offset: int, accepted: int, rejected: int) -> IngestProgress:
        return IngestProgress(offset, self.messages + 1, self.accepted + accepted,
                              self.rejected + rejected)


def progress_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def register(app: Any, source: Any, base: str, sink: Any, table: Any) -> None:
    """Attach the ingest agent of input topic `base` (read from `source`) to the app."""
    validate = VALIDATORS[base]

    async def ingest(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            key = progress_key(message.topic, message.partition)
            progress = IngestProgress.from_state(table.get(key))
            if message.offset <= progress.offset:
                continue  # replayed after a crash: already counted
            events, rejections = decode_message(event.value, validate)
            if rejections:
                await deadletter.publish(sink, rejections, message.topic, message.partition,
                                         message.offset, message.key)
            table[key] = progress.advance(message.offset, len(events), len(rejections)).to_state()

    app.agent(source, name=f"ingest_{base}")(ingest)
