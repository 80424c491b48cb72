"""Where a prediction's time goes inside the worker, without Kafka, and what the columnar
batch message saves.

  python bench/ingest_cost.py [--events 200000] [--per-message 500] [--random-ids] [--columns]

Part 1 runs the worker's own code in one process on `bench/peer.py`'s predictions, one shard,
in flushes of about 80,000 events (10,000 one-event messages), and prints the time per
event of each step: decoding and validating (`schemas.codec.decode_message`), applying
(`PredictionLogic.apply`: dedupe and label join, columns, windows), the flush's join write
(`before_flush`: chunks, index, expiry), and encoding the touched window states. What it
leaves out is Kafka: the fetch, Faust's consumer thread, the changelog and the broker, which
`bench/peer.py` includes (its CPU per event, against this total, is their share).
`--columns` sends the messages in the columnar form the client library sends
(`schemas/columnar.py`) instead of JSON arrays.

Part 2 takes the same 500 events as one message, as a JSON array and as a columnar batch,
through the service's code up to the columns the apply step makes of them (decode, check,
`_Part`), and prints the time per event of each.

`--random-ids` gives the predictions 32-hex-character ids in random order (as UUIDs are)
instead of `p-<n>` (`bench/peer.py --random-ids` fills its topics so): the join's on-disk
index then has no locality to use, and its write costs more than twice as much.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peer import prediction  # noqa: E402

from agents.predictions import PredictionLogic, _Part  # noqa: E402
from agents.shard import Message, Shard  # noqa: E402
from core.settings import load_settings  # noqa: E402
from schemas import columnar  # noqa: E402
from schemas.codec import VALIDATORS, decode_message  # noqa: E402
from schemas.columnar import Columns  # noqa: E402
from streams.cli import GC_THRESHOLDS  # noqa: E402

FLUSH_EVENTS = 80_000


def in_process(events: int, per_message: int, random_ids: bool = False, columns: bool = False,
               ) -> dict[str, float]:
    """Seconds per step, over `events` predictions in messages of `per_message`."""
    settings = dataclasses.replace(load_settings({}), partitions=1,
                                   state_dir=Path(tempfile.mkdtemp(prefix="fp-cost-")))
    logic = PredictionLogic(settings, {"predictions": "predictions", "labels": "labels"})
    shard = Shard("predictions", 0, settings)
    logic.load(shard, iter(()))
    start = time.time() - 600
    rows = [prediction(i, start, 600 / events, random_ids) for i in range(events)]
    values = [orjson.dumps(rows[i] if per_message == 1 else columnar.encode(
        rows[i:i + per_message]) if columns else rows[i:i + per_message])
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


# -- part 2: rows against columns, up to the apply step's columns ---------------------------

def _rows(value: bytes) -> Any:
    """A JSON array through the service's code, to the columns `apply` makes of it (its
    ids, models, times and predicted values, then `_Part.of`)."""
    events, _ = decode_message(value, VALIDATORS["predictions"])
    assert isinstance(events, list)
    ids, ts = [e["event_id"] for e in events], [e["ts"] for e in events]
    models, predicted = [e["model"] for e in events], [e.get("predicted") for e in events]
    part = _Part.of(events, models, ts, [0] * len(events))
    return (ids, part.ts, models, predicted, part.score, part.latency, part.cost, part.failed,
            part.features)


def _columns(value: bytes) -> Any:
    """A columnar batch through the service's code, to the same columns."""
    batch, _ = decode_message(value, VALIDATORS["predictions"])
    assert isinstance(batch, Columns)
    part = _Part.of_columns(batch, 0)
    return (batch.column("event_id"), part.ts, part.model, batch.column("predicted"),
            part.score, part.latency, part.cost, part.failed, part.features)


def per_event(step: Callable[[], Any], events: int, repeat: int = 300) -> float:
    began = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - began) / repeat / events * 1e6


def rows_against_columns() -> None:
    rows = [prediction(i, 1.7e9, 0.001) for i in range(500)]
    as_rows, as_columns = orjson.dumps(rows), orjson.dumps(columnar.encode(rows))
    same = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS
    for a, b in zip(_rows(as_rows), _columns(as_columns), strict=True):  # the same columns
        assert orjson.dumps(a, option=same) == orjson.dumps(b, option=same)
    print("\n500 events as one message, decoded, checked and made columns:\n")
    print("| message | bytes | µs per event |")
    print("|---|---|---|")
    print(f"| JSON array | {len(as_rows):,} | {per_event(lambda: _rows(as_rows), 500):.2f} |")
    print(f"| columnar batch | {len(as_columns):,} | "
          f"{per_event(lambda: _columns(as_columns), 500):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--random-ids", action="store_true")
    parser.add_argument("--columns", action="store_true",
                        help="messages in the client library's columnar form")
    args = parser.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as the worker runs
    spent = in_process(args.events, args.per_message, args.random_ids, args.columns)
    total = sum(spent.values())
    ids = "random 32-character ids" if args.random_ids else "ids p-<n>"
    form = "columnar batches" if args.columns and args.per_message > 1 else "JSON"
    print(f"{args.events:,} predictions ({ids}), {args.per_message} per message ({form}), one "
          f"shard, in process:\n")
    print("| step | µs per event |")
    print("|---|---|")
    for step, seconds in spent.items():
        print(f"| {step} | {seconds / args.events * 1e6:.2f} |")
    print(f"| in all | {total / args.events * 1e6:.2f} ({args.events / total:,.0f} ev/s) |")
    rows_against_columns()


if __name__ == "__main__":
    main()
