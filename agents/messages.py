"""The service's internal messages and table keys, each built and read here only.

Internal messages: what the shards send the snapshot stage on the partials topic (a window's
partial, heartbeats, deployments) and what they announce to each other on the byid topic
(floors). Table keys: a window's, a partial's, and the snapshot stage's own (alert, drift,
lifecycle and retraining states per model).

Why one module: each of these crosses a process boundary or outlives a release (a record on
a topic, a key in a changelog), so its field names are a format, written once. The wire form
is the compact JSON of the earlier releases (one-letter fields), so records written by an
older worker still read; each record and each table now also carries FORMAT, and a reader
refuses what a newer release wrote (`FormatError`) instead of misreading it. A later change
of format raises FORMAT and reads the older ones here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import orjson

from schemas.codec import VALIDATORS
from schemas.fields import JSON

# The format of every internal record and of the tables' keys and values. 0: records written
# before the field existed (the same fields, read alike).
FORMAT = 1
# The table key (per shard partition, and in the stage's table) that holds the format.
FORMAT_KEY = "format"


class FormatError(ValueError):
    """A record or table written by a newer release than this one."""


def check_format(found: Any, what: str) -> None:
    """Refuse `found` (a record's or table's format) when a newer release wrote it."""
    if not isinstance(found, int) or found > FORMAT:
        raise FormatError(f"{what} has format {found!r}; this release reads up to {FORMAT}: "
                          "upgrade every worker before reading its state")


# -- window keys ---------------------------------------------------------------------------


@overload
def window_start(ts: float, size: float) -> float: ...


@overload
def window_start(ts: npt.NDArray[np.float64], size: float) -> npt.NDArray[np.float64]: ...


def window_start(ts: Any, size: float) -> Any:
    """The start of the window of `size` seconds that event time `ts` (or each of an array
    of them) falls in: windows are aligned to the epoch."""
    if isinstance(ts, np.ndarray):
        return np.floor(ts / size) * size
    return math.floor(ts / size) * size


def window_key(entity: str, size: float, start: float) -> str:
    return f"w|{entity}|{size:g}|{start:.0f}"


def is_window_key(key: str) -> bool:
    return key.startswith("w|")


def parse_window_key(key: str) -> tuple[str, float, float]:
    """(entity, size, start) of a window key; entity names may themselves hold '|'."""
    entity, size, start = key.split("|", 1)[1].rsplit("|", 2)
    return entity, float(size), float(start)


def part_key(part: str, key: str) -> str:
    """The stage's table key of one shard's partial (or the lifecycle part) of window `key`.

    Each partial is its own table value: one value holding every shard's partial of a window
    would grow with the partition count past the message limit."""
    return f"pt|{part}|{key}"


def parse_part_key(key: str) -> tuple[str, str]:
    """(part, window key) of a partial's key."""
    _, part, window = key.split("|", 2)
    return part, window


# -- a shard's own keys (its table's keys are prefixed with "<partition>|" by the runtime) ---


def ingest_key(topic: str) -> str:
    """How far the shard has applied `topic` (`agents.shard.IngestProgress`)."""
    return f"ingest|{topic}"


def parse_ingest_key(key: str) -> str | None:
    """The topic of an ingest key; None for another key."""
    return key[len("ingest|"):] if key.startswith("ingest|") else None


def chunk_key(kind: str, seq: int) -> str:
    """One chunk of the label join's rows (`agents.join_index`: kind P, L or O)."""
    return f"c|{kind}|{seq}"


def parse_chunk_key(key: str) -> tuple[str, int] | None:
    """(kind, seq) of a chunk key; None for another key."""
    if not key.startswith("c|"):
        return None
    _, kind, seq = key.split("|")
    return kind, int(seq)


# -- the snapshot stage's keys per model and per rule --------------------------------------

ALERT, DRIFT, LIFECYCLE, RETRAIN, PART, WINDOW = "alert", "drift", "lc", "retrain", "pt", "w"


