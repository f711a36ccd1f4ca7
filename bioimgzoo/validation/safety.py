"""Safety checks: what the package's files would do when loaded, read without loading them.

These run before any model is built (:data:`~._registry.STAGE_FILES`) and
never execute package content:

- ``safety.pickle``: the state-dict pickle is walked opcode by opcode
  (:func:`pickletools.genops`, nothing unpickled); every global it would import
  and every opcode it would run is compared with what torch's ``weights_only``
  loader allows; anything else fails, naming the global (``posix.system``).
- ``safety.code``: architecture and custom-op Python files are parsed with
  :mod:`ast`, not imported: imports and calls of subprocess, ``os.system``,
  sockets, ctypes, ``eval``/``exec`` and network libraries are reported.
- ``safety.onnx``: ONNX external-data references (files beside the model that
  the runtime would open) stay inside the package and exist.
- ``safety.torchscript``: a TorchScript file is a TorchScript archive (a zip
  with ``code/`` and ``data.pkl``), not a pickle that ``torch.jit.load`` would
  refuse or, worse, a plain ``torch.save`` file.
"""

from __future__ import annotations

import ast
import pickletools
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ._registry import FAILED, PASSED, STAGE_FILES, WARNING, register_family

__all__ = ["scan_pickle", "scan_state_dict", "scan_python", "WEIGHTS_ONLY_OPCODES"]

FAMILY = register_family("safety", "Safety (files read, never run)", order=25)

#: the opcodes torch's weights_only unpickler implements (torch/_weights_only_unpickler.py)
WEIGHTS_ONLY_OPCODES = frozenset({
    "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "MARK", "TUPLE",
    "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE", "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT",
    "EMPTY_SET", "BININT", "BININT1", "BININT2", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID",
    "BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP",
})

_STRING_OPCODES = frozenset({"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING",
                             "SHORT_BINSTRING"})

#: globals of a plain state dict, used when torch itself is not importable to list its own allow-list
_STATIC_ALLOWED = frozenset({
    "collections.OrderedDict", "collections.Counter", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor", "torch._tensor._rebuild_from_type_v2", "torch.Size", "torch.device",
    "torch.nn.parameter.Parameter", "torch.Tensor", "builtins.set", "builtins.bytearray", "builtins.complex",
    "_codecs.encode", "torch.serialization._get_layout",
    *(f"torch.{t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                    "Byte", "Bool", "ComplexFloat", "ComplexDouble", "Untyped")),
    *(f"torch.{t}" for t in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                             "uint8", "bool", "complex64", "complex128")),
})

#: ast findings: module roots whose import or use is reported, and why
_RISKY_MODULES = {
    "subprocess": "starts other programs", "socket": "opens network connections",
    "ctypes": "calls native code", "cffi": "calls native code", "urllib": "downloads from the network",
    "requests": "downloads from the network", "httpx": "downloads from the network",
    "http": "opens network connections", "ftplib": "opens network connections",
    "smtplib": "sends mail", "paramiko": "opens network connections", "pty": "starts a terminal",
    "multiprocessing": "starts processes", "pickle": "unpickles arbitrary objects",
    "marshal": "loads code objects", "shutil": "moves and deletes files",
}
_RISKY_CALLS = {
    "eval": "evaluates a string as code", "exec": "executes a string as code", "compile": "compiles code",
    "__import__": "imports a module chosen at run time", "os.system": "runs a shell command",
    "os.popen": "runs a shell command", "os.exec": "replaces the process", "os.spawn": "starts a program",
    "os.fork": "forks the process", "os.remove": "deletes files", "os.unlink": "deletes files",
    "os.rmdir": "deletes folders", "importlib.import_module": "imports a module chosen at run time",
    "torch.hub.load": "downloads and runs code", "torch.load": "unpickles a file",
}


# ------------------------------------------------------------------------------------------- pickles

def _allowed_globals() -> frozenset[str]:
    """What torch's weights_only loader accepts (torch's own list when importable, else a fixed one)."""
    try:
        from torch import _weights_only_unpickler as wou

        return frozenset(wou._get_allowed_globals())
    except Exception:  # no torch, or its private module moved: the fixed list of a plain state dict
        return _STATIC_ALLOWED


