"""The layout holds: lower rooms never import higher ones, and no module imports itself round a cycle.

Every import counts, eager or inside a function: a lazy import is still a
dependency, and a cycle of them is still a tangle a newcomer must unpick.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bioimgzoo"

#: rooms from the bottom up; a module may import its own room and the rooms below it
LAYERS: list[set[str]] = [
    {"errors", "_version"},
    {"config", "_files", "_text"},
    {"_yaml", "trust"},
    {"descr"},
    {"package"},
    {"io"},
    {"hub"},
    {"runtime"},
    {"validation"},
    {"exporter"},
    {"train"},
    {"__init__"},  # the root API: load, open_package, export
    {"serve"},  # the model server: on the root API, the runtime, hub, io and package
    {"testing"},  # helpers for tests and benchmarks, on top of the public API
    {"cli"},
]
RANK = {room: i for i, layer in enumerate(LAYERS) for room in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every bioimgzoo module ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("bioimgzoo"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bioimgzoo"))
    found.discard(name)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_room_is_placed():
    assert {_room(m) for m in GRAPH} <= set(RANK), "a new room must be given its layer in LAYERS"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_of_a_higher_room(module):
    own = RANK[_room(module)]
    upward = sorted(t for t in GRAPH[module] if RANK[_room(t)] > own)
    assert not upward, f"{module} ({_room(module)}) imports higher rooms: {upward}"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_lazy_imports():
    # the zoo client is imported lazily in places; the graph must still see such edges
    assert "bioimgzoo.hub" in GRAPH["bioimgzoo"]
    assert any(t.startswith("bioimgzoo.runtime") for t in GRAPH["bioimgzoo"])
