"""`factory-pulse collect`: GPU samples through NVML and host CPU samples, to `telemetry`.

Without an NVIDIA driver the collector says so once and publishes CPU samples only. An NVML
error on one device (a fallen-off GPU, an unsupported power reading) costs that reading, not
the other devices.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import Settings
from schemas.fields import JSON
from streams.client import FactoryClient

log = logging.getLogger(__name__)


@dataclass
class GpuReader:
    """Samples every GPU NVML sees; `nvml` is the pynvml module (a fake one in tests)."""

    nvml: Any
    handles: list[Any] = field(default_factory=list)
    reported: set[tuple[int, str]] = field(default_factory=set)

    @classmethod
    def open(cls) -> tuple[GpuReader | None, str]:
        """A reader, or None and the reason NVML is unavailable."""
        try:
            import pynvml
        except ImportError as exc:
            return None, f"pynvml is not installed ({exc})"
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except pynvml.NVMLError as exc:
            return None, f"no NVIDIA driver or GPU found ({exc})"
        return cls(pynvml, handles), f"{len(handles)} GPU(s) found through NVML"

    def sample(self, ts: float, interval_s: float, host: str, model: str | None) -> list[JSON]:
        out = []
        for index, handle in enumerate(self.handles):
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except self.nvml.NVMLError as exc:
                self._once(index, f"utilisation unreadable, device skipped: {exc}")
                continue
            event: JSON = {"ts": ts, "host": host, "device": f"gpu{index}", "kind": "gpu",
                           "util": float(util), "interval_s": interval_s}
            if model:
                event["model"] = model
            for name, read in (("device_name", self._name), ("memory", self._memory),
                               ("power_w", self._power)):
                try:
                    read(handle, event)
                except self.nvml.NVMLError as exc:
                    self._once(index, f"{name} unreadable: {exc}")
            out.append(event)
        return out

    def _name(self, handle: Any, event: JSON) -> None:
        name = self.nvml.nvmlDeviceGetName(handle)
        event["device_name"] = name.decode() if isinstance(name, bytes) else name

    def _memory(self, handle: Any, event: JSON) -> None:
        memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
        event["mem_used_bytes"] = int(memory.used)
        event["mem_total_bytes"] = int(memory.total)

    def _power(self, handle: Any, event: JSON) -> None:
        event["power_w"] = self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def _once(self, index: int, message: str) -> None:
        if (index, message) not in self.reported:
            self.reported.add((index, message))
            log.warning("gpu%d: %s", index, message)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            log.debug("nvmlShutdown failed", exc_info=True)


@dataclass
class CpuReader:
    """Host CPU utilisation from /proc/stat deltas and memory from /proc/meminfo."""

    proc: Path = Path("/proc")
    last: tuple[int, int] | None = None

    def _times(self) -> tuple[int, int]:
        fields = [int(x) for x in (self.proc / "stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def sample(self, ts: float, interval_s: float, host: str, model: str | None) -> list[JSON]:
        total, idle = self._times()
        previous, self.last = self.last, (total, idle)
        if previous is None or total == previous[0]:
            return []
        busy = 1 - (idle - previous[1]) / (total - previous[0])
        event: JSON = {"ts": ts, "host": host, "device": "cpu", "kind": "cpu",
                       "util": round(min(max(busy, 0.0), 1.0) * 100, 2),
                       "interval_s": interval_s}
        meminfo = dict(line.split(":", 1) for line in
                       (self.proc / "meminfo").read_text().splitlines() if ":" in line)
        total_kb = int(meminfo["MemTotal"].split()[0])
        free_kb = int(meminfo.get("MemAvailable", meminfo["MemFree"]).split()[0])
        event["mem_total_bytes"] = total_kb * 1024
        event["mem_used_bytes"] = (total_kb - free_kb) * 1024
        if model:
            event["model"] = model
        return [event]


async def collect(settings: Settings, interval_s: float, model: str | None,
                  host: str | None = None, count: int | None = None) -> int:
    """Publish samples every `interval_s` until cancelled (or `count` rounds); return sent."""
    host = host or socket.gethostname()
    gpus, why = GpuReader.open()
    print(f"factory-pulse collect: {why}" + ("" if gpus else "; publishing CPU samples only"),
          flush=True)
    cpu = CpuReader()
    cpu.sample(time.time(), interval_s, host, model)  # primes the /proc/stat delta
    rounds = 0
    async with FactoryClient(settings) as client:
        try:
            while count is None or rounds < count:
                await asyncio.sleep(interval_s)
                ts = time.time()
                samples = cpu.sample(ts, interval_s, host, model)
                if gpus is not None:
                    samples += gpus.sample(ts, interval_s, host, model)
                for event in samples:
                    client.telemetry(event)
                rounds += 1
        finally:
            if gpus is not None:
                gpus.close()
    return client.sent_events