def scan_pickle(data: bytes) -> dict:
    """The globals and opcodes one pickle stream would use, read with :func:`pickletools.genops`.

    Parameters
    ----------
    data : bytes
        One pickle (e.g. ``archive/data.pkl`` of a torch zip).

    Returns
    -------
    dict
        ``globals`` (``"module.name"`` each, in order, once), ``opcodes`` (names,
        once) and ``error`` ("" or why the stream could not be read to its end).
        Nothing is unpickled: STACK_GLOBAL names are taken from the strings pushed
        before it, as the unpickler would.
    """
    globals_: list[str] = []
    opcodes: list[str] = []
    strings: list[str] = []
    error = ""
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name not in opcodes:
                opcodes.append(op.name)
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                name = arg.replace(" ", ".", 1)
            elif op.name == "STACK_GLOBAL":
                name = ".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>.<unknown>"
            else:
                if isinstance(arg, str) and op.name in _STRING_OPCODES:
                    strings.append(arg)
                continue
            # STACK_GLOBAL's name is a best guess (the memo can hide it); the opcode itself is refused anyway
            if name not in globals_:
                globals_.append(name)
    except Exception as e:  # truncated or not a pickle: reported, never loaded
        error = f"{type(e).__name__}: {e}"
    return {"globals": globals_, "opcodes": opcodes, "error": error}


def scan_state_dict(path: Path) -> dict:
    """Scan a ``torch.save`` file without loading it: the pickles of a zip archive, or a legacy file.

    Returns
    -------
    dict
        ``pickles`` (member names scanned), ``globals``, ``opcodes``, ``error``
        as :func:`scan_pickle`, plus ``disallowed_globals`` and
        ``disallowed_opcodes``: what torch's ``weights_only`` loader would refuse.
    """
    scans, names = [], []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".pkl") and info.file_size <= 256 << 20:
                    names.append(info.filename)
                    scans.append(scan_pickle(zf.read(info)))
        if not names:
            scans.append({"globals": [], "opcodes": [], "error": "the torch zip holds no .pkl member"})
    else:
        # legacy format: magic number, protocol and system-info pickles, then the object itself
        data = path.read_bytes()[: 256 << 20]
        names.append(path.name)
        pos = 0
        for _ in range(4):
            one = scan_pickle(data[pos:])
            scans.append(one)
            if one["error"]:
                break
            pos += _pickle_length(data[pos:])
            if pos >= len(data):
                break
    allowed = _allowed_globals()
    globals_ = list(dict.fromkeys(g for s in scans for g in s["globals"]))
    opcodes = list(dict.fromkeys(o for s in scans for o in s["opcodes"]))
    return {"pickles": names, "globals": globals_, "opcodes": opcodes,
            "error": next((s["error"] for s in scans if s["error"]), ""),
            "disallowed_globals": [g for g in globals_ if g not in allowed],
            "disallowed_opcodes": [o for o in opcodes if o not in WEIGHTS_ONLY_OPCODES]}


def _pickle_length(data: bytes) -> int:
    """Bytes up to and including the first STOP opcode."""
    for op, _arg, pos in pickletools.genops(data):
        if op.name == "STOP":
            return pos + 1
    return len(data)


def _weights_file(ctx: Any, wf: str) -> Path | None:
    entry = getattr(ctx.pkg.descr.weights, wf, None)
    if entry is None:
        return None
    return ctx.pkg.file(entry)  # verified against its sha256 (the files family reported any mismatch)


@FAMILY.check("pickle", title="the state-dict pickle uses only what weights_only loading allows",
              stage=STAGE_FILES, requires=("package", "files"),
              fix="Save the weights as a plain state dict: `torch.save(model.state_dict(), path)` holds only "
                  "tensors and an OrderedDict; never pickle modules, functions or custom objects.")
