"""Data processing speed of one pipeline stage."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agents.aggregators.base import Sums, ratio
from agents.aggregators.sketch import FloatArray


class Throughput(Sums):
    """Records and bytes over busy seconds: sum(records) / sum(duration_s)."""

    FIELDS: ClassVar[tuple[str, ...]] = ("batches", "errors", "records", "bytes", "seconds")
    batches: int
    errors: int
    records: int
    bytes: int
    seconds: float

    def update(self, records: FloatArray, nbytes: FloatArray, duration_s: FloatArray,
               failed: np.ndarray) -> None:
        self.batches += int(records.size)
        self.errors += int(np.count_nonzero(failed))
        self.records += int(records.sum())
        self.bytes += int(np.nansum(nbytes))
        self.seconds += float(duration_s.sum())

    def value(self) -> dict[str, Any] | None:
        if not self.batches:
            return None
        return {
            "batches": self.batches,
            "records": self.records,
            "records_per_s": ratio(self.records, self.seconds),
            "bytes_per_s": ratio(self.bytes, self.seconds),
            "pipeline_error_rate": self.errors / self.batches,
        }
