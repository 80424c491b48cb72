"""Entity keys: the model, device, host or pipeline stage a window belongs to.

A key is `<scope>:<name>` or `<scope>:<name>/<name>`, each name escaped (`%`, `/` and `|` as
`%25`, `%2F` and `%7C`). Any two different names give different keys ("rack1/node2" + "gpu0"
and "rack1" + "node2/gpu0" stay apart), and keys built from them (`w|<entity>|<size>|<start>`
in the tables, `<entity>|<size>|<start>` on the metrics topic) split on `|` unambiguously.
Names of the usual kind (no `%`, `/` or `|`) appear unchanged.
"""

from __future__ import annotations

from typing import Any

SCOPES = {"m": "model", "d": "device", "h": "host", "p": "pipeline"}
# The `[limits]` setting that caps how many entities of each scope a partition may hold.
LIMITS = {"m": "models", "d": "devices", "h": "hosts", "p": "pipelines"}
# The names each scope's key is made of, as they appear in snapshots.
FIELDS = {"m": ("model",), "d": ("host", "device"), "h": ("host",), "p": ("pipeline", "stage")}


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F").replace("|", "%7C")


def _unescape(part: str) -> str:
    return part.replace("%7C", "|").replace("%2F", "/").replace("%25", "%")


def key(scope: str, *names: str) -> str:
    """The entity key of `names` in `scope` (one of SCOPES)."""
    return f"{scope}:{'/'.join(map(_escape, names))}"


def model(name: str) -> str:
    return key("m", name)


def names(entity: str) -> dict[str, Any]:
    """The snapshot fields that name an entity: {"model": ...}, {"host": ..., "device": ...}."""
    scope, _, rest = entity.partition(":")
    return dict(zip(FIELDS[scope], map(_unescape, rest.split("/")), strict=True))


def display(entity: str) -> str:
    """The entity's names joined by '/', as alert rules match them and alerts show them."""
    return "/".join(names(entity).values())
