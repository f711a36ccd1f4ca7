"""An architecture file written from a class's own source, without running the program that defines it.

A module trained in a script, a notebook cell or inside a function has a class
that no other process can import: importing the script would run the training
(and the export) again.  :func:`extract_architecture` instead reads the source
of the file that defines the class (the file, or the notebook's cell through
:mod:`linecache`), finds the class with :mod:`ast`, and collects what the class
needs to be rebuilt: the module-level imports, helper functions and classes
and constants it names (with :mod:`symtable`, which knows Python's scoping
rules), transitively, plus, for a class defined inside a function, the
statements of the enclosing function it names.  Nothing else of the program
is kept: no training loop, no data loading, no export call.  What is kept
must only define things: a class body or a statement it needs that has side
effects when imported (a bare call, a file read, an absolute path, a process
or network call) is refused with the reason, never shipped.

:func:`rebuild_outputs` then loads the written file *alone* in a fresh Python
process (no access to the original script), builds the module, loads the
state dict and runs it (the exporter compares with the live module).
:class:`SourceUnavailable` says why a file cannot be written (a dynamically
created class, a class using its enclosing function's arguments, a relative
import, ...); the exporter then ships TorchScript and ONNX only and says why.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import os
import subprocess
import symtable
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["ExtractedSource", "SourceUnavailable", "extract_architecture", "extract_from_file", "rebuild_outputs",
           "defining_file"]

#: statement kinds that may define a name the class needs (a ``for`` loop or a bare call may not: those are
#: the program's work, not its definitions)
_DEFINERS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
             ast.AnnAssign, ast.If, ast.Try)
_BUILTINS = set(dir(builtins)) | {"__name__", "__file__", "__doc__", "__builtins__", "__spec__", "__class__"}


class SourceUnavailable(Exception):
    """No self-contained architecture file can be written; the message says why."""


@dataclass(frozen=True)
class ExtractedSource:
    """A generated architecture file's text and where it came from."""

    text: str
    callable: str
    origin: str
    #: the names pulled in besides the callable (imports, helpers, constants)
    names: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- finding the source


def defining_file(obj: Any) -> str | None:
    """The file name (or linecache key, for a notebook cell) holding the source of class or function ``obj``.

    Read from the code objects of the class's methods, so it works where ``inspect.getsourcefile`` does not
    (``__main__`` of a notebook has no ``__file__``); never imports anything.
    """
    if inspect.isfunction(obj):
        return obj.__code__.co_filename
    for value in vars(obj).values():
        func = getattr(value, "__func__", value)
        code = getattr(func, "__code__", None)
        if code is not None and getattr(func, "__qualname__", "").startswith(obj.__qualname__ + "."):
            return code.co_filename
    try:
        return inspect.getsourcefile(obj)
    except (TypeError, OSError):
        return None


def _first_line(obj: Any) -> int | None:
    if inspect.isfunction(obj):
        return obj.__code__.co_firstlineno
    lines = []
    for value in vars(obj).values():
        func = getattr(value, "__func__", value)
        code = getattr(func, "__code__", None)
        if code is not None and getattr(func, "__qualname__", "").startswith(obj.__qualname__ + "."):
            lines.append(code.co_firstlineno)
    return min(lines) if lines else None


def _read_source(filename: str) -> str:
    lines = linecache.getlines(filename)
    if not lines and os.path.isfile(filename):
        lines = Path(filename).read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        raise SourceUnavailable(f"the source of {filename} cannot be read")
    return "".join(lines)


