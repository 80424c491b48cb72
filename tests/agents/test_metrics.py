"""Every metric of the contract, through the real broker and worker(s), against numpy and
scikit-learn over the same event log."""

from __future__ import annotations

import random
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factory_log import WINDOW, compare, expected, generate
from tests.harness import Env, Worker, configured_worker, produce, read_all, wait_for

SCOPE_NAME = {"model": ("model",), "device": ("host", "device"), "pipeline": ("pipeline", "stage")}


def _messages(env: Env, log: Any, rng: random.Random) -> list[tuple[str, int | None, bytes]]:
    """Batches of random size to random partitions; deployments in order on one partition."""
    out: list[tuple[str, int | None, bytes]] = []
    for base, events in log.events.items():
        if base == "deployments":
            ordered = sorted(events, key=lambda e: e["ts"])
            out.append((env.topic(base), 0, orjson.dumps(ordered)))
            continue
        events = list(events)
        if base == "labels":
            rng.shuffle(events)
        i = 0
        while i < len(events):
            size = rng.choice([1, 1, 7, 50, 200])
            chunk = events[i:i + size]
            value = orjson.dumps(chunk[0] if size == 1 else chunk)
            out.append((env.topic(base), rng.randrange(env.partitions), value))
            i += size
    return out


def _latest(env: Env) -> dict[tuple[str, str, float], dict[str, Any]]:
    latest: dict[tuple[str, str, float], dict[str, Any]] = {}
    for record in read_all(env.bootstrap, env.topic("metrics")):
        snap = orjson.loads(record.value)
        name = "/".join(snap[k] for k in SCOPE_NAME.get(snap["scope"], ("host",)))
        key = (snap["scope"], name, snap["window_start"])
        if key not in latest or latest[key]["revision"] < snap["revision"]:
            latest[key] = snap
    return latest


# `worker.store = "memory"` holds decoded values where RocksDB holds bytes: the table writes
# take another path for it (`core.faust_internals.send_changelog`).
@pytest.mark.parametrize(("workers", "store"), [(1, "rocksdb"), (2, "rocksdb"), (1, "memory")])
def test_every_metric_matches_an_independent_computation(env: Env, tmp_path: Path,
                                                         worker_factory: list[Worker],
                                                         workers: int, store: str) -> None:
    start = (int(time.time() // 86400) - 1) * 86400.0  # yesterday, aligned
    log = generate(seed=11, n_predictions=3000, start=start)
    config = tmp_path / "factory.toml"
    config.write_text(log.config_toml() + f'store = "{store}"\n')
    env.extra["FACTORY_CONFIG"] = str(config)
    env.create_topics()
    for i in range(workers):
        w = Worker(env, tmp_path / f"worker{i}.log")
        if i:
            w.env = Env(env.bootstrap, env.state_dir.with_name(f"state{i}"), env.partitions,
                        env.name, extra=env.extra)
        worker_factory.append(w.start())
    want = expected(log)
    messages = _messages(env, log, random.Random(5))
    produce(env.bootstrap, messages)
    print(f"\nproduced {sum(len(v) for v in log.events.values())} events in {len(messages)} "
          f"messages with {workers} worker(s); expecting {len(want)} snapshots")

    def settled() -> dict[tuple[str, str, float], dict[str, Any]] | None:
        got = _latest(env)
        missing = [k for k in want if k not in got]
        if missing:
            return None
        time.sleep(3)
        again = _latest(env)
        return again if again == got else None

    got = wait_for(settled, timeout_s=120, what="every expected snapshot, then quiet")
    problems = []
    for key, fields in sorted(want.items()):
        for p in compare(fields, got[key]):
            problems.append(f"{key}: {p}")
    assert not problems, "\n".join(problems[:40])
    windows = {k[2] for k in want}
    assert len(windows) >= 5
    assert all(s["window_end"] - s["window_start"] == WINDOW for s in got.values())
    assert all(w.alive() for w in worker_factory)
    if workers == 1:
        labels = log.events["labels"]
        label_retries = len(labels) - len({y["event_id"] for y in labels})
        _check_http(worker_factory[0], got, log.duplicate_predictions + label_retries,
                    log.unknown_labels)


def _check_http(worker: Worker, got: dict[tuple[str, str, float], dict[str, Any]],
                duplicates: int, unknown_labels: int) -> None:
    """The worker's HTTP views show what the `metrics` topic holds."""
    churn = {k[2]: v for k, v in got.items() if k[:2] == ("model", "churn")}
    rows = wait_for(lambda: (r := worker.get("/api/v1/metrics?model=churn&window=60s")["metrics"])
                    and len(r) == len(churn) and r, what="the API to catch up")
    assert [r["window_start"] for r in rows] == sorted(churn)
    assert all(r == churn[r["window_start"]] for r in rows)
    first = min(churn)
    ranged = worker.get(f"/api/v1/metrics?model=churn&from={first}&to={first + 60}")["metrics"]
    assert [r["window_start"] for r in ranged] == [first]
    for bad, words in (("window=soon", "window"), ("from=yesterday", "from"),
                       ("limit=0", "limit"), ("scope=planet", "scope"), ("colour=red", "colour")):
        with pytest.raises(urllib.error.HTTPError) as err:
            worker.get(f"/api/v1/metrics?{bad}")
        assert err.value.code == 400
        assert words in orjson.loads(err.value.read())["error"]
    url = f"http://127.0.0.1:{worker.env.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    newest = churn[max(churn)]
    sample = next(s for s in families["factory_predictions"].samples
                  if s.labels == {"model": "churn", "window": "60s"})
    assert sample.value == newest["predictions"]
    assert "factory_gpu_util_avg" in families
    assert any(s.labels.get("device") == "gpu0" for s in families["factory_gpu_util_avg"].samples)
    assert families["factory_duplicates"].samples[0].value == duplicates
    assert families["factory_event_loop_lag_seconds"].samples[0].value < 1.0
    assert families["factory_labels_waiting"].samples[0].value == unknown_labels
    accepted = families["factory_input_accepted"].samples
    assert sum(s.value for s in accepted if s.labels["topic"].endswith(".predictions")) > 0


def test_predictions_are_counted_once_across_a_kill_and_producer_retries(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    start = (int(time.time() // 86400) - 1) * 86400.0
    worker = configured_worker(env, tmp_path, worker_factory,
                               '[windows]\ngrace = "1s"\n[worker]\nidle = "2s"\n')
    events = [{"event_id": f"e{i}", "ts": start + i % 120, "model": "m", "version": "1"}
              for i in range(2000)]
    first, second = events[:1200], events[800:]  # 400 events sent twice, across the kill
    topic = env.topic("predictions")
    produce(env.bootstrap, [(topic, i % env.partitions, orjson.dumps(first[i:i + 100]))
                            for i in range(0, len(first), 100)])
    wait_for(lambda: worker.get("/api/v1/ingest")["topics"].get(topic, {}).get("accepted") == 1200,
             what="the first part to be ingested")
    worker.stop(signal.SIGKILL)
    produce(env.bootstrap, [(topic, i % env.partitions, orjson.dumps(second[i:i + 100]))
                            for i in range(0, len(second), 100)])
    worker.start()

    def counts() -> dict[float, int] | None:
        got = {k[2]: v["predictions"] for k, v in _latest(env).items()
               if k[:2] == ("model", "m")}
        return got if sum(got.values()) == 2000 else None

    got = wait_for(counts, timeout_s=90, what="2000 distinct predictions in snapshots")
    first_window = sum(1 for e in events if e["ts"] < start + 60)
    assert got == {start: first_window, start + 60: 2000 - first_window}
