"""User satisfaction and engagement."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agents.aggregators.base import Sums, ratio
from agents.aggregators.sketch import FloatArray


class Feedback(Sums):
    """Ratings, thumbs and engagement of one model in one window."""

    FIELDS: ClassVar[tuple[str, ...]] = ("events", "ratings", "rating_sum", "ups", "downs",
                                         "engaged")
    events: int
    ratings: int
    rating_sum: int
    ups: int
    downs: int
    engaged: int

    def update(self, rating: FloatArray, thumbs: FloatArray, engaged: np.ndarray) -> None:
        """`rating` and `thumbs` NaN where absent; `engaged` booleans."""
        self.events += int(rating.size)
        rated = rating[~np.isnan(rating)]
        self.ratings += int(rated.size)
        self.rating_sum += int(rated.sum())
        self.ups += int(np.count_nonzero(thumbs == 1))
        self.downs += int(np.count_nonzero(thumbs == -1))
        self.engaged += int(np.count_nonzero(engaged))

    def value(self) -> dict[str, Any] | None:
        if not self.events:
            return None
        return {
            "feedback": self.events,
            "satisfaction": ratio(self.rating_sum, self.ratings),
            "thumbs_up_rate": ratio(self.ups, self.ups + self.downs),
            "engaged": self.engaged,
        }