def alert_key(rule: str, entity: str) -> str:
    """A rule's state for one entity."""
    return f"{ALERT}|{rule}|{entity}"


def model_key(kind: str, model: str) -> str:
    """A model's DRIFT, LIFECYCLE or RETRAIN state."""
    return f"{kind}|{model}"


def stage_key_kind(key: str) -> tuple[str, str]:
    """(kind, the rest) of a stage table key; a key without '|' is its own kind
    ("sources", "factory", "horizon", FORMAT_KEY)."""
    kind, _, rest = key.partition("|")
    return kind, rest


# -- the partials topic: shards -> snapshot stage ------------------------------------------


@dataclass(frozen=True, slots=True)
class Partial:
    """A shard's whole state of one window (the stage keeps the newest per shard)."""

    shard: str  # family:partition
    key: str  # window_key
    state: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps({"t": "p", "v": FORMAT, "shard": self.shard, "key": self.key,
                             "s": self.state})


@dataclass(frozen=True, slots=True)
class Heartbeats:
    """Each shard's watermark (None before its first event) and whether it is caught up."""

    shards: dict[str, tuple[float | None, bool]]

    def encode(self) -> bytes:
        return orjson.dumps({"t": "h", "v": FORMAT,
                             "shards": {s: [wm, idle] for s, (wm, idle) in self.shards.items()}})


@dataclass(frozen=True, slots=True)
class Deployments:
    """Deployment events of one input record (`source`: family:partition, at `offset`),
    for the stage's lifecycle metrics; the stage applies each record once."""

    source: str
    offset: int
    events: list[JSON]

    def encode(self) -> bytes:
        return orjson.dumps({"t": "d", "v": FORMAT, "src": self.source, "o": self.offset,
                             "e": self.events})


StageRecord = Partial | Heartbeats | Deployments


def decode_stage_record(raw: bytes | None) -> StageRecord:
    """A record of the partials topic, checked whole. Anyone who can reach the topic can
    write to it: what is malformed raises (orjson's, Key-, Type-, Value- or IndexError),
    and the stage skips and counts it."""
    doc = orjson.loads(raw or b"")
    check_format(doc.get("v", 0), "a partials record")
    kind = doc["t"]
    if kind == "p":
        shard, key, state = doc["shard"], doc["key"], doc["s"]
        if not (isinstance(shard, str) and isinstance(key, str) and isinstance(state, dict)):
            raise TypeError("a partial needs a shard, a key and a state")
        parse_window_key(key)
        return Partial(shard, key, state)
    if kind == "h":
        return Heartbeats({str(shard): (None if wm is None else float(wm), bool(idle))
                           for shard, (wm, idle) in doc["shards"].items()})
    if kind == "d":
        src, offset, events = doc["src"], int(doc["o"]), doc["e"]
        if not isinstance(src, str) or not isinstance(events, list):
            raise TypeError("deployments need a source and a list of events")
        return Deployments(src, offset, [VALIDATORS["deployments"](e) for e in events])
    raise ValueError(f"unknown record type {kind!r}")


# -- the byid topic: a shard's floors, announced to the others -----------------------------


@dataclass(frozen=True, slots=True)
class Floors:
    """What each announcing shard (by partition) is at: [the oldest event time it may
    still forward, the event time up to which it has forwarded all of its own sources], or
    None when its own sources are quiet (it holds nobody back). See `agents.shard`."""

    floors: dict[int, list[float] | None]

    KIND = "floors"  # its kind among the byid topic's records (the others: forwarded events)

    def encode(self) -> bytes:
        return orjson.dumps({"k": self.KIND, "v": FORMAT, "e": [],
                             "f": {str(p): f for p, f in self.floors.items()}})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Floors:
        check_format(doc.get("v", 0), "a floors record")
        return cls({int(k): None if v is None else [float(v[0]), float(v[1])]
                    for k, v in doc["f"].items()})
