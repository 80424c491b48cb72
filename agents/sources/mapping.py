"""What every source adapter shares: the refusal that becomes a dead letter."""

from __future__ import annotations


class NotMapped(ValueError):
    """A payload that does not map to the service's events; dead-lettered with this reason,
    naming the field (header, attribute or JSON path) that failed."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
