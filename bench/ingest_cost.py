"""Where a prediction's time goes inside the worker, without Kafka, and what a columnar batch
message would save.

  python bench/ingest_cost.py [--events 200000] [--per-message 500] [--random-ids]

Part 1 runs the worker's own code in one process on `bench/peer.py`'s predictions, one shard,
in flushes of about 80,000 events (10,000 one-event messages), and prints the time per
event of each step: decoding and validating (`schemas.codec.decode_message`), applying
(`PredictionLogic.apply`: dedupe and label join, columns, windows), the flush's join write
(`before_flush`: chunks, index, expiry), and encoding the touched window states. What it
leaves out is Kafka: the fetch, Faust's consumer thread, the changelog and the broker, which
`bench/peer.py` includes (its CPU per event, against this total, is their share).

Part 2 is a prototype, not the service's code: the same 500 events as one columnar message
(`{"columns": {"event_id": [...], "ts": [...], ...}}`), decoded, checked with the rules of
`schemas/events.py` (numbers vectorised, each distinct name checked once) and turned into
the columns the apply step needs, against what rows cost for the same today.

`--random-ids` gives the predictions 32-hex-character ids in random order (as UUIDs are)
instead of `p-<n>` (`bench/peer.py --random-ids` fills its topics so): the join's on-disk
index then has no locality to use, and its write costs more than twice as much.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peer import prediction  # noqa: E402

from agents.predictions import PredictionLogic, _Part  # noqa: E402
from agents.shard import Message, Shard  # noqa: E402
from core.settings import load_settings  # noqa: E402
from schemas.codec import VALIDATORS, decode_message  # noqa: E402
from schemas.fields import INVISIBLE_CHARS, MAX_MAGNITUDE, MAX_STRING  # noqa: E402
from streams.cli import GC_THRESHOLDS  # noqa: E402

FLUSH_EVENTS = 80_000


def in_process(events: int, per_message: int, random_ids: bool = False) -> dict[str, float]:
    """Seconds per step, over `events` predictions in messages of `per_message`."""
    settings = dataclasses.replace(load_settings({}), partitions=1,
                                   state_dir=Path(tempfile.mkdtemp(prefix="fp-cost-")))
    logic = PredictionLogic(settings, {"predictions": "predictions", "labels": "labels"})
    shard = Shard("predictions", 0, settings)
    logic.load(shard, iter(()))
    start = time.time() - 600
    rows = [prediction(i, start, 600 / events, random_ids) for i in range(events)]
    values = [orjson.dumps(rows[i:i + per_message] if per_message > 1 else rows[i])
              for i in range(0, events, per_message)]
    validate = VALIDATORS["predictions"]
    spent = dict.fromkeys(("decode and validate", "apply", "join write", "window states"), 0.0)
    per_flush = max(1, min(10_000, FLUSH_EVENTS // per_message))
    offset = 0
    for first in range(0, len(values), per_flush):
        t0 = time.perf_counter()
        batch = []
        for value in values[first:first + per_flush]:
            valid, _ = decode_message(value, validate, settings.max_message_bytes)
            offset += 1
            batch.append(Message("predictions", offset, valid, "predictions"))
        t1 = time.perf_counter()
        logic.apply(shard, batch)
        t2 = time.perf_counter()
        asyncio.run(logic.before_flush(shard, None))  # type: ignore[arg-type]
        t3 = time.perf_counter()
        for slot in shard.slots.values():
            if slot.dirty:
                orjson.dumps({"s": slot.state.to_state(), "o": slot.offsets})
                slot.dirty = False
        for writes in shard.pending_writes:
            writes.clear()
        t4 = time.perf_counter()
        for step, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[step] += seconds
    logic.unload(shard)
    return spent


# -- part 2: the columnar prototype ------------------------------------------------------

def _rows_to_columns(value: bytes) -> Any:
    """Today's path for a 500-event message, up to the columns `apply` builds from it (the
    ids, models, times and predicted values `_fast_predictions` reads, then `_Part.of`)."""
    events, _ = VALIDATORS["predictions"].batch(orjson.loads(value))
    ids, ts = [e["event_id"] for e in events], [e["ts"] for e in events]
    models, predicted = [e["model"] for e in events], [e.get("predicted") for e in events]
    part = _Part.of(events, models, ts, [0] * len(events))
    return (ids, part.ts, models, predicted, part.score, part.latency, part.cost, part.failed,
            part.features)


def _numbers(column: list[Any], low: float, high: float, optional: bool) -> np.ndarray:
    types = set(map(type, column))
    if not types <= {float, int, type(None)} or (type(None) in types and not optional):
        raise ValueError("not a number")
    values = np.array([math.nan if v is None else v for v in column] if type(None) in types
                      else column, dtype=np.float64)
    inside = (values >= low) & (values <= high)
    if not (inside | np.isnan(values) if optional else inside).all():
        raise ValueError("out of bounds")
    return values


def _texts(column: list[Any], name: bool = False) -> list[str]:
    for text in set(column):  # ids are all distinct; names repeat, and are checked once
        if (type(text) is not str or not text or len(text) > MAX_STRING
                or (name and text[0] == "_")
                or (not (text.isascii() and text.isprintable()) and INVISIBLE_CHARS.search(text))):
            raise ValueError("not a valid string")
    return column


def _columnar(value: bytes) -> Any:
    """The prototype: a columnar message, checked and made columns (no fallback here: on a
    bad value the service would take the rows' path, which names the field)."""
    doc = orjson.loads(value)["columns"]
    status = doc["status"]
    if not set(status) <= {"ok", "error"}:
        raise ValueError("status")
    _texts(doc["version"])
    predicted = doc["predicted"]
    if not set(map(type, predicted)) <= {bool, int, float, str, type(None)}:
        raise ValueError("predicted")
    return (_texts(doc["event_id"]), _numbers(doc["ts"], 0, MAX_MAGNITUDE, False),
            _texts(doc["model"], name=True), predicted,
            _numbers(doc["score"], -MAX_MAGNITUDE, MAX_MAGNITUDE, True),
            _numbers(doc["latency_ms"], 0, 86_400_000.0, True),
            _numbers(doc["cost_usd"], 0, 1e6, True), np.array(status) == "error",
            {n: _numbers(c, -MAX_MAGNITUDE, MAX_MAGNITUDE, False)
             for n, c in doc["features"].items()})


def per_event(step: Callable[[], Any], events: int, repeat: int = 300) -> float:
    began = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - began) / repeat / events * 1e6


