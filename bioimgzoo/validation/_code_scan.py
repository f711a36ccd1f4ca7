"""What Python source would do, read with :mod:`ast` and a small dataflow, never imported.

:func:`scan_python` finds every reference to something that reaches outside
a network definition: processes (the whole ``subprocess``, ``os`` process and
file surface, ``pty``, ``multiprocessing``), the network (``socket``,
``urllib``, ``http``, ``requests`` ...), native code (``ctypes``, ``cffi``,
``torch.ops.load_library``, ``torch.utils.cpp_extension``), code from strings
or files (``eval``, ``exec``, ``compile``, ``__import__``, ``importlib``,
``runpy``, ``pickle``, ``marshal``, ``torch.load``, ``torch.hub``), writing or
deleting files, and the introspection gadgets that reach any of those
(``__subclasses__``, ``__globals__``, frames).

A list of strings is walked around by renaming; this follows values:

* bindings, flow-insensitively to a fixpoint: ``import os as o``,
  ``from os import system as s``, ``f = os.system``, tuple unpacking,
  attributes (``self.f = os.system``), default arguments, loop and ``with``
  targets, what a function of the file returns, containers;
* star imports (``from os import *``: an unbound ``system`` is ``os.system``);
* indirection: ``getattr(x, name)``, ``vars(x)[name]``, ``x.__dict__[name]``,
  ``sys.modules[name]``, ``globals()[name]``, ``__builtins__`` (a module or a
  dict), ``__import__``/``importlib.import_module(name)``, with ``name``
  folded when it is built from constants (``"ev" + "al"``, f-strings,
  ``"".join``, ``%``/``format``, ``chr``, reversal, ``bytes.fromhex``,
  base64); a name that cannot be folded on a reaching object is reported
  itself.

Every reference is reported once per line: a reference is as good as a
call (``f = os.system`` then ``f(...)``, ``map(os.system, ...)``).
:func:`import_time_effects` adds what runs when a module is imported (the
statements outside function bodies): calls that read or write files, take
absolute paths, or are not definitions.
"""

from __future__ import annotations

import ast
import base64
import binascii
import builtins
from typing import Any, Iterable

__all__ = ["scan_python", "import_time_effects", "risk_of"]

#: modules every part of which reaches outside a network definition, and why
_WHOLE = {
    "subprocess": "starts other programs", "_posixsubprocess": "starts other programs", "pty": "starts a terminal",
    "multiprocessing": "starts processes", "concurrent": "starts processes or threads running other code",
    "socket": "opens network connections", "socketserver": "opens network connections",
    "ssl": "opens network connections", "http": "opens network connections", "urllib": "downloads from the network",
    "urllib3": "downloads from the network", "requests": "downloads from the network",
    "httpx": "downloads from the network", "aiohttp": "downloads from the network",
    "ftplib": "opens network connections", "smtplib": "sends mail", "telnetlib": "opens network connections",
    "paramiko": "opens network connections", "xmlrpc": "opens network connections",
    "webbrowser": "opens a browser", "ctypes": "calls native code", "_ctypes": "calls native code",
    "cffi": "calls native code", "pickle": "unpickles arbitrary objects", "_pickle": "unpickles arbitrary objects",
    "cPickle": "unpickles arbitrary objects", "dill": "unpickles arbitrary objects",
    "cloudpickle": "unpickles arbitrary objects", "shelve": "unpickles arbitrary objects",
    "joblib": "unpickles arbitrary objects", "marshal": "loads code objects", "runpy": "runs other code",
    "code": "runs code from strings", "codeop": "compiles code", "importlib": "imports a module chosen at run time",
    "zipimport": "imports code from archives", "posix": "reaches the operating system",
    "nt": "reaches the operating system", "_winapi": "reaches the operating system",
    "shutil": "moves and deletes files", "signal": "changes the process's signal handling",
}
#: parts of those modules that are harmless
_WHOLE_EXCEPT = {"urllib.parse", "importlib.metadata", "importlib.resources", "importlib.util.find_spec",
                 "shutil.which",
                 "shutil.get_terminal_size", "shutil.disk_usage", "concurrent.futures.ThreadPoolExecutor",
                 "concurrent.futures.as_completed", "concurrent.futures.wait"}
