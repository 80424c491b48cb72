"""HTTP views on the worker (JSON API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.app import Pulse


def ingest_totals(rows: Any) -> dict[str, dict[str, int]]:
    """Per-topic totals from the ingest progress rows `{"topic:partition": counts}`."""
    totals: dict[str, dict[str, int]] = {}
    for key, counts in rows:
        topic = key.rpartition(":")[0]
        into = totals.setdefault(topic, {"messages": 0, "accepted": 0, "rejected": 0})
        for name in into:
            into[name] += counts[name]
    return totals


def register(pulse: Pulse) -> None:
    app = pulse.app

    @app.page("/api/v1/ingest")
    async def ingest_view(web: Any, request: Any) -> Any:
        """What this worker's partitions accepted and dead-lettered, per input topic."""
        return web.json({"topics": ingest_totals(pulse.ingest.items())})

    @app.page("/healthz")
    async def health_view(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": pulse.settings.app_id})