def extract_architecture(obj: Any) -> ExtractedSource:
    """A self-contained architecture file for class (or function) ``obj``, from its defining file's source."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise SourceUnavailable(f"{obj!r} is neither a class nor a function")
    filename = defining_file(obj)
    if not filename:
        raise SourceUnavailable(f"{obj.__qualname__} has no source file (created dynamically?)")
    path = [p for p in obj.__qualname__.split(".") if p != "<locals>"]
    cells = _notebook_cells(obj, filename)
    if cells is not None:  # a notebook: the imports and helpers live in other cells
        return _extract(cells, "<notebook>", path, None, origin="the notebook's cells")
    source = _read_source(filename)
    return _extract(source, filename, path, _first_line(obj), origin=_origin_name(filename))


def _notebook_cells(obj: Any, filename: str) -> str | None:
    """In IPython/Jupyter, the executed cells (``In``) that parse, in execution order; else None.

    Each cell is its own pseudo-file there, so the class's cell alone misses the imports of earlier cells.
    The last definition of the class's name in the history is the one that ran last.
    """
    if getattr(obj, "__module__", None) != "__main__" or os.path.isfile(filename):
        return None
    history = getattr(sys.modules.get("__main__"), "In", None)
    if not isinstance(history, list) or not history:
        return None
    cells = []
    for cell in history:
        try:
            ast.parse(cell)
        except (SyntaxError, ValueError, TypeError):
            continue
        cells.append(cell if cell.endswith("\n") else cell + "\n")
    return "".join(cells) or None


def extract_from_file(path: str | os.PathLike, name: str) -> ExtractedSource:
    """The same for the top-level class or function ``name`` of a Python file, read without running it."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceUnavailable(f"{path} cannot be read ({type(e).__name__}: {e})") from e
    return _extract(source, str(path), [name], None, origin=path.name)


def _origin_name(filename: str) -> str:
    return Path(filename).name if os.path.isfile(filename) else filename


# ---------------------------------------------------------------------------------------------- analysis


def _start(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decorators])


def _find_def(tree: ast.Module, path: Sequence[str], line: int | None) -> tuple[ast.AST, list[ast.AST]]:
    """The definition named by ``path`` (qualname parts without ``<locals>``) and its enclosing definitions."""
    candidates: list[tuple[ast.AST, list[ast.AST]]] = []

    def walk(body: list, chain: list, depth: int) -> None:
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name == path[depth]:
                    if depth == len(path) - 1:
                        candidates.append((node, chain))
                    else:
                        walk(node.body, chain + [node], depth + 1)
            # definitions under if/try/with at the same level (e.g. `if torch_available: class ...`)
            for attr in ("body", "orelse", "finalbody", "handlers"):
                if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    sub = getattr(node, attr, None)
                    if isinstance(sub, list):
                        walk([s for s in sub if isinstance(s, ast.AST)], chain, depth)

    walk(tree.body, [], 0)
    if line is not None:
        inside = [c for c in candidates if _start(c[0]) <= line <= c[0].end_lineno]
        candidates = inside or candidates
    if not candidates:
        raise SourceUnavailable(f"{'.'.join(path)} is not defined in the source (the file changed since it ran?)")
    return candidates[-1]


def _table_for(root: symtable.SymbolTable, node: ast.AST, chain: Sequence[ast.AST]) -> symtable.SymbolTable:
    """The symbol table of ``node`` (reached through the tables of ``chain``)."""
    table = root
    for step in list(chain) + [node]:
        options = [t for t in table.get_children() if t.get_name() == step.name]
        if not options:
            raise SourceUnavailable(f"no symbol table for {step.name}")
        table = min(options, key=lambda t: abs(t.get_lineno() - step.lineno))
    return table


def _outer_refs(table: symtable.SymbolTable) -> tuple[set[str], set[str]]:
    """Names the table (and every table inside it) reads from outside it: (globals, free variables).

    A free variable of a nested table (a comprehension, a closure in a method) bound by a function table
    inside ``table`` is not outside.
    """
    globals_, free = set(), set()
    stack = [(table, frozenset())]
    while stack:
        t, bound_above = stack.pop()
        for sym in t.get_symbols():
            if not sym.is_referenced():
                continue
            name = sym.get_name()
            if sym.is_free():
                if name not in bound_above:
                    free.add(name)
            elif sym.is_global() or (t.get_type() == "class" and not sym.is_assigned() and not sym.is_imported()
                                     and not sym.is_parameter()):
                globals_.add(name)
        bound = bound_above
        if t.get_type() == "function":
            bound = bound_above | {sym.get_name() for sym in t.get_symbols()
                                   if sym.is_local() or sym.is_parameter()}
        stack.extend((child, bound) for child in t.get_children())
    return globals_, free


