"""Peak memory and time of decoding one hostile message of the largest allowed size.

  python bench/bad_input_memory.py

Each case runs in a fresh process: a 1 MiB JSON array of empty objects (349,000 bad events)
and a 1 MiB columnar batch of bare timestamps (524,000 bad events), decoded as the worker
does (`schemas.codec.decode_message`). Both come to 11 dead letters; what they cost on the
way is what this prints: the time, and the peak of memory allocated while decoding
(tracemalloc, which numpy reports to as well; the time is taken without it).
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.codec import VALIDATORS, decode_message  # noqa: E402

CASES = {
    "array of 349,000 empty objects": b"[" + b",".join([b"{}"] * 349_000) + b"]",
    "columnar batch of 524,000 timestamps": (
        b'{"_columns":{"ts":[' + b",".join([b"0"] * 524_000) + b"]}}"),
}


def measure(case: str) -> None:
    value = CASES[case]
    validate = VALIDATORS["predictions"]
    began = time.perf_counter()
    decode_message(value, validate, 1 << 20)
    took = time.perf_counter() - began
    tracemalloc.start()
    _, rejected = decode_message(value, validate, 1 << 20)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    bad = sum(r.count for r in rejected)
    print(f"| {case} | {len(value):,} | {len(rejected)} ({bad:,} events) | {took:.2f} s | "
          f"{peak:,.0f} MiB |")


def main() -> None:
    if len(sys.argv) > 1:
        measure(sys.argv[1])
        return
    print("| message | bytes | dead letters | decode | peak allocated |")
    print("|---|---|---|---|---|")
    for case in CASES:
        subprocess.run([sys.executable, __file__, case], check=True)


if __name__ == "__main__":
    main()
