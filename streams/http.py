"""HTTP views on the worker (JSON API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.app import Pulse


def ingest_totals(rows: Any, inputs: set[str]) -> dict[str, dict[str, int]]:
    """Per-input-topic totals from the rows `{"<partition>|ingest|<topic>": counts}`."""
    totals: dict[str, dict[str, int]] = {}
    for key, counts in rows:
        kind, _, topic = key.partition("|")[2].partition("|")
        if kind != "ingest" or topic not in inputs:
            continue
        into = totals.setdefault(topic, {"messages": 0, "accepted": 0, "rejected": 0})
        for name in into:
            into[name] += counts[name]
    return totals


def register(pulse: Pulse) -> None:
    app = pulse.app

    @app.page("/api/v1/ingest")
    async def ingest_view(web: Any, request: Any) -> Any:
        """What this worker's partitions accepted and dead-lettered, per input topic."""
        inputs = set(pulse.inputs.values())
        totals: dict[str, dict[str, int]] = {}
        for runtime in pulse.runtimes.values():
            totals.update(ingest_totals(runtime.table.items(), inputs))
        return web.json({"topics": totals})

    @app.page("/healthz")
    async def health_view(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": pulse.settings.app_id})