def _pickle(ctx: Any) -> Iterator[tuple]:
    """Fails naming each global or opcode outside torch's weights_only loader."""
    from ..errors import BioimgzooError

    try:
        path = _weights_file(ctx, "pytorch_state_dict")
    except BioimgzooError as e:
        yield FAILED, f"the state dict cannot be read: {e}"
        return
    if path is None:
        return
    scan = scan_state_dict(path)
    details = {k: scan[k] for k in ("globals", "opcodes", "disallowed_globals", "disallowed_opcodes", "pickles")}
    if scan["disallowed_globals"] or scan["disallowed_opcodes"]:
        parts = []
        if scan["disallowed_globals"]:
            parts.append("imports and calls " + ", ".join(scan["disallowed_globals"]))
        if scan["disallowed_opcodes"]:
            parts.append("uses the opcodes " + ", ".join(scan["disallowed_opcodes"]))
        yield FAILED, (f"the state dict {path.name} {' and '.join(parts)}: torch's weights_only loader refuses "
                       "this, and a plain torch.load would execute it"), details
    elif scan["error"]:
        yield FAILED, f"the state dict {path.name} is not a readable pickle ({scan['error']})", details
    else:
        yield PASSED, (f"the state dict {path.name} uses {len(scan['globals'])} global(s), all allowed by "
                       "weights_only loading"), details


# ------------------------------------------------------------------------------------------- python files