#: modules whose import alone says nothing (harmless parts above): their risky parts are reported where used
_PARTLY_HARMLESS = {"importlib", "shutil", "urllib", "concurrent", "signal"}
#: the part of ``os`` that neither starts processes nor writes, deletes or links files
_OS_SAFE = {"path", "sep", "altsep", "extsep", "pathsep", "linesep", "curdir", "pardir", "devnull", "name",
            "fspath", "fsencode", "fsdecode", "PathLike", "getenv", "environ", "cpu_count", "getcwd", "getpid",
            "listdir", "scandir", "walk", "stat", "lstat", "sched_getaffinity", "get_terminal_size", "urandom",
            "SEEK_SET", "SEEK_CUR", "SEEK_END", "O_RDONLY", "F_OK", "R_OK"}
#: single names and why
_NAMED = {
    "builtins.eval": "evaluates a string as code", "builtins.exec": "executes a string as code",
    "builtins.compile": "compiles code", "builtins.__import__": "imports a module chosen at run time",
    "builtins.breakpoint": "starts a debugger", "builtins.__loader__": "reaches the import machinery",
    "asyncio.create_subprocess_exec": "starts other programs", "asyncio.create_subprocess_shell": "starts other programs",
    "asyncio.subprocess": "starts other programs", "asyncio.open_connection": "opens network connections",
    "sys.settrace": "reaches other code's frames", "sys.setprofile": "reaches other code's frames",
    "sys._getframe": "reaches other code's frames", "sys.addaudithook": "reaches other code's frames",
    "sys.modules": "reaches any module by name", "gc.get_referrers": "reaches any object",
    "gc.get_objects": "reaches any object", "inspect.currentframe": "reaches other code's frames",
    "torch.load": "unpickles a file", "torch.save": "writes files", "torch.hub": "downloads and runs code",
    "torch.utils.model_zoo": "downloads files", "torch.utils.cpp_extension": "compiles and loads native code",
    "torch.ops.load_library": "loads native code", "torch.classes.load_library": "loads native code",
    "torch.package": "unpickles and runs packaged code", "torch.jit.load": "loads another TorchScript program",
    "numpy.save": "writes files", "numpy.savez": "writes files", "numpy.savez_compressed": "writes files",
    "numpy.savetxt": "writes files", "numpy.memmap": "maps files", "numpy.fromfile": "reads files",
    "numpy.ctypeslib": "calls native code",
}
#: attributes that lead from any object to code, globals or every class (sandbox escapes)
_GADGETS = {"__subclasses__": "reaches every class", "__globals__": "reaches a module's globals",
            "__builtins__": "reaches the builtins", "__code__": "reaches or replaces code objects",
            "__closure__": "reaches a function's cells", "__loader__": "reaches the import machinery",
            "f_globals": "reaches other code's frames", "f_locals": "reaches other code's frames",
            "f_builtins": "reaches other code's frames", "gi_frame": "reaches other code's frames",
            "tb_frame": "reaches other code's frames", "cr_frame": "reaches other code's frames",
            "__getattribute__": "looks attributes up by a computed name",
            "__self__": "reaches the module or object a function is bound to (print.__self__ is builtins)"}
#: method names that write, delete or link files whatever object they are called on (pathlib and friends)
_FILE_METHODS = {"write_text": "writes files", "write_bytes": "writes files", "unlink": "deletes files",
                 "rmdir": "deletes folders", "rmtree": "deletes folders", "symlink_to": "links files",
                 "hardlink_to": "links files", "chmod": "changes file permissions", "touch": "writes files"}
#: calls that open a file, and the position of their mode argument
_OPENERS = {"builtins.open": 1, "io.open": 1, "codecs.open": 1, "os.fdopen": 1, "gzip.open": 1, "bz2.open": 1,
            "lzma.open": 1, "tarfile.open": 1, "zipfile.ZipFile": 1}
#: calls that read a file into the program when a module is imported (besides opening one)
_READERS = {"numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "torch.load", "json.load",
            "yaml.load", "yaml.safe_load", "pickle.load", "pandas.read_csv", "pandas.read_table", "PIL.Image.open",
            "imageio.imread", "imageio.v3.imread", "tifffile.imread", "skimage.io.imread", "h5py.File",
            "zarr.open", "scipy.io.loadmat", "csv.reader"}
