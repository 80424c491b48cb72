"""Input from a hostile or buggy producer: every case of issue 11 that validation and the
shards must stop, sent to one worker next to good traffic. Each bad event is dead-lettered with
its reason (or, on internal topics, skipped), the good neighbours are counted exactly, names
never collide, and the worker stays up and stops within 15 s."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from agents.messages import window_key
from core.topics import BYID_TOPIC, PARTIALS_TOPIC
from schemas import entities
from tests.harness import Env, Worker, configured_worker, produce, read_all, wait_for

CONFIG = ('[windows]\nsizes = ["10s"]\ngrace = "1s"\n[worker]\nidle = "2s"\n'
          '[limits]\nmodels = 5\n')


def _p(eid: str, ts: float, model: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "ts": ts, "model": model, "version": "1", "predicted": 1, **extra}


def _tel(ts: float, host: str, device: str, **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "host": host, "device": device, "kind": "gpu", "util": 50.0,
            "interval_s": 1.0, **extra}


def _stage(ts: float, pipeline: str, stage: str, records: Any = 10) -> dict[str, Any]:
    return {"ts": ts, "pipeline": pipeline, "stage": stage, "records": records,
            "duration_s": 1.0}


def test_hostile_input_is_dead_lettered_and_good_neighbours_are_counted(
    env: Env, tmp_path: Path, worker_factory: list[Worker],
) -> None:
    env.partitions = 1  # the model cap is per partition: with one, it is exact
    worker = configured_worker(env, tmp_path, worker_factory, CONFIG)
    ts = time.time() - 5
    good = [_p(f"g{i}", ts, "good") for i in range(20)]
    victim = [_p(f"v{i}", ts, "victim") for i in range(10)]
    hostile = [
        _p("big", ts, "good", predicted=1e20),  # "Integer exceeds 64-bit range" before
        _p("res", ts, "_factory"),  # would forge the rollup
        _p("zw", ts, "fra\u200bud"),  # looks like "fraud"
        _p("old", -0.0, "good"),  # a 1970 window on a fresh shard
        _p("v1", ts, "other"),  # another model's event_id
    ]
    records: list[tuple[str, int | None, bytes | None]] = [
        (env.topic("predictions"), 0, orjson.dumps(good + victim + hostile)),
        (env.topic("predictions"), 0, orjson.dumps(_p("pipe", ts, "a|b"))),
        # a label naming another model, before and after its prediction
        (env.topic("labels"), 0, orjson.dumps(
            [{"event_id": f"v{i}", "ts": ts + 1, "label": 0, "model": "attacker"}
             for i in range(10)] + [{"event_id": "w1", "ts": ts + 1, "label": 0,
                                    "model": "attacker"}])),
        (env.topic("predictions"), 0, orjson.dumps(_p("w1", ts, "victim"))),
        (env.topic("labels"), 0, orjson.dumps(
            [{"event_id": f"g{i}", "ts": ts + 1, "label": 1} for i in range(10)]
            + [{"event_id": f"v{i}", "ts": ts + 1, "label": 1, "model": "victim"}
               for i in range(10)])),
        # names that used to merge into one device or one pipeline stage
        (env.topic("telemetry"), 0, orjson.dumps(
            [_tel(ts, "rack1/node2", "gpu0"), _tel(ts, "rack1", "node2/gpu0"),
             _tel(ts, "rack1", "gpu1", power_w=1e308), _tel(ts, "rack1", "gpu2",
                                                             interval_s=1e308)])),
        (env.topic("pipeline"), 0, orjson.dumps(
            [_stage(ts, "etl/raw", "load"), _stage(ts, "etl", "raw/load"),
             _stage(ts, "etl", "load", records=1e20)])),
        # one megabyte of zeros: a bounded number of dead letters that carry the count
        (env.topic("predictions"), 0, b"[" + b",".join([b"0"] * 520_000) + b"]"),
        # garbage on the internal topics and on an output that every worker follows
        (env.topic("metrics"), 0, b"[1]"),
        (f"{env.name}-{BYID_TOPIC}", 0, b"not json"),
        (f"{env.name}-{BYID_TOPIC}", 0, b'{"k": "predictions", "e": [1]}'),
        (f"{env.name}-{PARTIALS_TOPIC}", 0, b"[1]"),
        (f"{env.name}-{PARTIALS_TOPIC}", 0, b'{"t": "p", "shard": "x", "key": "nope", "s": {}}'),
        # well formed, but its state cannot be read: dropped when the window is published
        (f"{env.name}-{PARTIALS_TOPIC}", 0, orjson.dumps(
            {"t": "p", "shard": "x", "key": window_key(entities.model("good"), 10, ts // 10 * 10),
             "s": {"traffic": "forged"}})),
        # past the cap of 5 models (good, victim, a|b, cap0, cap1): cap2 and cap3 refused
        (env.topic("predictions"), 0, orjson.dumps([_p(f"c{i}", ts, f"cap{i}")
                                                    for i in range(4)])),
    ]
    produce(env.bootstrap, records)
    models: dict[str, dict[str, Any]] = {}

    def settled() -> bool:
        for record in read_all(env.bootstrap, env.topic("metrics")):
            snap = orjson.loads(record.value)
            if isinstance(snap, dict) and snap.get("scope") == "model":
                models[snap["model"]] = snap
        return (models.get("good", {}).get("labelled") == 10
                and models.get("victim", {}).get("labelled") == 10
                and {"a|b", "cap0", "cap1"} <= set(models))

    try:
        wait_for(settled, timeout_s=90, what="the good neighbours' windows")
    finally:
        print(f"\nmodels published: {sorted(models)}")
    snaps = [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic("metrics"))]
    devices = {(s["host"], s["device"]) for s in snaps
               if isinstance(s, dict) and s.get("scope") == "device"}
    stages = {(s["pipeline"], s["stage"]) for s in snaps
              if isinstance(s, dict) and s.get("scope") == "pipeline"}
    letters = [orjson.loads(r.value) for r in read_all(env.bootstrap, env.topic("deadletter"))]
    reasons = Counter(letter["reason"].split(":")[0] if "more bad events" not in letter["reason"]
                      else "summary" for letter in letters)
    print(f"devices: {sorted(devices)}; stages: {sorted(stages)}")
    print(f"dead letters: {len(letters)} standing for {sum(d['count'] for d in letters):,} "
          f"events; by field: {dict(reasons)}")
    for letter in letters:
        if letter["count"] == 1:
            print(f"  {letter['topic'].split('.')[-1]}: {letter['reason'][:110]}")

    assert models["good"]["predictions"] == 20
    assert models["good"]["accuracy"] == 1.0
    assert models["victim"]["predictions"] == 11
    assert models["victim"]["accuracy"] == 1.0
    assert not {"fra\u200bud", "other", "cap2", "cap3"} & set(models)
    rollups = Counter((s["window_start"], s["revision"]) for s in snaps
                      if isinstance(s, dict) and s.get("model") == "_factory")
    assert rollups
    assert max(rollups.values()) == 1
    assert {("rack1/node2", "gpu0"), ("rack1", "node2/gpu0")} <= devices
    assert ("rack1", "gpu1") not in devices
    assert ("rack1", "gpu2") not in devices
    assert {("etl/raw", "load"), ("etl", "raw/load")} <= stages
    assert ("etl", "load") not in stages

    def why(words: str) -> list[dict[str, Any]]:
        return [d for d in letters if words in d["reason"]]

    assert len(why("outside +-2**53")) >= 3  # predicted, power_w... records, interval_s
    assert len(why("reserved")) == 1
    assert len(why("U+200B")) == 1
    assert len(why("max_age")) == 1
    assert len(why("already used by a prediction of model 'victim'")) == 1
    assert len(why("the label names model 'attacker'")) == 11  # 10 after, 1 before
    assert len(why("limits.models")) == 2
    zeros = [d for d in letters if d["topic"] == env.topic("predictions")
             and ("more bad events" in d["reason"] or "JSON object" in d["reason"])]
    assert len(zeros) == 11
    assert sum(d["count"] for d in zeros) == 520_000
    assert len(why("malformed record on an internal topic")) == 1
    assert len(why("must be a JSON object")) >= 1

    assert worker.alive()
    assert worker.get("/api/v1/ingest")["topics"]
    skipped = re.search(r"^factory_partials_malformed_total (\S+)$",
                        worker.get_text("/metrics"), re.M)
    assert skipped is not None
    assert float(skipped.group(1)) == 3  # two unreadable records, one unreadable partial
    began = time.monotonic()
    assert worker.stop(signal.SIGTERM) == 0
    print(f"SIGTERM to exit: {time.monotonic() - began:.1f}s")
    assert time.monotonic() - began < 15
    assert "Traceback" not in worker.log_path.read_text(errors="replace")
