"""A worker that starts behind a backlog longer than the retention: event time races through
two hours in seconds, and no window may close with part of its data.

Each input topic partition is read at its own pace (labels, sparser, run ahead of the
predictions), so a shard's retention follows its slowest active source, not its newest event."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.topics import route
from tests.harness import Env, Worker, produce, read_all, snapshots_by_window, wait_for

CONFIG = ('[windows]\nsizes = ["60s"]\ngrace = "1s"\nretention = "1h"\n'
          'max_age = "1d"\n'
          '[worker]\nidle = "2s"\n')


@pytest.mark.parametrize("routed", [True, False], ids=["routed", "unrouted"])
def test_a_backlog_of_two_hours_closes_every_window_whole(
    env: Env, tmp_path: Path, worker_factory: list[Worker], routed: bool,
) -> None:
    env.partitions = 4
    path = tmp_path / "factory.toml"
    path.write_text(CONFIG)
    env.extra["FACTORY_CONFIG"] = str(path)
    env.create_topics()
    start = (time.time() // 3600 - 3) * 3600  # from three hours ago to one hour ago
    events = [{"event_id": f"b{i}", "ts": start + i * 0.3, "model": "m", "version": "1",
               "predicted": i % 2} for i in range(24_000)]
    labels = [{"event_id": e["event_id"], "ts": e["ts"] + 5, "label": 1}
              for e in events[::3]]
    want = Counter((e["ts"] // 60) * 60 for e in events)
    labelled = Counter((e["ts"] // 60) * 60 for e in events[::3])  # by prediction time
    messages = []
    for base, batch in (("predictions", events), ("labels", labels)):
        parts: dict[int, list[Any]] = {}
        for i, event in enumerate(batch):  # in time order within each partition
            p = route(event["event_id"], env.partitions) if routed else (i // 50) % 4
            parts.setdefault(p, []).append(event)
        for p, chunk in parts.items():
            messages += [(env.topic(base), p, orjson.dumps(chunk[i:i + 200]))
                         for i in range(0, len(chunk), 200)]
    produce(env.bootstrap, messages)
    began = time.monotonic()
    worker = Worker(env, tmp_path / "worker.log")
    worker_factory.append(worker.start())

    def all_closed() -> dict[float, list[dict[str, Any]]] | None:
        got = snapshots_by_window(env, "m")
        return got if set(want) <= set(got) else None

    try:
        got = wait_for(all_closed, timeout_s=120, what="all 120 windows")
    finally:
        seen = snapshots_by_window(env, "m")
        print(f"\n{len(events):,} predictions + {len(labels):,} labels over 2 h of event time "
              f"({'routed' if routed else 'any partition'}) waiting before the worker "
              f"started; windows published: {len(seen)}/{len(want)} after "
              f"{time.monotonic() - began:.0f}s")
    first = {w: min(s, key=lambda x: x["revision"]) for w, s in got.items()}
    letters = [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic("deadletter"))]
    partial = {w: (first[w]["predictions"], n) for w, n in want.items()
               if first[w]["predictions"] != n}
    unlabelled = {w: (first[w]["labelled"], n) for w, n in labelled.items()
                  if first[w]["labelled"] != n}
    print(f"windows closed with part of their predictions: {len(partial)}, of their labels: "
          f"{len(unlabelled)}; dead letters: {len(letters)}")
    assert not partial
    assert not unlabelled
    assert not letters