_COMPUTED = "<computed>"
#: modules other modules import at top level, so that they are reachable as attributes (torch.os)
_REEXPORTED = {"os", "sys", "subprocess", "builtins", "ctypes", "socket", "importlib", "posix", "nt", "shutil",
               "pickle", "marshal", "runpy", "pty", "multiprocessing"}
#: objects from which a name computed at run time can reach a process, a file or code
_REACHING = {"os", "sys", "builtins", "posix", "nt", "importlib", "io", "pathlib", "operator"}
_BUILTIN_NAMES = set(dir(builtins))


def risk_of(name: str) -> str:
    """Why the qualified name ``name`` (``os.system``, ``builtins.eval``) reaches outside a network ("" if not)."""
    if _COMPUTED in name:
        owner = "" if name.startswith(_COMPUTED) else name.split(f".{_COMPUTED}")[0]
        root = owner.split(".")[0]
        if not owner or root in _REACHING or root in _WHOLE or root.startswith(("<globals>", _COMPUTED)):
            return "reaches a name computed at run time (a built string given to getattr or an import)"
        return ""  # getattr(torch.nn, activation): a library's own names
    parts = name.split(".")
    # a module reached as another module's attribute (torch.os.system, numpy.sys.modules): judged as itself
    for i in range(1, len(parts) - 1):
        if parts[i] in _REEXPORTED:
            inner = risk_of(".".join(parts[i:]))
            if inner:
                return inner
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in _NAMED:
            return _NAMED[prefix]
    if any(prefix == ".".join(parts[:len(prefix.split("."))]) for prefix in _WHOLE_EXCEPT):
        return ""
    if parts[0] in _WHOLE:
        return _WHOLE[parts[0]]
    if parts[0] == "os" and len(parts) > 1 and parts[1] not in _OS_SAFE:
        return "reaches the operating system (processes, files, environment)"
    if parts[0] == "builtins" and len(parts) > 1 and parts[1] in ("__dict__",):
        return "reaches the builtins by name"
    for p in parts[1:]:
        if _GADGETS.get(p):
            return _GADGETS[p]
    return ""


# ------------------------------------------------------------------------------------------- folding strings
def _const(node: ast.AST, consts: dict[str, set[str]], depth: int = 0) -> str | None:
    """The string ``node`` always evaluates to, when it is built from constants only."""
    if depth > 20:
        return None
    c = lambda n: _const(n, consts, depth + 1)  # noqa: E731
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else (
            node.value.decode("latin-1") if isinstance(node.value, bytes) else None)
    if isinstance(node, ast.Name):
        values = consts.get(node.id)
        return next(iter(values)) if values and len(values) == 1 else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = c(node.left), c(node.right)
        return a + b if a is not None and b is not None else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        fmt = c(node.left)
        args = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
        vals = [c(a) for a in args]
        if fmt is not None and all(v is not None for v in vals):
            try:
                return fmt % tuple(vals)
            except (TypeError, ValueError):
                return None
        return None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and v.format_spec is None:
                inner = c(v.value)
                if inner is None:
                    return None
                parts.append(inner)
            else:
                return None
        return "".join(parts)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        base = c(node.value)
        bounds = [None if b is None else (b.value if isinstance(b, ast.Constant) and isinstance(b.value, int) else
                                          (-b.operand.value if isinstance(b, ast.UnaryOp) and
                                           isinstance(b.op, ast.USub) and isinstance(b.operand, ast.Constant) else
                                           "x")) for b in (node.slice.lower, node.slice.upper, node.slice.step)]
        if base is not None and "x" not in bounds:
            return base[slice(*bounds)]
        return None
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "chr" and len(node.args) == 1 and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int):
            try:
                return chr(node.args[0].value)
            except (ValueError, OverflowError):
                return None
        if isinstance(func, ast.Name) and func.id == "str" and len(node.args) == 1:
            return c(node.args[0])
        if isinstance(func, ast.Attribute):
            if func.attr == "join" and len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple)):
                sep = c(func.value)
                items = [c(e) for e in node.args[0].elts]
                return sep.join(items) if sep is not None and all(i is not None for i in items) else None
            if func.attr == "format":
                fmt = c(func.value)
                args = [c(a) for a in node.args]
                kwargs = {k.arg: c(k.value) for k in node.keywords if k.arg}
                if fmt is not None and all(a is not None for a in args) and all(v is not None for v in kwargs.values()):
                    try:
                        return fmt.format(*args, **kwargs)
                    except (IndexError, KeyError, ValueError):
                        return None
                return None
            if func.attr in ("decode", "lower", "upper", "strip", "lstrip", "rstrip") and not node.args:
                base = c(func.value)
                if base is None:
                    return None
                return base if func.attr == "decode" else getattr(base, func.attr)()
            if func.attr == "replace" and len(node.args) == 2:
                base, old, new = c(func.value), c(node.args[0]), c(node.args[1])
                return base.replace(old, new) if None not in (base, old, new) else None
            if func.attr == "fromhex" and len(node.args) == 1:
                text = c(node.args[0])
                try:
                    return bytes.fromhex(text).decode("latin-1") if text is not None else None
                except ValueError:
                    return None
            if func.attr in ("b64decode", "b32decode", "b16decode", "urlsafe_b64decode") and len(node.args) == 1:
                text = c(node.args[0])
                try:
                    return getattr(base64, func.attr)(text).decode("latin-1") if text is not None else None
                except (ValueError, binascii.Error):
                    return None
    return None


