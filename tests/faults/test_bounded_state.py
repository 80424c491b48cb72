"""Input that used to grow one window's state past the message limit (issue 11): a
recommender predicting 100,000 distinct items, and features spread over every magnitude. The
worker stays alive, and the window closes with every prediction and label counted."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson

from core.topics import route
from tests.harness import Env, Worker, configured_worker, produce, snapshots_by_window, wait_for

CONFIG = '[windows]\nsizes = ["60s"]\ngrace = "1s"\n[worker]\nidle = "2s"\n'
ITEMS = 100_000
WIDE = 6000  # predictions of the feature-heavy model, 64 features each
BATCH = 1000  # events per message; 100 for the wide model's (2 KB each)


def _batches(env: Env, base: str, events: list[dict[str, Any]], size: int = BATCH,
             ) -> list[tuple[str, int | None, bytes]]:
    """Events in batches of `size`, each on its event id's partition (as the client sends)."""
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        by_partition.setdefault(route(event["event_id"], env.partitions), []).append(event)
    return [(env.topic(base), partition, orjson.dumps(part[i:i + size]))
            for partition, part in by_partition.items() for i in range(0, len(part), size)]


def _magnitude(rng: random.Random) -> float:
    """A feature value of any sign and magnitude the contract accepts (|x| <= 2**53)."""
    return rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-300, 15.9)


def test_a_window_of_100k_classes_and_wide_features_closes_exactly(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 3600 - 1) * 3600
    rng = random.Random(11)
    predictions = [{"event_id": f"r{i}", "ts": start + i * 50 / ITEMS, "model": "recommender",
                    "version": "1", "predicted": f"item-{i}"} for i in range(ITEMS)]
    labels = [{"event_id": f"r{i}", "ts": start + 55, "label": f"item-{i + 1}"}
              for i in range(ITEMS)]
    wide = [{"event_id": f"w{i}", "ts": start + i * 50 / WIDE, "model": "wide", "version": "1",
             "features": {f"f{j:02d}": _magnitude(rng) for j in range(64)}}
            for i in range(WIDE)]
    # later event time on every partition, so that the window closes
    tick = [{"event_id": f"t{p}-{i}", "ts": start + 300, "model": "tick", "version": "1"}
            for p in range(env.partitions) for i in range(20)]
    produce(env.bootstrap, _batches(env, "predictions", predictions)
            + _batches(env, "predictions", wide, 100))
    produce(env.bootstrap, _batches(env, "labels", labels))
    produce(env.bootstrap, _batches(env, "predictions", tick))

    def closed(model: str, field: str, want: int) -> dict[str, Any] | None:
        revisions = snapshots_by_window(env, model).get(start, [])
        newest = max(revisions, key=lambda s: s["revision"], default=None)
        return newest if newest is not None and newest.get(field) == want else None

    recommender = wait_for(lambda: closed("recommender", "labelled", ITEMS), timeout_s=240,
                           what="the recommender's window with every label")
    wide_snapshot = wait_for(lambda: closed("wide", "predictions", WIDE), timeout_s=60,
                             what="the wide model's window")
    log = worker.log_path.read_text()
    print(f"\nrecommender window: {recommender['predictions']} predictions, "
          f"{recommender['labelled']} labelled, accuracy {recommender['accuracy']}; wide "
          f"model: {wide_snapshot['predictions']} predictions")
    assert recommender["predictions"] == ITEMS
    assert recommender["accuracy"] == 0.0
    assert recommender["precision"] == recommender["recall"] == 0.0
    assert "Traceback" not in log
    assert "MessageSizeTooLarge" not in log
    assert worker.alive()
