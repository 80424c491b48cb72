"""Resource use from telemetry: utilisation, memory, idle time, compute cost and energy.

Every sample covers `interval_s` seconds, so means and quantiles are weighted by it. Compute
cost is the device-hours times the configured hourly price of the device's name (else its
kind), plus the energy times the price per kWh when one is configured.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from agents.aggregators.base import ratio
from agents.aggregators.sketch import FloatArray, LinearHistogram

IDLE_UTIL = 0.05
J_PER_KWH = 3.6e6


class Usage:
    """Telemetry of one entity (model, device, host) in one window."""

    __slots__ = ("compute_usd", "energy_j", "idle_s", "mem_n", "mem_sum", "seconds",
                 "util", "util_s")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.util_s = 0.0
        self.idle_s = 0.0
        self.mem_sum = 0.0
        self.mem_n = 0
        self.energy_j = 0.0
        self.compute_usd = 0.0
        self.util = LinearHistogram()

    def update(self, util_pct: FloatArray, interval_s: FloatArray, mem_share: FloatArray,
               power_w: FloatArray, hourly_usd: FloatArray, kwh_usd: float | None,
               util_rows: np.ndarray) -> None:
        """One batch of samples; NaN marks an absent memory share, power or price.

        Cost and energy count every sample; utilisation only the `util_rows` (a model's or a
        host's GPU utilisation must not be diluted by its CPU samples).
        """
        share = util_pct[util_rows] / 100.0
        seconds = interval_s[util_rows]
        self.seconds += float(seconds.sum())
        self.util_s += float((share * seconds).sum())
        self.idle_s += float(seconds[share < IDLE_UTIL].sum())
        self.util.update(share, seconds)
        mem = mem_share[util_rows]
        mem = mem[~np.isnan(mem)]
        self.mem_sum += float(mem.sum())
        self.mem_n += int(mem.size)
        energy = float(np.nansum(power_w * interval_s))
        self.energy_j += energy
        self.compute_usd += float(np.nansum(interval_s / 3600.0 * hourly_usd))
        if kwh_usd is not None:
            self.compute_usd += energy / J_PER_KWH * kwh_usd

    def merge(self, other: Self) -> Self:
        out = type(self)()
        for name in ("seconds", "util_s", "idle_s", "mem_sum", "mem_n", "energy_j",
                     "compute_usd"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.util = self.util.merge(other.util)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"s": self.seconds, "u": self.util_s, "i": self.idle_s, "m": self.mem_sum,
                "mn": self.mem_n, "e": self.energy_j, "c": self.compute_usd,
                "h": self.util.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        out.seconds, out.util_s, out.idle_s = state["s"], state["u"], state["i"]
        out.mem_sum, out.mem_n, out.energy_j = state["m"], state["mn"], state["e"]
        out.compute_usd = state["c"]
        out.util = LinearHistogram.from_state(state["h"])
        return out

    def value(self) -> dict[str, Any] | None:
        if self.seconds <= 0 and not self.energy_j and not self.compute_usd:
            return None
        return {
            "gpu_util_avg": ratio(self.util_s, self.seconds),
            "gpu_util_p95": self.util.quantile(0.95),
            "mem_util_avg": ratio(self.mem_sum, self.mem_n),
            "idle_share": ratio(self.idle_s, self.seconds),
            "energy_j": self.energy_j,
        }
