"""Fault tests: the numbers stay exact when workers are killed, state is lost, the broker
restarts. Each prints what it injected and what it found."""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from core.topics import route
from tests.harness import (
    Env,
    Worker,
    configured_worker,
    produce,
    read_all,
    restart_broker,
    snapshots_by_window,
    wait_for,
)

CONFIG = '[windows]\nsizes = ["60s"]\ngrace = "1s"\n[worker]\nidle = "2s"\n'


def _workload(n: int, start: float, seed: int) -> tuple[list[list[Any]], Counter[Any],
                                                         Counter[Any]]:
    """Chunks of (predictions, labels) messages; expected predictions and correct labels
    per (model, window start)."""
    rng = random.Random(seed)
    chunks, predictions, correct = [], Counter(), Counter()
    for c in range(0, n, 2000):
        preds, labels = [], []
        for i in range(c, min(c + 2000, n)):
            model = "a" if i % 3 else "b"
            ts = start + rng.uniform(0, 600)
            predicted = rng.randint(0, 1)
            preds.append({"event_id": f"f{i}", "ts": ts, "model": model, "version": "1",
                          "predicted": predicted})
            window = (model, (ts // 60) * 60)
            predictions[window] += 1
            if i % 2 == 0:
                label = rng.randint(0, 1)
                labels.append({"event_id": f"f{i}", "ts": ts + 30, "label": label})
                correct[window] += label == predicted
        chunks.append([preds, labels])
    return chunks, predictions, correct


def _send(env: Env, chunk: list[Any], rng: random.Random) -> None:
    messages = []
    for base, events in zip(("predictions", "labels"), chunk, strict=True):
        for i in range(0, len(events), 250):
            messages.append((env.topic(base), rng.randrange(env.partitions),
                             orjson.dumps(events[i:i + 250])))
    produce(env.bootstrap, messages)


class _Stopped(NamedTuple):
    worker: Worker
    chunks: list[list[Any]]
    predictions: Counter[Any]
    correct: Counter[Any]
    rng: random.Random
    half: int  # chunks whose predictions were sent before the stop
    total: int  # those predictions


def _half_then_sigterm(env: Env, tmp_path: Path, workers: list[Worker],
                       seed: int) -> _Stopped:
    """A worker given the predictions of the first half of a workload (their labels come
    later), stopped cleanly once it has them all."""
    worker = configured_worker(env, tmp_path, workers, CONFIG)
    chunks, predictions, correct = _workload(20_000, (time.time() // 86400 - 1) * 86400,
                                             seed)
    rng = random.Random(seed + 1)
    half = len(chunks) // 2
    for chunk in chunks[:half]:
        _send(env, [chunk[0], []], rng)
    total = sum(len(c[0]) for c in chunks[:half])
    wait_for(lambda: sum(t["accepted"] for t in worker.get("/api/v1/ingest")["topics"].values())
             >= total, what="the predictions")
    assert worker.stop(signal.SIGTERM) == 0
    return _Stopped(worker, chunks, predictions, correct, rng, half, total)


def _final(env: Env) -> dict[tuple[str, float], dict[str, Any]]:
    latest: dict[tuple[str, float], dict[str, Any]] = {}
    for record in read_all(env.bootstrap, env.topic("metrics")):
        snap = orjson.loads(record.value)
        if snap["scope"] != "model" or snap["model"] == "_factory":
            continue
        key = (snap["model"], snap["window_start"])
        if key not in latest or latest[key]["revision"] < snap["revision"]:
            latest[key] = snap
    return latest


def _wait_exact(env: Env, predictions: Counter[Any], correct: Counter[Any]) -> None:
    def exact() -> bool:
        got = _final(env)
        return all(got.get(k, {}).get("predictions") == v for k, v in predictions.items()) and all(
            round(got[k]["accuracy"] * got[k]["labelled"]) == v for k, v in correct.items())

    try:
        wait_for(exact, timeout_s=120, what="exact final snapshots")
    finally:
        got = _final(env)
        wrong = {k: (v, got.get(k, {}).get("predictions")) for k, v in predictions.items()
                 if got.get(k, {}).get("predictions") != v}
        print(f"windows: {len(predictions)}; windows with wrong counts: {wrong or 'none'}")
    got = _final(env)
    assert sum(s["predictions"] for s in got.values()) == sum(predictions.values())
    assert sum(s["labelled"] for s in got.values()) == sum(predictions.values()) // 2 + (
        sum(predictions.values()) % 2)


def test_three_sigkills_one_during_recovery_lose_and_double_nothing(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 86400 - 1) * 86400
    chunks, predictions, correct = _workload(100_000, start, seed=1)
    rng = random.Random(2)
    kill_after = sorted(rng.sample(range(3, len(chunks) - 3), 2))
    began = time.monotonic()
    recoveries = []
    for index, chunk in enumerate(chunks):
        _send(env, chunk, rng)
        if index in kill_after:
            time.sleep(rng.uniform(0, 0.5))
            worker.stop(signal.SIGKILL)
            killed = time.monotonic()
            worker.start()
            recoveries.append(time.monotonic() - killed)
            if index == kill_after[0]:  # kill again while its tables recover, then restart
                worker.stop(signal.SIGKILL)
                worker.start()
    print(f"\ninjected 3 SIGKILLs (one during recovery) over 100,000 predictions + 50,000 "
          f"labels; restart-to-ready {', '.join(f'{r:.1f}s' for r in recoveries)}")
    _wait_exact(env, predictions, correct)
    print(f"all exact {time.monotonic() - began:.0f}s after the first event")


def test_deleted_local_state_is_rebuilt_from_the_changelog(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    worker, chunks, predictions, correct, rng, half, total = _half_then_sigterm(
        env, tmp_path, worker_factory, seed=3)
    shutil.rmtree(env.state_dir / "worker")
    print(f"\ndeleted {env.state_dir / 'worker'} after {total:,} predictions")
    worker.start()
    for chunk in chunks[:half]:
        _send(env, [[], chunk[1]], rng)
    for chunk in chunks[half:]:
        _send(env, chunk, rng)
    _wait_exact(env, predictions, correct)


def test_a_clean_stop_keeps_the_join_index_and_a_kill_after_it_rebuilds(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    """A SIGTERM between flushes keeps each shard's join index with the changelog offset it
    matches; the next start takes it up instead of rebuilding, and labels of the
    predictions held before, and those predictions sent again, count as they would have.
    A SIGKILL after that start (the note is gone once the files are opened) rebuilds."""
    worker, chunks, predictions, correct, rng, half, total = _half_then_sigterm(
        env, tmp_path, worker_factory, seed=5)
    notes = sorted(env.state_dir.rglob("kept.json"))
    print(f"\nstopped after {total:,} predictions; kept: {[n.parent.name for n in notes]}")
    assert len(notes) == env.partitions
    worker.start()
    for chunk in chunks[:half]:  # their labels, and the predictions again (a producer's retry)
        _send(env, [chunk[0][:500], chunk[1]], rng)
    labels = sum(len(c[1]) for c in chunks[:half])

    def counters() -> dict[str, float]:
        return {line.split()[0]: float(line.split()[1])
                for line in worker.get_text("/metrics").splitlines()
                if line.startswith(("factory_duplicates", "factory_labels_waiting",
                                    "factory_predictions_joinable"))}

    def labels_in() -> int:
        topics = worker.get("/api/v1/ingest")["topics"]
        return int(topics.get(env.topic("labels"), {}).get("accepted", 0))

    wait_for(lambda: labels_in() == labels, what="the labels")
    wait_for(lambda: counters().get("factory_duplicates_total") == 500 * half,
             what="the predictions sent again taken for duplicates")
    got = counters()
    print(f"after the restart: {got}")
    assert got["factory_labels_waiting"] == 0  # every label found its prediction
    assert got["factory_predictions_joinable"] == total
    log = worker.log_path.read_text()
    assert log.count("taken up") == env.partitions
    assert "rebuilt from the changelog" not in log.split("taken up", 1)[1]
    assert not list(env.state_dir.rglob("kept.json"))
    worker.stop(signal.SIGKILL)
    worker.start()
    for chunk in chunks[half:]:
        _send(env, chunk, rng)
    _wait_exact(env, predictions, correct)
    log = worker.log_path.read_text().split("taken up")[-1]  # after the kill
    assert log.count("rebuilt from the changelog") == env.partitions


def test_sigterms_while_traffic_flows_lose_and_double_nothing(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    """Stops land wherever they land: between flushes (the index is kept and taken up) or
    inside one (nothing is kept: the next load rebuilds). Either way every number stays
    exact."""
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 86400 - 1) * 86400
    chunks, predictions, correct = _workload(60_000, start, seed=7)
    rng = random.Random(8)
    stop_after = sorted(rng.sample(range(3, len(chunks) - 2), 3))
    for index, chunk in enumerate(chunks):
        _send(env, chunk, rng)
        time.sleep(0.3)  # (the worker applies each chunk: stops land between or inside)
        if index in stop_after:
            time.sleep(rng.uniform(0, 0.5))
            assert worker.stop(signal.SIGTERM) == 0
            worker.start()
    _wait_exact(env, predictions, correct)
    log = worker.log_path.read_text()
    print(f"loads after the stops: {log.count('taken up')} taken up, "
          f"{log.count('rebuilt from the changelog')} rebuilt (the first start's included)")


def test_flushes_cut_at_their_event_bound_and_a_kill_lose_and_double_nothing(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    """`worker.max_batch_events` below two messages' events: every flush gives messages
    back to the reader (applied by the next one, committed only then), and a SIGKILL lands
    among them."""
    config = CONFIG.replace("[worker]\n", "[worker]\nmax_batch_events = 300\n")
    worker = configured_worker(env, tmp_path, worker_factory, config)
    start = (time.time() // 86400 - 1) * 86400
    chunks, predictions, correct = _workload(20_000, start, seed=9)
    rng = random.Random(10)
    for index, chunk in enumerate(chunks):
        _send(env, chunk, rng)
        if index == len(chunks) // 2:
            time.sleep(0.5)
            worker.stop(signal.SIGKILL)
            worker.start()
    _wait_exact(env, predictions, correct)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_broker_restart_mid_stream_loses_nothing(
    own_broker: str, env: Env, tmp_path: Path, worker_factory: list[Worker], sig: signal.Signals,
) -> None:
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 86400 - 1) * 86400
    chunks, predictions, correct = _workload(20_000, start, seed=5)
    rng = random.Random(6)
    for chunk in chunks[: len(chunks) // 2]:
        _send(env, chunk, rng)
    down = restart_broker(env, sig, pause_s=2.0)
    print(f"\nbroker stopped ({sig.name}) and started again in {down:.1f}s mid-stream")
    for chunk in chunks[len(chunks) // 2:]:
        _send(env, chunk, rng)
    _wait_exact(env, predictions, correct)
    assert worker.alive()


def test_scaling_one_two_one_workers_keeps_every_partition_moving_and_exact(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    env.partitions = 4
    first = configured_worker(env, tmp_path, worker_factory, CONFIG)
    start = (time.time() // 86400 - 1) * 86400
    chunks, predictions, correct = _workload(30_000, start, seed=7)
    rng = random.Random(8)
    third = len(chunks) // 3
    for chunk in chunks[:third]:
        _send(env, chunk, rng)
    second = Worker(Env(env.bootstrap, tmp_path / "state2", env.partitions, env.name,
                        extra=env.extra), tmp_path / "worker2.log")
    worker_factory.append(second.start())
    for chunk in chunks[third:2 * third]:
        _send(env, chunk, rng)
    moved = wait_for(lambda: second.get("/api/v1/ingest")["topics"], timeout_s=60,
                     what="the second worker to take partitions")
    assert worker_factory[1].stop(signal.SIGTERM) == 0
    for chunk in chunks[2 * third:]:
        _send(env, chunk, rng)
    print(f"\nscaled 1 -> 2 -> 1 workers (SIGTERM); the second worker ingested {moved}")
    _wait_exact(env, predictions, correct)
    assert first.alive()


def test_shuffled_and_late_events_on_time_windows_exact_late_ones_corrected(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    configured_worker(env, tmp_path, worker_factory,
                      '[windows]\nsizes = ["60s"]\ngrace = "30s"\nretention = "1h"\n'
                      'max_age = "1d"\n'
                      '[worker]\nidle = "2s"\n')
    rng = random.Random(9)
    start = (time.time() // 3600 - 2) * 3600
    events = [{"event_id": f"s{i}", "ts": start + i * 0.06, "model": "m", "version": "1"}
              for i in range(20_000)]  # 20 minutes of event time
    # 1 % of the events, all from the first 5 minutes, arrive after those windows closed
    late = set(rng.sample(range(len(events) // 4), 200))
    on_time = [e for i, e in enumerate(events) if i not in late]
    chunks: list[list[dict[str, Any]]] = []
    for c in range(0, len(on_time), 500):  # 30 s of event time per chunk, shuffled inside
        chunk = on_time[c:c + 500]
        rng.shuffle(chunk)
        chunks.append(chunk)

    def send(chunk: list[dict[str, Any]]) -> None:
        produce(env.bootstrap, [(env.topic("predictions"), p, orjson.dumps(chunk[p::2]))
                                for p in range(2)])

    for chunk in chunks:
        send(chunk)
    want = Counter((e["ts"] // 60) * 60 for e in events)
    late_windows = {(events[i]["ts"] // 60) * 60 for i in late}
    wait_for(lambda: late_windows <= set(snapshots_by_window(env, "m")), timeout_s=60,
             what="the early windows to close")
    expired = [{"event_id": f"old{i}", "ts": start - 7200 + i, "model": "m", "version": "1"}
               for i in range(7)]
    send([events[i] for i in sorted(late)] + expired)  # ten minutes of event time late

    def settled() -> dict[float, list[dict[str, Any]]] | None:
        got = snapshots_by_window(env, "m")
        newest = {w: max(s, key=lambda x: x["revision"]) for w, s in got.items()}
        done = all(newest.get(w, {}).get("predictions") == n for w, n in want.items())
        return got if done else None

    got = wait_for(settled, timeout_s=120, what="every window exact")
    first = {w: min(s, key=lambda x: x["revision"]) for w, s in got.items()}
    on_time_windows = [w for w in want if w not in late_windows]
    exact_first = [w for w in on_time_windows if first[w]["predictions"] == want[w]]
    corrected = [w for w in late_windows if max(s["revision"] for s in got[w]) >= 2]
    letters = [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic("deadletter"))]
    print(f"\n{len(events):,} events shuffled within 30 s, {len(late)} delivered 10 min late, "
          f"{len(expired)} older than the retention; on-time windows exact at revision 1: "
          f"{len(exact_first)}/{len(on_time_windows)}; late windows republished: "
          f"{len(corrected)}/{len(late_windows)}; dead letters: {len(letters)}")
    assert len(exact_first) == len(on_time_windows)
    assert len(corrected) == len(late_windows)
    assert sorted(orjson.loads(d["value"])["event_id"] for d in letters) == sorted(
        e["event_id"] for e in expired)
    assert all("older than the retention" in d["reason"] for d in letters)



def test_state_stays_bounded_by_the_retention_across_restarts(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    worker = configured_worker(
        env, tmp_path, worker_factory,
        '[windows]\nsizes = ["60s"]\ngrace = "1s"\nretention = "30m"\n'
        'max_age = "1d"\n'
        'label_horizon = "30m"\n[worker]\nidle = "2s"\n')
    start = (time.time() // 3600 - 4) * 3600
    per_minute = 20
    events = [{"event_id": f"r{i}", "ts": start + i * 60 / per_minute, "model": "m",
               "version": "1", "predicted": 1} for i in range(3 * 60 * per_minute)]
    hour = 60 * per_minute

    def send(chunk: list[dict[str, Any]]) -> None:
        parts: dict[int, list[Any]] = {}
        for event in chunk:
            parts.setdefault(route(event["event_id"], env.partitions), []).append(event)
        labels = {p: [{"event_id": e["event_id"], "ts": e["ts"] + 1, "label": 1}
                      for e in evs[::2]] for p, evs in parts.items()}
        produce(env.bootstrap, [(env.topic(base), p, orjson.dumps(evs[i:i + 200]))
                                for base, by in (("predictions", parts), ("labels", labels))
                                for p, evs in by.items() for i in range(0, len(evs), 200)])

    def gauges() -> dict[str, float]:
        return {line.split()[0][8:]: float(line.split()[1])
                for line in worker.get_text("/metrics").splitlines()
                if line.split()[0] in ("factory_window_slots", "factory_snapshot_windows",
                                       "factory_predictions_joinable")}

    seen = []
    for phase, sig in enumerate((signal.SIGTERM, signal.SIGKILL, None)):
        send(events[phase * hour:(phase + 1) * hour])
        newest = events[(phase + 1) * hour - 1]["ts"]
        wait_for(lambda newest=newest: any(  # type: ignore[misc]
            orjson.loads(r.value)["window_start"] >= newest - 120
            for r in read_all(env.bootstrap, env.topic("metrics"))), timeout_s=90,
            what=f"hour {phase + 1} to be published")
        seen.append(gauges())
        if sig is not None:
            worker.stop(sig)
            worker.start()
    windows = wait_for(lambda: len(w := {orjson.loads(r.value)["window_start"] for r in read_all(
        env.bootstrap, env.topic("metrics"))}) == 180 and w, what="all 180 windows")
    print(f"\n3 h of event time, 30 min retention, restarted by SIGTERM and SIGKILL: state "
          f"after each hour {seen}; windows published {len(windows)}")
    # one entity: per shard, the windows of the retention plus the open ones. Read once the
    # stage's pass is over: it publishes the newest windows before it drops the expired ones,
    # and a gauge read between the two (the test reads it as soon as the newest is on the
    # topic) sees both
    last = wait_for(lambda: (g := gauges())["snapshot_windows"] <= 34 and g, timeout_s=30,
                    what="the stage to drop the windows past retention")
    assert 0 < last["window_slots"] <= env.partitions * 34
    assert 0 < last["snapshot_windows"] <= 34
    # the join forgets by chunk (one per flush here): the horizon plus a flush's events
    assert 0 < last["predictions_joinable"] <= 2 * hour
