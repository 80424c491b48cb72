"""Pipeline batches: data processing speed per pipeline and stage."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from agents.aggregators.window import WindowState
from agents.shard import Rows, SimpleLogic
from schemas import entities
from schemas.fields import JSON


class PipelineLogic(SimpleLogic):
    family = "pipeline"
    topic = "pipeline"

    def entities(self, event: JSON) -> Iterable[str]:
        return (entities.key("p", event["pipeline"], event["stage"]),)

    def update(self, entity: str, state: WindowState, rows: Rows,
               picked: npt.NDArray[np.int64]) -> None:
        failed = np.array([rows.events[i].get("status") == "error" for i in picked.tolist()])
        state.family("throughput").update(rows.column("records")[picked],
                                          rows.column("bytes")[picked],
                                          rows.column("duration_s")[picked], failed)
