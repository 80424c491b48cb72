"""The worker of another commit against this checkout's, in turn, on the same topics.

  python bench/ab.py REV [--bootstrap HOST:PORT] [--events 200000] [--rounds 3]
                         [--kinds single,batched,columnar] [--random-ids]

On this 2-core machine the broker and the worker share the cores, and one run's rate moves by
±10 %: more than most single changes are worth. So each round runs the worker of REV (a git
worktree made here, removed after) and then this checkout's, on topics filled once with
`bench/peer.py`'s predictions (one event per message, and 500 as a JSON array or a
columnar batch; `--random-ids` as there), each timed from its "Ready"
until its ingest count holds every event, and prints the medians per kind: the worker's CPU
per event (all its threads), which moves less than the rate, and the rate. Uncommitted changes
in this checkout are what the "after" side runs. Without `--bootstrap` a broker is started
with the project's own tooling.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import ROOT, Worker, fill

from streams.broker import LocalBroker, free_port

PER_MESSAGE = {"single": 1, "batched": 500, "columnar": 500}


async def compare(rev: str, before: Path, bootstrap: str, events: int, rounds: int,
                  kinds: list[str], work: Path, random_ids: bool) -> None:
    """Fill the topics, then run the two workers in turn; print the medians."""
    run = uuid.uuid4().hex[:6]
    start = (time.time() // 60 - 60) * 60  # an hour ago: well inside windows.max_age
    for kind in kinds:
        filler = Worker(bootstrap, f"ab-{run}-{kind[0]}.", work)
        await filler.topics()
        await fill(bootstrap, f"{filler.prefix}predictions", events, PER_MESSAGE[kind],
                   start, random_ids, kind == "columnar")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(rounds):
        for kind in kinds:
            for side, root in (("before", before), ("after", ROOT)):
                worker = Worker(bootstrap, f"ab-{run}-{kind[0]}.", work, root)
                app_id = f"ab-{run}-{kind}-{side}-{r}"
                worker.env["FACTORY_APP_ID"] = app_id
                worker.env["FACTORY_STATE_DIR"] = str(work / app_id)
                worker.log = work / f"{app_id}.log"
                got = worker.measure(events, 1800)
                results.setdefault((kind, side), []).append(got)
                print(f"round {r}, {kind:7} {side:6}: {events / got['seconds']:>9,.0f} ev/s, "
                      f"{got['cpu_us']:.2f} µs CPU per event", flush=True)
    print(f"\n{rev} (before) against this checkout (after), {events:,} events, "
          f"{rounds} rounds, medians:\n")
    print("| input | before: CPU per event | after | before: events/s | after |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        b, a = results[kind, "before"], results[kind, "after"]
        cpu = [statistics.median(x["cpu_us"] for x in side) for side in (b, a)]
        rate = [statistics.median(events / x["seconds"] for x in side) for side in (b, a)]
        print(f"| {kind} | {cpu[0]:.2f} µs | {cpu[1]:.2f} µs | {rate[0]:,.0f} | "
              f"{rate[1]:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the commit to compare with (before)")
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--events", type=int, default=200_000, help="per input kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="single,batched",
                        help="some of single, batched, columnar")
    parser.add_argument("--random-ids", action="store_true",
                        help="ids like UUIDs (random order) instead of p-<n>")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - set(PER_MESSAGE):
        raise SystemExit(f"--kinds: some of {', '.join(PER_MESSAGE)}")
    work = Path(tempfile.mkdtemp(prefix="fp-ab-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before),
                    args.rev], check=True, capture_output=True)
    broker = None
    try:
        bootstrap = args.bootstrap
        if not bootstrap:
            broker = LocalBroker(work / "broker", port=free_port(span=2), heap="1g")
            bootstrap = broker.start()[0].bootstrap
        asyncio.run(compare(args.rev, before, bootstrap, args.events, args.rounds, kinds,
                            work, args.random_ids))
    finally:
        if broker is not None:
            broker.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                       check=False, capture_output=True)


if __name__ == "__main__":
    main()
