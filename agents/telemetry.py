"""Telemetry: utilisation per device, host and model; compute cost and energy per model.

A sample counts towards its device, its host and the model it serves (`_unattributed` when it
names none), energy and compute cost included. Hosts and models average GPU samples only; a
device averages its own samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from agents.aggregators.window import WindowState
from agents.shard import Rows, SimpleLogic
from schemas import entities
from schemas.fields import JSON

UNATTRIBUTED = "_unattributed"


class TelemetryLogic(SimpleLogic):
    family = "telemetry"
    topic = "telemetry"

    def entities(self, event: JSON) -> Iterable[str]:
        return (entities.model(event.get("model") or UNATTRIBUTED),
                entities.key("d", event["host"], event["device"]), entities.key("h", event["host"]))

    def _hourly(self, event: JSON) -> float:
        prices = self.settings.prices.per_hour
        price = prices.get(event.get("device_name") or "", prices.get(event["kind"]))
        return math.nan if price is None else price

    def update(self, entity: str, state: WindowState, rows: Rows,
               picked: npt.NDArray[np.int64]) -> None:
        events = [rows.events[i] for i in picked.tolist()]
        mem = np.array([e["mem_used_bytes"] / e["mem_total_bytes"]
                        if e.get("mem_used_bytes") is not None and e.get("mem_total_bytes")
                        else math.nan for e in events])
        util_rows = (np.ones(len(events), dtype=bool) if entity.startswith("d:")
                     else np.array([e["kind"] == "gpu" for e in events]))
        # Every sample's energy and cost count for its device, its host and its model: each
        # scope sums them over its own samples (the factory rollup merges models only, so
        # nothing is counted twice there).
        hourly = np.array([self._hourly(e) for e in events])
        state.family("usage").update(
            rows.column("util")[picked], rows.column("interval_s")[picked], mem,
            rows.column("power_w")[picked], hourly, self.settings.prices.per_kwh, util_rows)
