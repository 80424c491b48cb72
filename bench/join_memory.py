"""Memory of the label join at 100k predictions/s: RSS as predictions pile up in the horizon.

  python bench/join_memory.py [--predictions 10000000] [--impl disk|dicts|both]

Drives the join index the way `agents.predictions` does, without a broker: flushes of
`worker.max_batch` new predictions (one batched dedup lookup, then added as columns), a
third of them labelled 30 s (event time) later (each label looked up one by one, as labels
are), then the flush's chunks written and the label horizon (24 h) expired. Event time
advances 100,000 predictions per second, so 10M predictions are 100 s: nothing is old enough
to expire, and everything stays held. Prints, every million, the process's RSS (VmRSS), the
size of the index on disk, and the time inside the index's calls for that million, per
prediction: the dedup lookup and add, the labels' lookups, the chunk write and expiry.

`disk` is `agents.join_index.Join`; `dicts` the in-memory dicts it replaced (index,
labelled, chunks with their id lists), minus their per-flush expiry scan (O(chunks) per flush,
and there is nothing to expire here). Each runs in its own process, so their RSS is apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.join_index import Join  # noqa: E402
from core.settings import Settings  # noqa: E402

OLD_CHUNK_ROWS = 4000  # rows per chunk of the former in-memory join

RATE = 100_000  # predictions per second of event time
BATCH = Settings().max_batch  # predictions per flush, as one-event messages come
LABEL_DELAY_S = 30.0
HORIZON_S = 86_400.0
MODELS = ["churn", "intent", "demand", "ranker"]
START = 1.8e9


def event_id(i: int) -> str:
    """32 hex characters in random order (like UUIDs: no locality for the index to use)."""
    return f"{(i * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF:016x}{i:016x}"


def rss_mib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


class Dicts:
    """The join as it was: every prediction held in dicts, each chunk's ids in a list."""

    def __init__(self) -> None:
        self.index: dict[str, tuple[str, float, Any, int]] = {}
        self.labelled: dict[str, int] = {}
        self.orphans: dict[str, Any] = {}
        self.chunks: dict[str, tuple[float, list[str]]] = {}
        self.next_seq = {"P": 0, "L": 0}
        self.new_predictions: list[tuple[str, str, float, Any]] = []
        self.new_labelled: list[tuple[str, float]] = []

    def holds_any(self, ids: list[str]) -> bool:
        return not self.index.keys().isdisjoint(ids)

    def add_predictions(self, ids: list[str], models: list[str], ts: list[float],
                        predicted: list[Any]) -> None:
        seq = self.next_seq["P"]
        rows = zip(models, ts, predicted, [seq] * len(ids), strict=True)
        self.index.update(zip(ids, rows, strict=True))
        self.new_predictions.extend(zip(ids, models, ts, predicted, strict=True))

    def prefetch(self, ids: list[str]) -> None:
        """Nothing to read ahead: it is all in memory."""

    def answered(self, eid: str) -> bool:
        return eid in self.labelled or eid in self.orphans

    def prediction(self, eid: str) -> tuple[str, float, Any, int] | None:
        return self.index.get(eid)

    def label(self, eid: str, ts: float) -> None:
        self.labelled[eid] = self.next_seq["L"]
        self.new_labelled.append((eid, ts))

    def write_chunks(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for kind, rows, names in (("P", self.new_predictions, ("i", "m", "t", "p")),
                                  ("L", self.new_labelled, ("i", "t"))):
            for start in range(0, len(rows), OLD_CHUNK_ROWS):
                part = rows[start:start + OLD_CHUNK_ROWS]
                value: dict[str, Any] = {n: [r[i] for r in part] for i, n in enumerate(names)}
                value["x"] = max(value["t"])
                key = f"c|{kind}|{self.next_seq[kind]}"
                self.next_seq[kind] += 1
                self.chunks[key] = (value["x"], value["i"])
                out.append((key, value))
            rows.clear()
        return out

    def expire(self, cutoff: float) -> list[str]:
        return []  # see the module docstring


def run(impl: str, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="join-bench-") as tmp:
        path = Path(tmp) / "join" / "0"
        join: Any = Join(path) if impl == "disk" else Dicts()
        base_rss, _ = rss_mib()
        print(f"{impl}: RSS at start {base_rss:.0f} MiB", flush=True)
        print(f"{'predictions':>12} {'RSS MiB':>8} {'peak MiB':>8} {'B/pred':>7} "
              f"{'disk MiB':>9} {'µs: add':>8} {'labels':>7} {'write':>6} {'all':>6}",
              flush=True)
        spent = [0.0, 0.0, 0.0]  # seconds since the last row: dedup and add, labels, write
        since = 0
        clock: Callable[[], float] = time.perf_counter
        labelled_back = int(LABEL_DELAY_S * RATE)
        watermark = START
        for first in range(0, n, BATCH):
            ids = [event_id(i) for i in range(first, first + BATCH)]
            ts = [START + i / RATE for i in range(first, first + BATCH)]
            models = [MODELS[i % 4] for i in range(first, first + BATCH)]
            predicted = [i % 2 for i in range(first, first + BATCH)]
            back = first - labelled_back
            answers = [event_id(i) for i in range(back, back + BATCH, 3)] if back >= 0 else []
            watermark = ts[-1]
            began = clock()
            if not join.holds_any(ids):
                join.add_predictions(ids, models, ts, predicted)
            added = clock()
            if answers:
                join.prefetch(answers)
            for eid in answers:
                if not join.answered(eid):
                    held = join.prediction(eid)
                    if held is not None:
                        join.label(eid, held[1])
            labelled = clock()
            join.write_chunks()
            join.expire(watermark - HORIZON_S)
            for step, seconds in enumerate((added - began, labelled - added,
                                            clock() - labelled)):
                spent[step] += seconds
            done = first + BATCH
            if done % 1_000_000 == 0 or done >= n:
                rss, peak = rss_mib()
                disk = disk_mib(path) if impl == "disk" else 0.0
                each = [seconds / (done - since) * 1e6 for seconds in spent]
                print(f"{done:>12,} {rss:>8.0f} {peak:>8.0f} "
                      f"{(rss - base_rss) * 2**20 / done:>7.0f} {disk:>9.0f} "
                      f"{each[0]:>8.1f} {each[1]:>7.1f} {each[2]:>6.1f} {sum(each):>6.1f}",
                      flush=True)
                spent, since = [0.0, 0.0, 0.0], done
        if impl == "disk":
            assert join.joinable == n, join.joinable
            join.close()
            print(f"disk after close (memtables flushed): {disk_mib(path):.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=10_000_000)
    parser.add_argument("--impl", choices=("disk", "dicts", "both"), default="both")
    args = parser.parse_args()
    if args.impl != "both":
        run(args.impl, args.predictions)
        return
    for impl in ("disk", "dicts"):
        subprocess.run([sys.executable, __file__, "--impl", impl, "--predictions",
                        str(args.predictions)], check=True, env=os.environ)


if __name__ == "__main__":
    main()
