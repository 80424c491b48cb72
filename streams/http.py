"""HTTP views on the worker: JSON API and Prometheus exposition.

Bad query parameters answer 400 with a message naming the parameter; nothing answers with a
traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

from streams.metrics_view import Query, QueryError, prometheus
from streams.shard import ShardRuntime

if TYPE_CHECKING:
    from streams.app import Pulse


def ingest_totals(runtimes: Iterable[ShardRuntime], inputs: set[str],
                  ) -> dict[str, dict[str, int]]:
    """Per-input-topic totals of the shards this worker holds, as of their last flush."""
    totals: dict[str, dict[str, int]] = {}
    for runtime in runtimes:
        for shard in list(runtime.shards.values()):
            for topic, progress in shard.ingest_durable.items():
                if topic not in inputs:
                    continue
                into = totals.setdefault(topic, {"messages": 0, "accepted": 0, "rejected": 0})
                into["messages"] += progress.messages
                into["accepted"] += progress.accepted
                into["rejected"] += progress.rejected
    return totals


def _static_page(app: Any, path: str, body: str, content_type: str) -> None:
    async def page(web: Any, request: Any) -> Any:
        return web.text(body, content_type=content_type)

    app.page(path, name=f"static:{path}")(page)


def register(pulse: Pulse) -> None:
    app = pulse.app

    def ingest() -> dict[str, dict[str, int]]:
        return ingest_totals(pulse.runtimes.values(), set(pulse.inputs.values()))

    @app.page("/api/v1/ingest")
    async def ingest_view(web: Any, request: Any) -> Any:
        """What this worker's partitions accepted and dead-lettered, per input topic."""
        return web.json({"topics": ingest()})

    @app.page("/api/v1/metrics")
    async def metrics_json(web: Any, request: Any) -> Any:
        """Snapshots, newest revision of each window; filters model, scope, window, from, to."""
        try:
            query = Query.parse(request.query)
        except QueryError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json({"metrics": pulse.view.query(query)})

    @app.page("/api/v1/alerts")
    async def alerts_json(web: Any, request: Any) -> Any:
        """The alerts firing now (newest first)."""
        firing = sorted(pulse.alerts.firing.values(), key=lambda a: -a["window_end"])
        return web.json({"alerts": firing})

    @app.page("/api/v1/retraining")
    async def retraining_json(web: Any, request: Any) -> Any:
        """Recent retraining requests (newest first)."""
        return web.json({"requests": pulse.alerts.requests[::-1]})

    @app.page("/metrics")
    async def metrics_text(web: Any, request: Any) -> Any:
        joins = [s.extra for s in pulse.runtimes["predictions"].shards.values()]
        join = {"duplicates": sum(j.duplicates for j in joins),
                "labels_unmatched": sum(j.unmatched_expired for j in joins),
                "labels_waiting": sum(len(j.orphans) for j in joins),
                "predictions_joinable": sum(len(j.index) for j in joins),
                "partials_past_retention": pulse.snapshots.ignored_partials,
                "window_slots": sum(len(shard.stored) for runtime in pulse.runtimes.values()
                                    for shard in runtime.shards.values()),
                "snapshot_windows": len(pulse.snapshots.entries)}
        return web.text(prometheus(pulse.view, ingest(), join, pulse.alerts, pulse.loop_lag,
                                   pulse.output_failures),
                        content_type="text/plain; version=0.0.4")

    static = resources.files("streams") / "static"
    for name, kind in (("index.html", "text/html"), ("charts.js", "text/javascript"),
                       ("dashboard.js", "text/javascript")):
        _static_page(app, "/" if name == "index.html" else f"/static/{name}",
                     (static / name).read_text(), kind)

    @app.page("/healthz")
    async def health_view(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": pulse.settings.app_id})
