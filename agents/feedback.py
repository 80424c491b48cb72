"""Feedback: satisfaction and engagement per model."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from agents.aggregators.window import WindowState
from agents.shard import Rows, SimpleLogic
from schemas import entities
from schemas.fields import JSON


class FeedbackLogic(SimpleLogic):
    family = "feedback"
    topic = "feedback"

    def entities(self, event: JSON) -> Iterable[str]:
        return (entities.model(event["model"]),)

    def update(self, entity: str, state: WindowState, rows: Rows,
               picked: npt.NDArray[np.int64]) -> None:
        engaged = np.array([rows.events[i].get("engaged") is True for i in picked.tolist()])
        state.family("feedback").update(rows.column("rating")[picked],
                                        rows.column("thumbs")[picked], engaged)
