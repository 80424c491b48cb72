"""GPU telemetry from NVIDIA's DCGM exporter: `factory-pulse collect --dcgm URL`.

Most GPU clusters already run dcgm-exporter (a DaemonSet in NVIDIA's GPU Operator) with a
Prometheus endpoint per node. Each scrape becomes one telemetry sample per GPU, from its
default counters: `DCGM_FI_DEV_GPU_UTIL` (%), `DCGM_FI_DEV_POWER_USAGE` (W),
`DCGM_FI_DEV_FB_USED` / `_FREE` / `_RESERVED` (MiB), labelled `gpu`, `UUID`, `modelName`,
`Hostname` and, with Kubernetes mapping on, `pod`, `namespace` and `container`. A GPU is
attributed to a model when the configured label (`dcgm.model_label`, default `pod`) matches
`dcgm.model_pattern` (default: a KServe predictor pod, `<isvc>-predictor-...`); its `model`
group, else the whole match, names the model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

from core.settings import Dcgm, Settings
from schemas.fields import JSON
from streams.client import FactoryClient

log = logging.getLogger(__name__)

UTIL = "DCGM_FI_DEV_GPU_UTIL"
POWER = "DCGM_FI_DEV_POWER_USAGE"
FB = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_RESERVED")
MIB = 1024 * 1024

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ScrapeError(ValueError):
    """The endpoint did not answer with the Prometheus text format."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> Iterator[Sample]:
    """The samples of a Prometheus text exposition (format 0.0.4); comments skipped."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise ScrapeError(f"line {number} is not a sample: {line[:120]!r}")
        name, raw_labels, raw_value = match.groups()
        labels = {}
        if raw_labels:
            for label in _LABEL.finditer(raw_labels):
                labels[label.group(1)] = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)],
                                                label.group(2))
        try:
            value = float(raw_value)
        except ValueError:
            raise ScrapeError(f"line {number}: value {raw_value!r} is not a number") from None
        yield Sample(name, labels, value)


def telemetry(samples: Iterator[Sample], ts: float, interval_s: float, config: Dcgm,
              ) -> list[JSON]:
    """One telemetry event per GPU (host and `gpu` index) that reports its utilisation."""
    pattern = re.compile(config.model_pattern)
    gpus: dict[tuple[str, str], dict[str, Sample]] = {}
    models: dict[tuple[str, str], str] = {}
    for sample in samples:
        if sample.name not in (UTIL, POWER, *FB) or not math.isfinite(sample.value):
            continue
        key = (sample.labels.get("Hostname", ""), sample.labels.get("gpu", ""))
        gpus.setdefault(key, {}).setdefault(sample.name, sample)
        match = pattern.search(sample.labels.get(config.model_label, ""))
        if match and key not in models:  # a GPU shared by pods: the first that matches
            models[key] = match.groupdict().get("model") or match.group(0)
    out = []
    for (host, gpu), series in sorted(gpus.items()):
        if UTIL not in series or not host or not gpu:
            continue
        util = series[UTIL]
        event: JSON = {"ts": ts, "host": host, "device": f"gpu{gpu}", "kind": "gpu",
                       "util": min(max(util.value, 0.0), 100.0), "interval_s": interval_s}
        if util.labels.get("modelName"):
            event["device_name"] = util.labels["modelName"]
        if POWER in series and series[POWER].value >= 0:
            event["power_w"] = series[POWER].value
        if FB[0] in series and FB[1] in series:
            used = series[FB[0]].value
            total = used + series[FB[1]].value + (series[FB[2]].value if FB[2] in series
                                                  else 0.0)
            if used >= 0 and total > 0:
                event["mem_used_bytes"] = int(used * MIB)
                event["mem_total_bytes"] = int(total * MIB)
        if (host, gpu) in models:
            event["model"] = models[(host, gpu)]
        out.append(event)
    return out


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        if resp.status != 200:
            raise ScrapeError(f"{url} answered HTTP {resp.status}")
        return await resp.text()


async def collect(settings: Settings, url: str, interval_s: float,
                  count: int | None = None) -> int:
    """Scrape `url` every `interval_s` and publish its GPUs' samples, until cancelled (or
    `count` rounds); return the samples sent. A failed scrape costs that round only."""
    print(f"factory-pulse collect: reading GPUs from dcgm-exporter at {url}", flush=True)
    rounds = 0
    failing: str | None = None
    async with FactoryClient(settings) as client, aiohttp.ClientSession() as session:
        while count is None or rounds < count:
            await asyncio.sleep(interval_s)
            rounds += 1
            try:
                text = await scrape(session, url)
                events = telemetry(parse(text), time.time(), interval_s, settings.dcgm)
            except (aiohttp.ClientError, TimeoutError, ScrapeError) as exc:
                if str(exc) != failing:  # said once, not every round
                    log.warning("scrape of %s failed: %s", url, exc)
                failing = str(exc)
                continue
            failing = None
            for event in events:
                client.telemetry(event)
    return client.sent_events