def scan_python(source: str, *, filename: str = "<file>") -> list[dict]:
    """Risky imports and calls in Python source, found by parsing it (never importing it).

    Returns
    -------
    list of dict
        ``{"line", "what", "why"}`` per finding (``what``: ``"import subprocess"``,
        ``"call os.system"``); a file that does not parse gives one finding saying so.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        return [{"line": e.lineno or 0, "what": "syntax error", "why": f"the file does not parse ({e.msg})"}]
    aliases: dict[str, str] = {}
    found: list[dict] = []

    def report(node: ast.AST, what: str, why: str) -> None:
        found.append({"line": getattr(node, "lineno", 0), "what": what, "why": why})

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                root = a.name.split(".")[0]
                if root in _RISKY_MODULES:
                    report(node, f"import {a.name}", _RISKY_MODULES[root])
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if root in _RISKY_MODULES:
                report(node, f"from {node.module} import {', '.join(a.name for a in node.names)}",
                       _RISKY_MODULES[root])
            for a in node.names:
                full = f"{node.module}.{a.name}"
                why = _risky_call(full)
                if why:
                    report(node, f"from {node.module} import {a.name}", why)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if not name:
                continue
            head, _, rest = name.partition(".")
            full = aliases.get(head, head) + ("." + rest if rest else "")
            why = _risky_call(full)
            if why:
                report(node, f"call {full}", why)
    return sorted(found, key=lambda f: f["line"])


def _risky_call(full: str) -> str:
    if full in _RISKY_CALLS:
        return _RISKY_CALLS[full]
    for prefix in ("os.exec", "os.spawn"):
        if full.startswith(prefix):
            return _RISKY_CALLS[prefix]
    root = full.split(".")[0]
    return _RISKY_MODULES.get(root, "") if "." in full else ""


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _code_files(ctx: Any) -> list[tuple[str, str]]:
    """``(where, relative path)`` of each Python file the package ships as code to run."""
    from .. import trust

    out = []
    for ref in trust.code_refs(ctx.pkg.descr):
        if ref.kind == "library architecture":
            continue
        path = ref.target.rsplit(":", 1)[0]
        if path.endswith(".py") and "://" not in path:
            out.append((ref.where, path))
    return list(dict.fromkeys(out))


@FAMILY.check("code", title="shipped Python code parsed, not run: no process, network or eval calls",
              stage=STAGE_FILES, requires=("package", "files"),
              fix="Keep the architecture file to the network definition (torch and numpy): no subprocess, "
                  "os.system, sockets, ctypes, eval/exec or downloads. Reviewers reject packages whose code "
                  "does more than build the network.")
def _code(ctx: Any) -> Iterator[tuple]:
    """One failure per risky import or call, naming the file and line; a pass per clean file."""
    from ..errors import BioimgzooError

    for where, rel in _code_files(ctx):
        try:
            text = ctx.pkg.file(rel).read_text("utf-8", errors="replace")
        except BioimgzooError as e:
            yield FAILED, f"{where}: {rel} cannot be read: {e}", {"file": rel}
            continue
        risky = scan_python(text, filename=rel)
        if risky:
            for r in risky:
                yield FAILED, f"{rel}:{r['line']}: {r['what']} ({r['why']})", {"file": rel, **r}
        else:
            yield PASSED, f"{rel}: no process, network, native-code or eval calls", {"file": rel}


# ------------------------------------------------------------------------------------------- onnx, torchscript

@FAMILY.check("onnx", title="ONNX external data stays inside the package", stage=STAGE_FILES,
              requires=("package", "files"),
              fix="Save the ONNX model with its weights inside the one file (onnx.save(model, path, "
                  "save_as_external_data=False)), or ship each external-data file beside it and list it.")
def _onnx(ctx: Any) -> Iterator[tuple]:
    """Fails for external-data locations that leave the package or are missing."""
    from ..errors import BioimgzooError, PackageError
    from ..package import safe_relpath

    try:
        path = _weights_file(ctx, "onnx")
    except BioimgzooError as e:
        yield FAILED, f"the ONNX file cannot be read: {e}"
        return
    if path is None:
        return
    try:
        import onnx
    except ImportError:
        yield WARNING, "the onnx package is not installed: external data not checked"
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        yield FAILED, f"{path.name} is not a readable ONNX model ({type(e).__name__}: {e})"
        return
    locations = []
    for t in _onnx_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            locations.append(loc)
    locations = list(dict.fromkeys(locations))
    if not locations:
        yield PASSED, f"{path.name} holds all its weights (no external data)"
        return
    weights_rel = str(getattr(ctx.pkg.descr.weights.onnx.source, "path", ctx.pkg.descr.weights.onnx.source))
    base = PurePosixPath(weights_rel).parent
    for loc in locations:
        try:
            rel = safe_relpath((base / loc).as_posix() if str(base) != "." else loc, "onnx external data")
            ctx.pkg.file(rel)
        except PackageError as e:
            yield FAILED, f"{path.name} references external data {loc!r}: {e}", {"location": loc}
            continue
        yield WARNING, (f"{path.name} keeps weights in the external file {loc!r}: consumers that copy only "
                        "the .onnx file lose them"), {"location": loc}


def _onnx_tensors(model: Any) -> Iterator[Any]:
    yield from model.graph.initializer
    stack = list(model.graph.node)
    while stack:
        node = stack.pop()
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from attr.g.initializer
                stack += list(attr.g.node)
            for g in attr.graphs:
                yield from g.initializer
                stack += list(g.node)


@FAMILY.check("torchscript", title="the TorchScript file is a TorchScript archive", stage=STAGE_FILES,
              requires=("package", "files"),
              fix="Save the weights with torch.jit.save(torch.jit.script(model) or torch.jit.trace(model, x), "
                  "path); a torch.save file is not TorchScript.")
def _torchscript(ctx: Any) -> Iterator[tuple]:
    """A zip holding ``<archive>/data.pkl`` and ``<archive>/code/`` (what torch.jit.save writes)."""
    from ..errors import BioimgzooError

    try:
        path = _weights_file(ctx, "torchscript")
    except BioimgzooError as e:
        yield FAILED, f"the TorchScript file cannot be read: {e}"
        return
    if path is None:
        return
    if not zipfile.is_zipfile(path):
        yield FAILED, f"{path.name} is not a zip archive, so not TorchScript (torch.jit.load refuses it)"
        return
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    has_data = any(n.endswith("/data.pkl") for n in names)
    has_code = any("/code/" in n for n in names)
    if has_data and has_code:
        yield PASSED, f"{path.name} is a TorchScript archive ({len(names)} members)"
    elif has_data:
        yield FAILED, (f"{path.name} is a torch.save archive without TorchScript code: it is a pickled "
                       "state dict or module, not TorchScript")
    else:
        yield FAILED, f"{path.name} is a zip without data.pkl and code/: not a TorchScript archive"