def _header_names(node: ast.AST) -> set[str]:
    """Names a def's header reads in the enclosing scope: decorators, bases, keywords, defaults, annotations."""
    parts: list[ast.AST] = list(getattr(node, "decorator_list", []))
    if isinstance(node, ast.ClassDef):
        parts += node.bases + [k.value for k in node.keywords]
    else:
        args = node.args
        parts += [d for d in args.defaults + args.kw_defaults if d is not None]
        parts += [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
                  if a is not None and a.annotation is not None]
        if node.returns is not None:
            parts.append(node.returns)
    return {n.id for p in parts for n in ast.walk(p) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _bound_names(stmt: ast.AST) -> set[str]:
    """Names a statement binds in its own scope (not inside nested functions or classes)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    names: set[str] = set()
    stack = [stmt]
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
            continue
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in n.names}
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        stack.extend(ast.iter_child_nodes(n))
    return names


class _Scope:
    """The definitions of one scope (the module, or an enclosing function) that the class may need."""

    def __init__(self, body: list, table: symtable.SymbolTable, node: ast.AST | None):
        self.body, self.table, self.node = body, table, node
        self.definers: dict[str, list[ast.AST]] = {}
        for stmt in body:
            if isinstance(stmt, _DEFINERS):
                for name in _bound_names(stmt):
                    self.definers.setdefault(name, []).append(stmt)
        self.params: set[str] = set()
        if node is not None:
            a = node.args
            self.params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x}


class _Collector:
    """Walks from the target definition to every statement it needs, scope by scope."""

    def __init__(self, source: str, filename: str, target: ast.AST, chain: list[ast.AST]):
        self.lines = source.splitlines(keepends=True)
        self.filename = filename
        try:
            self._root_table = symtable.symtable(source, filename, "exec")
        except SyntaxError as e:  # pragma: no cover - the source ran
            raise SourceUnavailable(f"{filename} does not parse: {e}") from e
        self.target = target
        self.chain = chain
        self.names: list[str] = []

    def run(self, tree: ast.Module) -> None:
        self.scopes = [_Scope(tree.body, self._root_table, None)]
        for i, fn in enumerate(self.chain):
            if isinstance(fn, ast.ClassDef):
                raise SourceUnavailable(f"{self.target.name} is nested in class {fn.name}: define it at module "
                                        "level")
            t = _table_for(self._root_table, fn, self.chain[:i])
            self.scopes.append(_Scope(fn.body, t, fn))
        self.selected: list[set[int]] = [set() for _ in self.scopes]
        self.import_aliases: dict[int, set[str]] = {}
        target_table = _table_for(self._root_table, self.target, self.chain)
        self._need_def(self.target, target_table, len(self.scopes) - 1)
        self.selected[-1].add(id(self.target))

    def _need_def(self, node: ast.AST, table: symtable.SymbolTable, level: int) -> None:
        """Collect what a def at scope ``level`` needs: its header's names and its body's outer names."""
        globals_, free = _outer_refs(table)
        for name in _header_names(node):
            self._resolve(name, level, strict=True)
        for name in free:
            self._resolve(name, level, strict=True)
        for name in globals_:
            self._resolve(name, 0, strict=True)

    def _resolve(self, name: str, level: int, *, strict: bool) -> None:
        if name == self.target.name and level == len(self.scopes) - 1:
            return
        for lvl in range(level, -1, -1):
            scope = self.scopes[lvl]
            if name in scope.params:
                raise SourceUnavailable(f"{self.target.name} uses {name!r}, an argument of the enclosing function "
                                        f"{scope.node.name}(): its value exists only while the program runs; "
                                        "define the class at module level and pass it as a constructor argument")
            if name in scope.definers:
                for stmt in scope.definers[name]:
                    self._select(stmt, name, lvl)
                return
        if name in _BUILTINS or not strict:
            return
        raise SourceUnavailable(f"{self.target.name} needs {name!r}, which is not defined in {self.origin()} "
                                "(set at run time, e.g. by exec or a star import?)")

    def origin(self) -> str:
        return _origin_name(self.filename)

    def _select(self, stmt: ast.AST, name: str, level: int) -> None:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if isinstance(stmt, ast.ImportFrom) and (stmt.level or stmt.module == "__main__"):
                raise SourceUnavailable(f"{self.target.name} needs {name!r}, imported by a relative import or from "
                                        f"__main__ (line {stmt.lineno}), which does not exist outside the program")
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                raise SourceUnavailable(f"{name!r} may come from the star import on line {stmt.lineno}: import it "
                                        "by name")
            self.import_aliases.setdefault(id(stmt), set()).add(name)
            if name not in self.names:
                self.names.append(name)
            self.selected[level].add(id(stmt))
            return
        if id(stmt) in self.selected[level]:
            return
        self.selected[level].add(id(stmt))
        if name not in self.names:
            self.names.append(name)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            chain = [s.node for s in self.scopes[1:level + 1]]
            self._need_def(stmt, _table_for(self._root_table, stmt, chain), level)
            return
        # an assignment or an if/try block: every name it reads (its nested defs' bodies included)
        bound = _bound_names(stmt)
        for n in ast.walk(stmt):  # lenient: a name read inside a nested def may be that def's own local
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound:
                self._resolve(n.id, level, strict=False)

    # ------------------------------------------------------------------ writing
    def _text(self, stmt: ast.AST) -> str:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            wanted = self.import_aliases.get(id(stmt), set())
            keep = [a for a in stmt.names if (a.asname or a.name).split(".")[0] in wanted]
            reduced = (ast.Import(names=keep) if isinstance(stmt, ast.Import)
                       else ast.ImportFrom(module=stmt.module, names=keep, level=stmt.level))
            return ast.unparse(reduced) + "\n"
        return textwrap.dedent("".join(self.lines[_start(stmt) - 1:stmt.end_lineno]))

    def write(self, tree: ast.Module) -> str:
        parts: list[str] = []
        futures = [s for s in tree.body if isinstance(s, ast.ImportFrom) and s.module == "__future__"]
        for s in futures:
            parts.append(ast.unparse(s) + "\n")
        for level, scope in enumerate(self.scopes):
            chosen = [s for s in scope.body if id(s) in self.selected[level] and s not in futures]
            if not chosen:
                continue
            parts.append("\n")
            for stmt in chosen:
                text = self._text(stmt)
                is_def = isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                if is_def:
                    parts.append("\n")
                parts.append(text if text.endswith("\n") else text + "\n")
        return "".join(parts)


def _extract(source: str, filename: str, path: Sequence[str], line: int | None, *, origin: str) -> ExtractedSource:
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as e:
        raise SourceUnavailable(f"{origin} does not parse: {e}") from e
    node, chain = _find_def(tree, path, line)
    collector = _Collector(source, filename, node, list(chain))
    collector.run(tree)
    where = f"{'.'.join(path)} in {origin}"
    header = (f'"""Architecture of {path[-1]}, written by bioimgzoo from the source of {where}.\n\n'
              "Only the definition and the imports, helpers and constants it uses are kept; the rest of the\n"
              'program (training, data loading, export) is not.  Rebuild: `' + path[-1] + '(**kwargs)`.\n"""\n')
    body = collector.write(tree)
    text = header + body
    try:
        compile(text, f"<architecture of {path[-1]}>", "exec")
    except SyntaxError as e:  # pragma: no cover - statements copied whole
        raise SourceUnavailable(f"the extracted source does not compile: {e}") from e
    _refuse_side_effects(text, where)
    return ExtractedSource(text=text, callable=path[-1], origin=where, names=tuple(collector.names))


