"""The collector against a real GPU through the real NVML (skipped where there is none).

CI machines have no GPU, so `test_collector.py` runs the collector on a fake `pynvml`; this
file is run on a machine with an NVIDIA driver (`python -m pytest tests/streams/
test_collector_gpu.py -s`). It loads the GPU when torch is there, so the samples must show it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

from agents.aggregators.usage import Usage
from schemas.codec import VALIDATORS
from streams.collector import GpuReader


def _reader() -> GpuReader:
    reader, why = GpuReader.open()
    if reader is None:
        pytest.skip(why)
    return reader


def _load(seconds: float) -> threading.Thread | None:
    """Keep the GPU busy with matrix products for `seconds`, if torch can."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None

    def work() -> None:
        a = torch.randn(8192, 8192, device="cuda")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_real_gpu_samples_are_valid_telemetry_and_show_load() -> None:
    reader = _reader()
    host = socket.gethostname()
    try:
        idle = reader.sample(time.time(), 1.0, host, "gpu-check")
        load = _load(6.0)
        time.sleep(3.0)
        busy = reader.sample(time.time(), 1.0, host, "gpu-check")
        if load is not None:
            load.join()
    finally:
        reader.close()
    assert idle
    assert len(busy) == len(idle)
    for sample in idle + busy:
        assert VALIDATORS["telemetry"](dict(sample)) == sample  # the contract, unchanged
        assert sample["device_name"]
        assert 0 < sample["mem_used_bytes"] <= sample["mem_total_bytes"]
        assert sample["power_w"] > 0
    usage = Usage()
    column = np.array
    usage.update(column([s["util"] for s in busy]), column([1.0] * len(busy)),
                 column([s["mem_used_bytes"] / s["mem_total_bytes"] for s in busy]),
                 column([s["power_w"] for s in busy]), column([np.nan] * len(busy)), None,
                 np.ones(len(busy), dtype=bool))
    values: dict[str, Any] = usage.value() or {}
    print(f"\n{len(idle)} GPU(s): {[s['device_name'] for s in idle]}")
    for before, after in zip(idle, busy, strict=True):
        print(f"{after['device']}: util {before['util']:.0f}% idle -> {after['util']:.0f}% "
              f"under load; memory {after['mem_used_bytes'] / 2**30:.1f} of "
              f"{after['mem_total_bytes'] / 2**30:.1f} GiB; power {before['power_w']:.0f} W "
              f"-> {after['power_w']:.0f} W")
    print(f"as the worker aggregates them: gpu_util_avg {values['gpu_util_avg']:.2f}, "
          f"energy_j {values['energy_j']:.0f}")
    if load is not None:
        assert max(s["util"] for s in busy) >= 50, "a GPU kept busy by torch reads as idle"
        assert values["gpu_util_avg"] >= 0.5
