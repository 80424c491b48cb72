"""Rejected input goes to the dead-letter topic with the reason and where it came from.

Nothing rejected is dropped silently: every rejection becomes one dead-letter record carrying
the source topic, partition, offset, the position within a batch message, and the rejected
bytes (base64 when they are not UTF-8, truncated only beyond what a Kafka message can carry).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from schemas.codec import Rejection, encode

# Keeps a dead letter, with its envelope, under Kafka's default 1 MiB message limit.
MAX_VALUE_BYTES = 512 * 1024


def dead_letter(
    rejection: Rejection, topic: str, partition: int, offset: int, key: bytes | None
) -> dict[str, Any]:
    """The dead-letter payload for one rejection (see `schemas.outputs.DeadLetter`)."""
    raw = rejection.raw
    truncated = len(raw) > MAX_VALUE_BYTES
    if truncated:
        raw = raw[:MAX_VALUE_BYTES]
    try:
        value, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {
        "reason": rejection.reason,
        "field": rejection.field,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "batch_index": rejection.batch_index,
        "key": None if key is None else key.decode("utf-8", "replace"),
        "value": value,
        "value_encoding": encoding,
        "truncated": truncated,
        "ts": time.time(),
    }


async def publish(
    sink: Any, rejections: list[Rejection], topic: str, partition: int, offset: int,
    key: bytes | None,
) -> list[Any]:
    """Send one dead letter per rejection, keyed by source topic so replays stay ordered;
    return the delivery futures (await them before recording the source offsets)."""
    sent = []
    for rejection in rejections:
        payload = dead_letter(rejection, topic, partition, offset, key)
        sent.append(await sink.send(key=topic.encode(), value=encode(payload)))
    return sent
