"""HTTP views on the worker: JSON API, Prometheus exposition and the dashboard.

Only these are served: Faust's built-in views (tables, routing, statistics) are off. Bad query
parameters answer 400 with a message naming the parameter; nothing answers with a traceback.
A request aiohttp cannot parse (a request line or a header over its 8 KiB limit, a malformed
line) gets aiohttp's own 400 and one log line. Every answer carries a Content-Security-Policy
that lets pages load scripts, styles and data from this worker only, run no inline script and
be framed by nobody, and `nosniff`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp.http_exceptions import HttpProcessingError

from agents.shard import ShardRuntime
from core.faust_internals import drop_builtin_views
from schemas.outputs import METRICS, SEEDS
from streams.metrics_view import Query, QueryError, prometheus

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


CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                    "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
# The dashboard: path, file under streams/static, content type.
STATIC = (("/", "index.html", "text/html"),
          ("/static/dashboard.css", "dashboard.css", "text/css"),
          ("/static/charts.js", "charts.js", "text/javascript"),
          ("/static/dashboard.js", "dashboard.js", "text/javascript"))


class QuietBadRequests(logging.Filter):
    """aiohttp logs every request it cannot parse at ERROR with a traceback, though it has
    answered 400 and nothing failed here: keep one WARNING line, without the traceback or the
    request's bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed HTTP request from %s: %s (%s)"
            record.args = (remote, exc.code, type(exc).__name__)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_bad_requests() -> None:
    """Install `QuietBadRequests` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in logger.filters):
        logger.addFilter(QuietBadRequests())


def _text(web: Any, body: str, content_type: str, status: int = 200) -> Any:
    return web.text(body, content_type=content_type, status=status,
                    headers=dict(SECURITY_HEADERS))


def _json(web: Any, value: Any, status: int = 200) -> Any:
    return web.json(value, status=status, headers=dict(SECURITY_HEADERS))


def _static_page(app: Any, path: str, body: str, content_type: str) -> None:
    async def page(web: Any, request: Any) -> Any:
        return _text(web, body, content_type)

    app.page(path, name=f"static:{path}")(page)


def register(pulse: Pulse) -> None:
    app = pulse.app
    drop_builtin_views(app)  # before the first page: ours are the only views
    quiet_bad_requests()

    def ingest() -> dict[str, dict[str, int]]:
        return ingest_totals(pulse.runtimes.values(), set(pulse.inputs.values()))

    @app.page("/api/v1/ingest")
    async def ingest_view(web: Any, request: Any) -> Any:
        """What this worker's partitions accepted and dead-lettered, per input topic."""
        return _json(web, {"topics": ingest()})

    @app.page("/api/v1/metrics")
    async def metrics_json(web: Any, request: Any) -> Any:
        """Snapshots, newest revision of each window; filters model, scope, window, from, to."""
        try:
            query = Query.parse(request.query)
        except QueryError as exc:
            return _json(web, {"error": str(exc)}, status=400)
        return _json(web, {"metrics": pulse.view.query(query)})

    @app.page("/api/v1/alerts")
    async def alerts_json(web: Any, request: Any) -> Any:
        """The alerts firing now (newest first)."""
        firing = sorted(pulse.alerts.firing.values(), key=lambda a: -a["window_end"])
        return _json(web, {"alerts": firing})

    @app.page("/api/v1/alerts/history")
    async def alert_history_json(web: Any, request: Any) -> Any:
        """The last alert transitions, firing and resolved (newest first)."""
        return _json(web, {"alerts": pulse.alerts.transitions[::-1]})

    @app.page("/api/v1/info")
    async def info_json(web: Any, request: Any) -> Any:
        """What the dashboard needs before the first snapshot: the configured window sizes
        (seconds), the models configured as regressors (they have MAE, not F1), the ten
        efficiency metrics' names (`seeds`, numbered from 1) and the metric registry (unit,
        seed metric and meaning of each snapshot metric)."""
        settings = pulse.settings
        return _json(web, {"app": settings.app_id, "window_sizes": list(settings.window_sizes),
                           "regressors": sorted(settings.regressors), "seeds": list(SEEDS),
                           "metrics": {name: {"unit": m.unit, "seed": m.seed, "help": m.help}
                                       for name, m in METRICS.items()}})

    @app.page("/api/v1/retraining")
    async def retraining_json(web: Any, request: Any) -> Any:
        """Recent retraining requests (newest first)."""
        return _json(web, {"requests": pulse.alerts.requests[::-1]})

    @app.page("/metrics")
    async def metrics_text(web: Any, request: Any) -> Any:
        joins = [s.extra for s in pulse.runtimes["predictions"].shards.values()]
        join = {"duplicates": sum(j.duplicates for j in joins),
                "labels_unmatched": sum(j.unmatched_expired for j in joins),
                "labels_waiting": sum(j.waiting for j in joins),
                "predictions_joinable": sum(j.joinable for j in joins),
                "partials_past_retention": pulse.snapshots.ignored_partials,
                "partials_malformed": pulse.snapshots.malformed,
                "window_slots": sum(len(shard.stored) for runtime in pulse.runtimes.values()
                                    for shard in runtime.shards.values()),
                "snapshot_windows": len(pulse.snapshots.entries)}
        return _text(web, prometheus(pulse.view, ingest(), join, pulse.alerts, pulse.loop_lag,
                                     pulse.output_failures),
                     content_type="text/plain; version=0.0.4")

    static = resources.files("streams") / "static"
    for path, name, kind in STATIC:
        _static_page(app, path, (static / name).read_text(), kind)

    @app.page("/healthz")
    async def health_view(web: Any, request: Any) -> Any:
        return _json(web, {"status": "ok", "app": pulse.settings.app_id})