# ------------------------------------------------------------------------------------------- the dataflow
class _Flow:
    """Bindings of every name in a file (flow-insensitive, to a fixpoint) and what expressions denote."""

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.names: dict[str, set[str]] = {}  # name -> qualified names it may hold
        self.attrs: dict[str, set[str]] = {}  # attribute name -> what is stored under it on any object
        self.consts: dict[str, set[str]] = {}  # name -> constant strings it may hold
        self.returns: dict[str, set[str]] = {}  # function -> what it may return
        self.star: list[str] = []  # modules star-imported
        self.bound: set[str] = set()  # names the file binds (shadowing builtins)
        for _ in range(12):
            before = (repr(sorted((k, sorted(v)) for k, v in self.names.items())),
                      repr(sorted((k, sorted(v)) for k, v in self.attrs.items())),
                      repr(sorted((k, sorted(v)) for k, v in self.returns.items())),
                      repr(sorted((k, sorted(v)) for k, v in self.consts.items())))
            self._collect()
            after = (repr(sorted((k, sorted(v)) for k, v in self.names.items())),
                     repr(sorted((k, sorted(v)) for k, v in self.attrs.items())),
                     repr(sorted((k, sorted(v)) for k, v in self.returns.items())),
                     repr(sorted((k, sorted(v)) for k, v in self.consts.items())))
            if before == after:
                break

    # ---------------------------------------------------------------- binding
    def _bind(self, target: ast.AST, values: set[str], value_node: ast.AST | None = None) -> None:
        if isinstance(target, ast.Name):
            self.bound.add(target.id)
            self.names.setdefault(target.id, set()).update(values)
            if value_node is not None:
                text = _const(value_node, self.consts)
                if text is not None:
                    self.consts.setdefault(target.id, set()).add(text)
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value_node, (ast.Tuple, ast.List)) and len(value_node.elts) == len(target.elts):
                for t, v in zip(target.elts, value_node.elts):
                    self._bind(t, self.eval(v), v)
            else:
                for t in target.elts:
                    self._bind(t, values)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, values)
        elif isinstance(target, ast.Attribute):
            self.attrs.setdefault(target.attr, set()).update(values)
        elif isinstance(target, ast.Subscript):  # d["k"] = os: the container holds it
            if isinstance(target.value, ast.Name):
                self.names.setdefault(target.value.id, set()).update(values)

    def _collect(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self._bind(ast.Name(a.asname), {a.name})
                    else:
                        root = a.name.split(".")[0]
                        self._bind(ast.Name(root), {root})
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name == "*":
                        if node.module not in self.star:
                            self.star.append(node.module)
                    else:
                        self._bind(ast.Name(a.asname or a.name), {f"{node.module}.{a.name}"})
            elif isinstance(node, ast.Assign):
                values = self.eval(node.value)
                for t in node.targets:
                    self._bind(t, values, node.value)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                self._bind(node.target, self.eval(node.value), node.value)
            elif isinstance(node, ast.NamedExpr):
                self._bind(node.target, self.eval(node.value), node.value)
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                self._bind(node.target, self.eval(node.iter))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        self._bind(item.optional_vars, self.eval(item.context_expr))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.bound.add(node.name)
                self.names.setdefault(node.name, set()).add(f"<def>.{node.name}")
                out = self.returns.setdefault(node.name, set())
                for sub in _own_nodes(node):
                    if isinstance(sub, (ast.Return, ast.Yield)) and sub.value is not None:
                        out.update(self.eval(sub.value))
                args = node.args
                positional = args.posonlyargs + args.args
                for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults):
                    self._bind(ast.Name(a.arg), self.eval(d), d)
                for a, d in zip(args.kwonlyargs, args.kw_defaults):
                    if d is not None:
                        self._bind(ast.Name(a.arg), self.eval(d), d)
            elif isinstance(node, ast.ClassDef):
                self.bound.add(node.name)
            elif isinstance(node, ast.Lambda):
                self.returns.setdefault(f"<lambda{id(node)}>", set()).update(self.eval(node.body))

    # ---------------------------------------------------------------- evaluating
    def eval(self, node: ast.AST | None, depth: int = 0) -> set[str]:
        """The qualified names ``node`` may denote (empty: nothing known)."""
        if node is None or depth > 40:
            return set()
        e = lambda n: self.eval(n, depth + 1)  # noqa: E731
        if isinstance(node, ast.Name):
            out = set(self.names.get(node.id, ()))
            if node.id == "__builtins__":
                out.add("builtins")
            elif node.id not in self.bound:
                if node.id in _BUILTIN_NAMES:
                    out.add(f"builtins.{node.id}")
                out.update(f"{m}.{node.id}" for m in self.star)
            return out
        if isinstance(node, ast.Attribute):
            base = e(node.value)
            if node.attr == "__builtins__":
                return {"builtins"}
            out = {f"{b}.{node.attr}" for b in base if not b.startswith("<def>")}
            if not base or not out:
                out |= set(self.attrs.get(node.attr, ()))
            return out
        if isinstance(node, ast.Subscript):
            base = e(node.value)
            key = _const(node.slice, self.consts)
            out: set[str] = set()
            for b in base:
                if b == "sys.modules":
                    out.add(key if key is not None else f"{_COMPUTED}.module")
                elif b.endswith(".__dict__") or b == "builtins":
                    owner = b[:-len(".__dict__")] if b.endswith(".__dict__") else b
                    out.add(f"{owner}.{key if key is not None else _COMPUTED}")
                elif b == "<globals>":
                    if key is not None:
                        out |= self.eval(ast.Name(key), depth + 1)
                    else:
                        out.add(f"{_COMPUTED}.global")
                else:
                    out.add(b)  # an element of a container holding it
            return out
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(e(x) for x in node.elts)) if node.elts else set()
        if isinstance(node, ast.Dict):
            return set().union(*(e(x) for x in node.values)) if node.values else set()
        if isinstance(node, ast.IfExp):
            return e(node.body) | e(node.orelse)
        if isinstance(node, ast.BoolOp):
            return set().union(*(e(x) for x in node.values))
        if isinstance(node, (ast.NamedExpr, ast.Starred, ast.Await)):
            return e(node.value)
        if isinstance(node, ast.Lambda):
            return {f"<def>.<lambda{id(node)}>"}
        return set()

    def _call(self, node: ast.Call, depth: int) -> set[str]:
        funcs = self.eval(node.func, depth + 1)
        args = node.args
        out: set[str] = set()
        for f in funcs:
            if f == "builtins.getattr" and len(args) >= 2:
                name = _const(args[1], self.consts)
                out |= {f"{o}.{name if name is not None else _COMPUTED}" for o in self.eval(args[0], depth + 1)
                        if not o.startswith("<def>")}
            elif f in ("builtins.__import__", "importlib.import_module", "importlib.__import__") and args:
                name = _const(args[0], self.consts)
                out.add(name if name is not None else f"{_COMPUTED}.module")
            elif f == "builtins.vars":
                out |= {f"{o}.__dict__" for o in self.eval(args[0], depth + 1)} if args else {"<globals>"}
            elif f in ("builtins.globals", "builtins.locals"):
                out.add("<globals>")
            elif f in ("functools.partial", "functools.wraps", "builtins.staticmethod", "builtins.classmethod",
                       "builtins.property") and args:
                out |= self.eval(args[0], depth + 1)
            elif f.startswith("<def>."):
                out |= self.returns.get(f[len("<def>."):], set())
            elif f in ("operator.attrgetter", "operator.methodcaller") and args:
                name = _const(args[0], self.consts)
                out.add(f"<attrgetter>.{name if name is not None else _COMPUTED}")
        # operator.attrgetter("system")(os)
        if isinstance(node.func, ast.Call) and args:
            for g in self.eval(node.func, depth + 1):
                if g.startswith("<attrgetter>."):
                    name = g[len("<attrgetter>."):]
                    out |= {f"{o}.{name}" for o in self.eval(args[0], depth + 1)}
        return out


