"""The NVML path against a fake `pynvml` (no GPU here), the CPU path against /proc."""

from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import VALIDATORS, message_events
from streams.collector import CpuReader, GpuReader, collect
from tests.harness import Env, read_all


class FakeNVMLError(Exception):
    pass


def fake_pynvml(devices: list[dict[str, Any]], init_error: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = FakeNVMLError  # type: ignore[attr-defined]

    def init() -> None:
        if init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def field(handle: int, name: str) -> Any:
        value = devices[handle][name]
        if isinstance(value, Exception):
            raise value
        return value

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: field(h, "name")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = (  # type: ignore[attr-defined]
        lambda h: types.SimpleNamespace(gpu=field(h, "util")))
    nvml.nvmlDeviceGetMemoryInfo = lambda h: field(h, "memory")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetPowerUsage = lambda h: field(h, "power_mw")  # type: ignore[attr-defined]
    return nvml


H200 = {"name": b"NVIDIA H200", "util": 87, "power_mw": 650_000,
        "memory": types.SimpleNamespace(used=80 * 2**30, total=141 * 2**30)}


def test_gpu_samples_are_contract_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([H200, dict(H200, util=3)]))
    reader, why = GpuReader.open()
    assert reader is not None
    assert why == "2 GPU(s) found through NVML"
    samples = reader.sample(1000.0, 5.0, "node-1", "churn")
    assert [s["device"] for s in samples] == ["gpu0", "gpu1"]
    first = samples[0]
    assert first == {"ts": 1000.0, "host": "node-1", "device": "gpu0", "kind": "gpu",
                     "util": 87.0, "interval_s": 5.0, "model": "churn",
                     "device_name": "NVIDIA H200", "mem_used_bytes": 80 * 2**30,
                     "mem_total_bytes": 141 * 2**30, "power_w": 650.0}
    for sample in samples:
        VALIDATORS["telemetry"].one(dict(sample))


def test_an_nvml_error_on_one_device_spares_the_others(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    broken_power = dict(H200, power_mw=FakeNVMLError("Not Supported"))
    gone = dict(H200, util=FakeNVMLError("GPU is lost"))
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([broken_power, gone, H200]))
    reader, _ = GpuReader.open()
    assert reader is not None
    for _ in range(3):
        samples = reader.sample(1.0, 1.0, "h", None)
    assert [s["device"] for s in samples] == ["gpu0", "gpu2"]
    assert "power_w" not in samples[0]
    assert samples[1]["power_w"] == 650.0
    warnings = [r.message for r in caplog.records]
    assert sum("GPU is lost" in w for w in warnings) == 1, "each problem is reported once"


def test_without_a_driver_the_reader_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error=True))
    reader, why = GpuReader.open()
    assert reader is None
    assert why == "no NVIDIA driver or GPU found (Driver Not Loaded)"


def test_cpu_reader_uses_proc_deltas(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 400 kB\n")
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    reader = CpuReader(tmp_path)
    assert reader.sample(1.0, 5.0, "h", None) == []
    stat.write_text("cpu  250 0 150 1000 0 0 0 0 0 0\n")  # 200 busy of 400 ticks
    (sample,) = reader.sample(2.0, 5.0, "h", "m")
    assert sample["util"] == 50.0
    assert (sample["mem_used_bytes"], sample["mem_total_bytes"]) == (600 * 1024, 1000 * 1024)
    VALIDATORS["telemetry"].one(dict(sample))


def test_collect_publishes_gpu_and_cpu_telemetry_through_kafka(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([H200]))
    env.create_topics()
    sent = asyncio.run(collect(env.settings(), 0.2, "churn", host="node-9", count=3))
    assert "1 GPU(s) found through NVML" in capsys.readouterr().out
    events = [e for r in read_all(env.bootstrap, env.topic("telemetry"))
              for e in message_events(r.value)]
    assert len(events) == sent == 6
    assert sorted({e["device"] for e in events}) == ["cpu", "gpu0"]
    assert all(e["host"] == "node-9" and e["model"] == "churn" for e in events)
