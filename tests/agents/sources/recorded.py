"""The recorded payloads under payloads/, as Kafka records, their times moved to now."""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

PAYLOADS = Path(__file__).parent / "payloads"
Headers = list[tuple[str, bytes]]
_TIME = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})Z")


@dataclass(frozen=True)
class Rec:
    """A consumed record, as much of it as an adapter reads."""

    headers: Headers
    value: bytes | None
    topic: str = "t"
    key: bytes | None = None
    timestamp: int = 0


def load(name: str, now: float | None = None) -> list[tuple[Headers, bytes]]:
    """(headers, value) of each recorded record; with `now`, every RFC 3339 time (nanoseconds,
    as Go writes it) moves by the same amount so that the first one is `now`."""
    doc: dict[str, Any] = orjson.loads((PAYLOADS / f"{name}.json").read_bytes())
    records = [([(k, v.encode()) for k, v in r["headers"]], r["value"].encode())
               for r in doc["records"]]
    if now is None:
        return records
    first = _TIME.search(b"".join(v for h, v in records[0][0]) + records[0][1])
    assert first is not None
    shift = now - _seconds(first)

    def moved(raw: bytes) -> bytes:
        return _TIME.sub(lambda m: _stamp(_seconds(m) + shift), raw)

    return [([(k, moved(v)) for k, v in headers], moved(value)) for headers, value in records]


def _seconds(match: re.Match[bytes]) -> float:
    whole = datetime.strptime(match.group(1).decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return whole.timestamp() + int(match.group(2)) / 1e9


def _stamp(ts: float) -> bytes:
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{nanos:09d}Z".encode()


async def _send(bootstrap: str, records: list[tuple[str, int, Headers, bytes]],
                keys: list[bytes | None] | None, stamps: list[int] | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, value, partition=partition, headers=headers,
                                    key=keys[i] if keys else None,
                                    timestamp_ms=stamps[i] if stamps else None)
                for i, (topic, partition, headers, value) in enumerate(records)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def send(bootstrap: str, records: list[tuple[str, int, Headers, bytes]],
         keys: list[bytes | None] | None = None, stamps: list[int] | None = None) -> None:
    """Produce (topic, partition, headers, value) records in order, headers and all (and
    keys and timestamps, when given)."""
    asyncio.run(_send(bootstrap, records, keys, stamps))


def seldon(prefix: str = "seldon", now_ms: int = 0) -> list[Rec]:
    """The recorded Seldon model-topic records, under another topic prefix and moved in time."""
    doc: dict[str, Any] = orjson.loads((PAYLOADS / "seldon_model_topics.json").read_bytes())
    return [Rec(headers=[(k, v.encode()) for k, v in r["headers"]],
                value=base64.b64decode(r["value_base64"]) if r["value_base64"]
                else r["value"].encode(),
                topic=prefix + r["topic"].removeprefix("seldon"), key=r["key"].encode(),
                timestamp=now_ms + r["timestamp_ms"]) for r in doc["records"]]