def _own_nodes(fn: ast.AST) -> Iterable[ast.AST]:
    """The nodes of a function's body, not those of functions or classes nested in it."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(n))


# ------------------------------------------------------------------------------------------- scanning
def scan_python(source: str, *, filename: str = "<file>") -> list[dict]:
    """Everything in Python source that reaches outside a network definition, found by parsing it.

    Returns
    -------
    list of dict
        ``{"line", "what", "why"}`` per finding, sorted by line (``what``:
        ``"import subprocess"``, ``"os.system"``, ``"builtins.eval"``,
        ``"open(..., 'w')"``); a file that does not parse gives one finding saying so.
    """
    try:
        tree = ast.parse(source, filename=filename)
        return _scan(tree, _Flow(tree))
    except (SyntaxError, ValueError) as e:
        return [{"line": getattr(e, "lineno", 0) or 0, "what": "syntax error",
                 "why": f"the file does not parse ({getattr(e, 'msg', str(e))})"}]
    except (RecursionError, MemoryError):  # a file built to exhaust the parser: a finding, never a skip
        return [_UNREADABLE]


#: the finding for source nested too deeply to parse or follow
_UNREADABLE = {"line": 0, "what": "unreadable code",
               "why": "the file is nested too deeply to be read (a file built to defeat checks)"}


def _scan(tree: ast.AST, flow: _Flow, nodes: Iterable[ast.AST] | None = None) -> list[dict]:
    found: dict[tuple[int, str], str] = {}
    skip: set[int] = set()

    def report(node: ast.AST, what: str, why: str) -> None:
        found.setdefault((getattr(node, "lineno", 0), what), why)

    for node in (ast.walk(tree) if nodes is None else nodes):
        if isinstance(node, ast.Call):
            _check_call(node, flow, report)
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                why = risk_of(a.name)
                if why and a.name.split(".")[0] not in _PARTLY_HARMLESS:  # those: reported where used
                    report(node, f"import {a.name}", why)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name == "*":
                    if node.module.split(".")[0] in ("os", "sys", "builtins", "torch", "numpy") or risk_of(node.module):
                        report(node, f"from {node.module} import *", "brings every name of the module in, "
                               "unseen (os.system, eval, ...)")
                    continue
                why = risk_of(f"{node.module}.{a.name}")
                if why:
                    report(node, f"from {node.module} import {a.name}", why)
        elif isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)) and \
                isinstance(getattr(node, "ctx", ast.Load()), ast.Load):
            if isinstance(node, ast.Attribute) and _GADGETS.get(node.attr):
                report(node, f"the attribute {node.attr}", _GADGETS[node.attr])
            for q in sorted(flow.eval(node)):
                why = risk_of(q)
                if why:
                    report(node, q, why)
            # a chain is judged whole (importlib.util.find_spec is harmless, importlib is not)
            inner = node
            while isinstance(inner, (ast.Attribute, ast.Subscript)):
                inner = inner.value
                skip.add(id(inner))
    return [{"line": line, "what": what, "why": why} for (line, what), why in sorted(found.items())]


def _check_call(node: ast.Call, flow: _Flow, report: Any) -> None:
    funcs = flow.eval(node.func)
    for f in funcs:
        if f in _OPENERS:
            pos = _OPENERS[f]
            mode_node = node.args[pos] if len(node.args) > pos else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            mode = "r" if mode_node is None else _const(mode_node, flow.consts)
            if mode is None:
                report(node, f"{f}(..., mode chosen at run time)", "may write files")
            elif any(ch in mode for ch in "wax+"):
                report(node, f"{f}(..., {mode!r})", "writes files")
        if f in ("numpy.load",) and any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and
                                                                       k.value.value is False)
                                        for k in node.keywords):
            report(node, "numpy.load(allow_pickle=...)", "unpickles arbitrary objects")
    if isinstance(node.func, ast.Attribute) and node.func.attr in _FILE_METHODS:
        report(node, f".{node.func.attr}(...)", _FILE_METHODS[node.func.attr])


# ------------------------------------------------------------------------------------------- import time
def _import_time_nodes(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run when the module is imported: outside function bodies (decorators, defaults, class
    bodies and the module's own statements included)."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(n.decorator_list)
            stack.extend(d for d in n.args.defaults + n.args.kw_defaults if d is not None)
            stack.extend(a.annotation for a in n.args.posonlyargs + n.args.args + n.args.kwonlyargs
                         if a.annotation is not None)
            continue
        if isinstance(n, ast.Lambda):
            stack.extend(d for d in n.args.defaults + n.args.kw_defaults if d is not None)
            continue
        stack.extend(ast.iter_child_nodes(n))
    return out


def import_time_effects(source: str, *, filename: str = "<file>") -> list[dict]:
    """What a module does when it is imported, beyond defining things: ``{"line", "what", "why"}`` each.

    Reported: every finding of :func:`scan_python` at import time (module
    level and class bodies: not inside function bodies), a statement that is
    an expression (a bare call, other than a docstring), a call that reads
    or writes a file (``open``, ``numpy.load``, ``Path.read_text`` ...) or
    that passes an absolute path, and a call of a function of the file
    whose body does any of that.
    """
    try:
        return _import_time_effects(ast.parse(source, filename=filename))
    except (SyntaxError, ValueError) as e:
        return [{"line": getattr(e, "lineno", 0) or 0, "what": "syntax error",
                 "why": f"the file does not parse ({getattr(e, 'msg', str(e))})"}]
    except (RecursionError, MemoryError):
        return [_UNREADABLE]


def _import_time_effects(tree: ast.Module) -> list[dict]:
    flow = _Flow(tree)
    nodes = _import_time_nodes(tree)
    found = {(f["line"], f["what"]): f["why"] for f in _scan(tree, flow, nodes)}
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}

    def effects_of_calls(candidates: Iterable[ast.AST], seen: set[str], line: int | None) -> None:
        for n in candidates:
            if not isinstance(n, ast.Call):
                continue
            at = line if line is not None else getattr(n, "lineno", 0)
            funcs = flow.eval(n.func)
            method = n.func.attr if isinstance(n.func, ast.Attribute) else None
            if any(f in _READERS or f in _OPENERS for f in funcs) or method in ("read_text", "read_bytes", "open"):
                found.setdefault((at, f"{_name(n.func)}(...)"), "reads or writes a file when the module is imported")
            for a in list(n.args) + [k.value for k in n.keywords]:
                text = _const(a, flow.consts)
                if text and (text.startswith(("/", "~", "\\\\")) or (len(text) > 2 and text[1] == ":" and
                                                                    text[2] in "\\/")):
                    found.setdefault((at, f"{_name(n.func)}({text[:60]!r})"),
                                     "names an absolute path, which exists only on the machine that wrote it")
            for f in funcs:  # a function (or class) of the file called at import time: what its body does
                target = f[len("<def>."):] if f.startswith("<def>.") else None
                if target is None and isinstance(n.func, ast.Name) and n.func.id in defs:
                    target = n.func.id
                if target in defs and target not in seen:
                    seen.add(target)
                    body = list(_own_nodes(defs[target]))
                    for g in _scan(tree, flow, body):
                        found.setdefault((at, f"{target}() -> {g['what']}"), g["why"])
                    effects_of_calls(body, seen, at)

    effects_of_calls(nodes, set(), None)
    # statements that are not definitions: an expression (other than a docstring or ...) runs for its effect
    for stmt in nodes:
        if isinstance(stmt, ast.Expr) and not isinstance(stmt.value, ast.Constant):
            found.setdefault((stmt.lineno, ast.unparse(stmt)[:80]), "a statement run for its effect when the "
                             "module is imported")
    return [{"line": line, "what": what, "why": why} for (line, what), why in sorted(found.items())]


def _name(node: ast.AST) -> str:
    try:
        return ast.unparse(node)[:60]
    except Exception:  # noqa: BLE001
        return "a call"