def _refuse_side_effects(text: str, where: str) -> None:
    """Refuse, naming the statements, a file that would do more than define the network.

    What runs when the file is imported (the class body, module-level
    statements the class needs, decorators, default arguments, the helpers
    they call) must only define things: no bare statements, no file reads or
    writes, no absolute paths; and no part of it may reach processes, the
    network, native code or code built from strings
    (:func:`bioimgzoo.validation.safety.scan_python`), which the package's
    own safety check would fail.
    """
    from ..validation.safety import import_time_effects, scan_python

    found = {(f["line"], f["what"]): f["why"] for f in import_time_effects(text) + scan_python(text)}
    if not found:
        return
    lines = text.splitlines()
    shown = []
    for (line, what), why in sorted(found.items())[:3]:
        code = lines[line - 1].strip() if 0 < line <= len(lines) else what
        shown.append(f"`{code[:90]}` ({what}: {why})")
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    raise SourceUnavailable(f"{where} needs code that does more than define the network, which bioimgzoo does not "
                            f"copy into architecture.py (every user of the package would run it): "
                            f"{'; '.join(shown)}{more}. Move it out of the class body and the module level (into the "
                            "program that trains), or pass architecture='package.module:Callable'")


# ---------------------------------------------------------------------------------------------- the check

_REBUILD = r"""
import importlib.util, json, sys
import numpy as np, torch
torch.set_num_threads(1)
path, name, kwargs_json, weights, cases, out = sys.argv[1:7]
spec = importlib.util.spec_from_file_location("architecture_check", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
net = getattr(mod, name)(**json.loads(kwargs_json))
net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
net.eval()
data = np.load(cases)
n_cases, n_inputs = int(data["n_cases"]), int(data["n_inputs"])
results = {}
with torch.no_grad():
    for c in range(n_cases):
        res = net(*[torch.from_numpy(data[f"case_{c}_{j}"]) for j in range(n_inputs)])
        res = [res] if isinstance(res, torch.Tensor) else list(res)
        for j, r in enumerate(res):
            results[f"case_{c}_{j}"] = r.detach().cpu().numpy()
np.savez(out, **results)
"""


