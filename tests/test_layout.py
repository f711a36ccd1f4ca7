"""The layout holds: lower rooms never import higher ones, and no module imports itself round a cycle.

Every import counts, eager or inside a function: a lazy import is still a
dependency, and a cycle of them is still a tangle a newcomer must unpick.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

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


def _from_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved against ``package``)."""
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _nodes(path: Path) -> Iterator[tuple[ast.AST, str, str]]:
    """Every node of ``path``, with the absolute module a ``from ... import`` reads from ("" for other nodes)
    and the module's own name."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        yield node, _from_target(node, package) if isinstance(node, ast.ImportFrom) else "", name


def _imports(path: Path) -> set[str]:
    """Every bioimgzoo module ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node, target, _ in _nodes(path):
        if target.startswith("bioimgzoo"):
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bioimgzoo"))
    found.discard(_module_name(path))
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


def _private_imports(path: Path) -> list[str]:
    """Private names ``path`` imports from another bioimgzoo module, names from another package's private
    module, and ``importlib.import_module("bioimgzoo...")`` calls (imports the graph above cannot see)."""
    found = []
    for node, target, name in _nodes(path):
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        if isinstance(node, ast.ImportFrom):
            if not target.startswith("bioimgzoo"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    if not (_is_module(full) and target == package):  # a private module of one's own package
                        found.append(f"{node.lineno}: {full}")
                    continue
                parts = target.split(".")
                for i, part in enumerate(parts[1:], start=1):
                    if part.startswith("_") and not part.startswith("__"):
                        owner = ".".join(parts[:i])
                        if name != owner and not name.startswith(owner + "."):
                            found.append(f"{node.lineno}: {full} (a private module of {owner})")
                        break
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith(("bioimgzoo", ".")):
                found.append(f"{node.lineno}: import_module({arg.value!r})")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_a_module(path):
    found = _private_imports(path)
    assert not found, f"{path.relative_to(PACKAGE.parent)} imports what another module keeps private: {found}"


def test_the_private_import_checker_sees_each_kind(tmp_path):
    pkg = tmp_path / "bioimgzoo"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    for f in (pkg / "__init__.py", pkg / "a" / "__init__.py", pkg / "b" / "__init__.py", pkg / "a" / "_impl.py"):
        f.write_text("")
    (pkg / "a" / "mod.py").write_text("def _helper():\n    pass\n")
    (pkg / "a" / "ok.py").write_text("from . import _impl\nfrom ._impl import thing\n")
    bad = pkg / "b" / "user.py"
    bad.write_text("import importlib\nfrom ..a.mod import _helper\nfrom ..a._impl import thing\n"
                   "importlib.import_module('bioimgzoo.a.mod')\n")
    globals()["PACKAGE"], saved = pkg, PACKAGE
    try:
        assert _private_imports(pkg / "a" / "ok.py") == []
        found = _private_imports(bad)
    finally:
        globals()["PACKAGE"] = saved
    assert len(found) == 3, found


def _environment_reads(source: str) -> list[str]:
    """Where a module reads one environment variable (copying the whole environment for a child is not reading)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os":
                target = "os.getenv"
            elif f.attr in ("get", "pop", "setdefault") and _is_os_environ(f.value) and node.args:
                target = f"os.environ.{f.attr}"
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            target = "os.environ[...]"
        elif isinstance(node, ast.Compare) and any(_is_os_environ(c) for c in node.comparators):
            target = "... in os.environ"
        if target:
            found.append(f"{node.lineno}: {target}")
    return found


def _is_os_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "config.py"),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_environment_variables_are_read_in_config_only(path):
    found = _environment_reads(path.read_text())
    assert not found, (f"{path.relative_to(PACKAGE.parent)} reads the environment outside bioimgzoo/config.py "
                       f"(add a function there and document the variable): {found}")


def test_the_environment_checker_sees_each_kind():
    source = ("import os\nos.getenv('A')\nos.environ.get('B')\nos.environ['C']\n'D' in os.environ\n"
              "env = dict(os.environ)\nos.environ['E'] = '1'\nchild = {k: v for k, v in os.environ.items()}\n")
    assert [f.split(": ")[1] for f in _environment_reads(source)] == [
        "os.getenv", "os.environ.get", "os.environ[...]", "... in os.environ"]
