"""The packages form layers that only import downward: schemas <- core <- agents <- streams.

`schemas` holds the records, `core` the runtime's base (settings, topics, Kafka clients, sinks,
the Faust adapter), `agents` the metric logic and the shard runtime that runs it, `streams` the
app, HTTP, CLI and client tools. An upward import brings back the cycle that made any module hard
to read on its own, so this test reads every import, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first; a module may import its own layer and those before it.
LAYERS = ("schemas", "agents.aggregators", "core", "agents", "streams")


def layer(module: str) -> int | None:
    """The rank of the most specific layer that `module` belongs to, None if outside them all."""
    found = None
    for rank, name in enumerate(LAYERS):
        inside = module == name or module.startswith(name + ".")
        if inside and (found is None or len(name) > len(LAYERS[found])):
            found = rank
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


SOURCES = sorted(p for top in ("schemas", "core", "agents", "streams")
                 for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = layer(module)
    assert own is not None
    upward = [f"line {line}: {name} ({LAYERS[rank]})" for line, name in imports(path)
              if (rank := layer(name)) is not None and rank > own]
    assert not upward, f"{module} ({LAYERS[own]}) imports upward: {upward}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions, where the old cycle hid."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from streams.app import create_app\n")
    assert imports(source) == [(2, "streams.app.create_app")]
    assert layer("streams.app.create_app") > layer("core.settings")  # type: ignore[operator]