def rebuild_outputs(text: str, callable_name: str, kwargs: dict, state_dict: Any,
                    cases: Sequence[Sequence[np.ndarray]], *, timeout: float = 300.0) -> list[list[np.ndarray]]:
    """Rebuild the module from ``text`` alone in a fresh Python process and run it on every case.

    The process starts in an empty folder, so nothing but the written file (and installed packages) is
    importable.  Returns the outputs per case; raises :class:`SourceUnavailable` with the reason.
    """
    import json

    import torch

    with tempfile.TemporaryDirectory(prefix="bioimgzoo-rebuild-") as tmp:
        tmp_path = Path(tmp)
        arch = tmp_path / "architecture.py"
        arch.write_text(text, encoding="utf-8")
        weights = tmp_path / "weights.pt"
        torch.save(state_dict, weights)
        cases_file = tmp_path / "cases.npz"
        np.savez(cases_file, n_cases=len(cases), n_inputs=len(cases[0]),
                 **{f"case_{c}_{j}": np.ascontiguousarray(a) for c, case in enumerate(cases) for j, a in enumerate(case)})
        out = tmp_path / "out.npz"
        # the user's own PYTHONPATH may be how torch is found; the folder the program runs in may not be on it
        env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
        here = {os.path.abspath(os.getcwd()), ""}
        kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) not in here]
        env["PYTHONPATH"] = os.pathsep.join(kept)
        env.setdefault("OMP_NUM_THREADS", "1")
        run_dir = tmp_path / "empty"
        run_dir.mkdir()
        try:
            proc = subprocess.run([sys.executable, "-P", "-c", _REBUILD, str(arch), callable_name,
                                   json.dumps(kwargs), str(weights), str(cases_file), str(out)],
                                  cwd=run_dir, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SourceUnavailable(f"rebuilding the module from the written file took over {timeout:.0f} s") from e
        if proc.returncode != 0:
            last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise SourceUnavailable("the written file does not rebuild the module in a fresh process ("
                                    + (last[-1][:240] if last else f"exit status {proc.returncode}") + ")")
        with np.load(out) as got:
            return [[got[f"case_{c}_{j}"] for j in range(len(got.files)) if f"case_{c}_{j}" in got.files]
                    for c in range(len(cases))]