def columnar_prototype() -> None:
    rows = [prediction(i, 1.7e9, 0.001) for i in range(500)]
    as_rows = orjson.dumps(rows)
    fields = ("event_id", "ts", "model", "version", "latency_ms", "status", "predicted",
              "score", "cost_usd")
    columns: dict[str, Any] = {name: [r.get(name) for r in rows] for name in fields}
    columns["features"] = {n: [r["features"][n] for r in rows] for n in rows[0]["features"]}
    as_columns = orjson.dumps({"columns": columns})
    today, prototype = _rows_to_columns(as_rows), _columnar(as_columns)
    same = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS
    for a, b in zip(today, prototype, strict=True):  # the same columns, either way
        assert orjson.dumps(a, option=same) == orjson.dumps(b, option=same)
    print("\n500 events as one message, decoded, checked and made columns:\n")
    print("| message | bytes | µs per event |")
    print("|---|---|---|")
    print(f"| rows (today) | {len(as_rows):,} | "
          f"{per_event(lambda: _rows_to_columns(as_rows), 500):.2f} |")
    print(f"| columnar (prototype) | {len(as_columns):,} | "
          f"{per_event(lambda: _columnar(as_columns), 500):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--random-ids", action="store_true")
    args = parser.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as the worker runs
    spent = in_process(args.events, args.per_message, args.random_ids)
    total = sum(spent.values())
    ids = "random 32-character ids" if args.random_ids else "ids p-<n>"
    print(f"{args.events:,} predictions ({ids}), {args.per_message} per message, one shard, "
          f"in process:\n")
    print("| step | µs per event |")
    print("|---|---|")
    for step, seconds in spent.items():
        print(f"| {step} | {seconds / args.events * 1e6:.2f} |")
    print(f"| in all | {total / args.events * 1e6:.2f} ({args.events / total:,.0f} ev/s) |")
    columnar_prototype()


if __name__ == "__main__":
    main()
