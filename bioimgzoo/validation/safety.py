"""Safety checks: what the package's files would do when loaded, read without loading them.

These run before any model is built (:data:`~._registry.STAGE_FILES`) and
never execute package content:

- ``safety.pickle``: the state dict is read the way ``torch.load`` reads it
  (its first bytes decide zip or legacy, as torch's do: a pickle in front of
  a clean zip is what torch unpickles), and every pickle torch would unpickle
  is walked opcode by opcode (:func:`pickletools.genops`, nothing
  unpickled, STACK_GLOBAL names followed through the memo); every global it
  would import and every opcode it would run is compared with what torch's
  ``weights_only`` loader allows; anything else fails, naming the global
  (``posix.system``);
- ``safety.callables``: the code a package names runs only as what it says:
  a library architecture must be one of bioimgzoo's own networks
  (:data:`bioimgzoo.trust.TRUSTED_ARCHITECTURES`); an architecture or custom
  op from a shipped file must be a class or function that file defines.
  Anything from the standard library, from bioimgzoo beyond its allow-list,
  or reaching processes, files or the network (``os:system`` as an
  architecture) fails, never "not applicable"; a third-party library's
  network (``careamics...``) is a warning for the reviewer to judge;
- ``safety.code``: architecture and custom-op Python files are parsed, not
  imported, by :func:`scan_python` (``_code_scan.py``: an AST walk with a
  small dataflow through aliases, star imports, ``getattr``/``sys.modules``/
  builtins indirection): every reference to processes, files, the network,
  native code or code built from strings is reported;
- ``safety.onnx``: ONNX external-data references, wherever a tensor can live
  (initializers, sparse initializers, node attributes, subgraphs, functions,
  training graphs), stay inside the package and exist;
- ``safety.torchscript``: a TorchScript file is a TorchScript archive (a zip
  with ``code/`` and ``data.pkl``), not a pickle that ``torch.jit.load`` would
  refuse or, worse, a plain ``torch.save`` file.
"""

from __future__ import annotations

import ast
import pickletools
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ._registry import FAILED, PASSED, STAGE_FILES, WARNING, register_family
from ._code_scan import import_time_effects, risk_of, scan_python

__all__ = ["scan_pickle", "scan_state_dict", "scan_python", "import_time_effects", "WEIGHTS_ONLY_OPCODES",
           "onnx_external_data", "defined_callable"]

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

# ------------------------------------------------------------------------------------------- pickles

def _allowed_globals() -> frozenset[str]:
    """What torch's weights_only loader accepts (torch's own list when importable, else a fixed one)."""
    try:
        from torch import _weights_only_unpickler as wou

        return frozenset(wou._get_allowed_globals())
    except Exception:  # no torch, or its private module moved: the fixed list of a plain state dict
        return _STATIC_ALLOWED


#: opcodes that push one value onto the stack (their value, when a string, may become a STACK_GLOBAL name)
_PUSH = frozenset({"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                   "FLOAT", "BINFLOAT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET", "BINBYTES",
                   "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "GLOBAL", "BINPERSID", "PERSID",
                   *_STRING_OPCODES})
#: opcodes that only mark or store: the stack's top stays what it was
_NEUTRAL = frozenset({"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})


def scan_pickle(data: bytes) -> dict:
    """The globals and opcodes one pickle stream would use, read with :func:`pickletools.genops`.

    Parameters
    ----------
    data : bytes
        One pickle (e.g. ``archive/data.pkl`` of a torch zip); reading stops at its STOP.

    Returns
    -------
    dict
        ``globals`` (``"module.name"`` each, in order, once), ``opcodes`` (names,
        once), ``error`` ("" or why the stream could not be read to its end) and
        ``length`` (bytes up to and including STOP).  Nothing is unpickled: a
        STACK_GLOBAL's module and name are the two strings on top of the stack,
        followed through the memo (MEMOIZE, PUT, GET) as the unpickler would;
        when they cannot be known exactly the global is ``<unresolved>``, which
        no loader allows.
    """
    globals_: list[str] = []
    opcodes: list[str] = []
    error = ""
    length = 0
    stack: list[Any] = []  # the top of the unpickler's stack: strings where known, else None (unknown)
    memo: dict[int, Any] = {}
    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name not in opcodes:
                opcodes.append(name)
            found = None
            if name in ("GLOBAL", "INST") and isinstance(arg, str):
                found = arg.replace(" ", ".", 1)
            elif name == "STACK_GLOBAL":
                top = stack[-2:]
                found = (f"{top[0]}.{top[1]}" if len(top) == 2 and all(isinstance(t, str) for t in top)
                         else "<unresolved>.<unresolved>")
                del stack[-2:]
                stack.append(None)
                if found not in globals_:
                    globals_.append(found)
                continue
            if found is not None and found not in globals_:
                globals_.append(found)
            if name in _STRING_OPCODES:
                stack.append(arg if isinstance(arg, str) else None)
            elif name in _PUSH:
                stack.append(None)
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg)))
            elif name == "POP":
                if stack:
                    stack.pop()
            elif name == "STOP":
                length = pos + 1
                break
            elif name not in _NEUTRAL:
                stack = [None]  # anything else: what is on top is no longer known
    except Exception as e:  # truncated or not a pickle: reported, never loaded
        error = f"{type(e).__name__}: {e}"
    return {"globals": globals_, "opcodes": opcodes, "error": error, "length": length}


#: pickles torch.load reads from a legacy (not zip) file, in order: magic number, protocol, system info, the
#: object, the storage keys (torch/serialization.py, _legacy_load); the raw storage bytes follow
_LEGACY_PICKLES = ("magic number", "protocol version", "system info", "object", "storage keys")
_ZIP_MAGIC = b"PK\x03\x04"
_SCAN_BYTES = 256 << 20


def scan_state_dict(path: Path) -> dict:
    """Scan a ``torch.save`` file the way ``torch.load`` reads it, without loading it.

    torch decides the format by the first four bytes (``PK\\x03\\x04``: a zip,
    whatever else the file holds), not by looking for a zip anywhere as
    :func:`zipfile.is_zipfile` does: a pickle followed by a clean torch zip
    is read by torch as a legacy file, its leading pickle first.  So:

    * a zip (by its first bytes): every ``.pkl`` member (torch reads
      ``<archive>/data.pkl``);
    * a tar (torch < 0.1.10): refused as such (a plain ``torch.load`` unpickles
      its members, interleaved with raw data; ``weights_only`` refuses it);
    * else a legacy file: every pickle torch unpickles, in order, from the
      first byte (:data:`_LEGACY_PICKLES`), the object's and the storage keys'
      included, each to its STOP.

    Returns
    -------
    dict
        ``format`` ("zip", "legacy", "tar"), ``pickles`` (what was scanned),
        ``globals``, ``opcodes``, ``error`` as :func:`scan_pickle`, plus
        ``disallowed_globals`` and ``disallowed_opcodes``: what torch's
        ``weights_only`` loader would refuse.
    """
    import tarfile

    scans, names = [], []
    with open(path, "rb") as f:
        head = f.read(4)
    fmt = "zip" if head == _ZIP_MAGIC else "legacy"
    if fmt == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.filename.endswith(".pkl"):
                        names.append(info.filename)
                        if info.file_size > _SCAN_BYTES:
                            scans.append({"globals": [], "opcodes": [], "error": f"{info.filename} is over 256 MB"})
                        else:
                            scans.append(scan_pickle(zf.read(info)))
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, ValueError) as e:
            scans.append({"globals": [], "opcodes": [], "error": f"an unreadable zip ({type(e).__name__}: {e})"})
        if not names and not scans:
            scans.append({"globals": [], "opcodes": [], "error": "the torch zip holds no .pkl member"})
    else:
        try:
            is_tar = tarfile.is_tarfile(path)
        except OSError:
            is_tar = False
        if is_tar:
            fmt = "tar"
            names.append(path.name)
            scans.append({"globals": [], "opcodes": [], "error": "a tar-format torch file (torch < 0.1.10): its "
                          "members interleave pickles with raw data and are not scanned; torch's weights_only loader "
                          "refuses it, a plain torch.load unpickles it"})
        else:
            with open(path, "rb") as f:
                data = f.read(_SCAN_BYTES)
            pos = 0
            for what in _LEGACY_PICKLES:
                one = scan_pickle(data[pos:])
                names.append(f"{path.name}: {what} pickle at byte {pos}")
                scans.append(one)
                if one["error"] or not one["length"]:
                    one["error"] = one["error"] or f"the {what} pickle has no end"
                    break
                pos += one["length"]
    allowed = _allowed_globals()
    globals_ = list(dict.fromkeys(g for s in scans for g in s["globals"]))
    opcodes = list(dict.fromkeys(o for s in scans for o in s["opcodes"]))
    return {"format": fmt, "pickles": names, "globals": globals_, "opcodes": opcodes,
            "error": next((s["error"] for s in scans if s["error"]), ""),
            "disallowed_globals": [g for g in globals_ if g not in allowed],
            "disallowed_opcodes": [o for o in opcodes if o not in WEIGHTS_ONLY_OPCODES]}


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

def defined_callable(source: str, name: str) -> tuple[bool, str]:
    """Whether Python ``source`` defines ``name`` itself (a top-level class or function), and how it binds it."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:
        return False, f"the file does not parse ({getattr(e, 'msg', e)})"
    except (RecursionError, MemoryError):
        return False, "the file is nested too deeply to be read"
    how = ""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True, f"{'class' if isinstance(node, ast.ClassDef) else 'function'} on line {node.lineno}"
        if isinstance(node, (ast.If, ast.Try)):  # `if torch_available:` / `try:` blocks at module level
            stack[:0] = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                         *(x for h in getattr(node, "handlers", []) for x in h.body)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                bound = a.asname or (a.name if isinstance(node, ast.ImportFrom) else a.name.split(".")[0])
                if bound == name or a.name == "*":
                    module = getattr(node, "module", None) or a.name
                    how = how or f"imported from {module} on line {node.lineno}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
                how = how or f"bound by an assignment on line {node.lineno}"
    return False, how or "it is not defined there"


@FAMILY.check("callables", title="the code the package names is bioimgzoo's own network or defined in its file",
              stage=STAGE_FILES, requires=("package", "files"),
              fix="Ship the network's class in the architecture file (architecture: {source: arch.py, callable: "
                  "Net}); name a library callable only for bioimgzoo's own networks. Whatever else a package "
                  "names runs only with trust_code=True, at the user's own risk.")
def _callables(ctx: Any) -> Iterator[tuple]:
    """A failure for every architecture or custom op that is not allow-listed or defined in the file it names."""
    from .. import trust
    from ..errors import BioimgzooError

    for ref in trust.code_refs(ctx.pkg.descr):
        details = {"where": ref.where, "target": ref.target, "kind": ref.kind}
        if ref.kind == "library architecture":
            if ref.allow_listed:
                yield PASSED, f"{ref.where}: {ref.target} is bioimgzoo's own network (allowed by its exact name)", details
                continue
            why = risk_of(f"{ref.module}.{ref.callable}")
            root = ref.module.split(".")[0]
            if why or root in sys.stdlib_module_names or root == "bioimgzoo":
                # no network comes from the standard library, and bioimgzoo's own code is allowed by exact name
                yield FAILED, (f"{ref.where} names {ref.target}: a library callable outside bioimgzoo's allow-list, "
                               f"which this check cannot read and which runs whatever {ref.module} does"
                               + (f" ({why})" if why else "") + "; it runs only with trust_code=True"), details
            else:
                # a third-party library's network (careamics, biapy, ...): real zoo packages name them; the reviewer
                # must judge that library, which this check cannot read
                yield WARNING, (f"{ref.where} names {ref.target}, from the installed library {root!r}, which this "
                                "check cannot read: it runs only with trust_code=True; review that library (and pin "
                                "it in the package's dependencies)"), details
            continue
        path, _, name = ref.target.rpartition(":")
        if not path.endswith(".py") or "://" in path:
            yield FAILED, f"{ref.where} names {ref.target}, which is not a Python file of the package", details
            continue
        try:
            text = ctx.pkg.file(path).read_text("utf-8", errors="replace")
        except BioimgzooError as e:
            yield FAILED, f"{ref.where}: {path} cannot be read: {e}", details
            continue
        ok, how = defined_callable(text, name)
        if ok:
            yield PASSED, f"{ref.where}: {name} is the {how} of {path}", details
        else:
            yield FAILED, (f"{ref.where} names {name!r} in {path}, which the file does not define itself ({how}): "
                           "the package would run an object from elsewhere"), details


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
    locations = [loc for loc, _where in onnx_external_data(model)]
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


def onnx_external_data(model: Any) -> list[tuple[str, str]]:
    """``(location, where)`` of every tensor of an ONNX model that keeps its data in another file.

    Every place a tensor can live is visited: the graph's initializers and
    sparse initializers (values and indices), node attributes (``t``,
    ``tensors``, ``sparse_tensor(s)``: a ``Constant`` node's value), subgraphs
    (``If``/``Loop``/``Scan`` bodies) to any depth, the model's local
    functions (their ``Constant`` nodes), and training graphs.  A tensor counts
    as external when its ``data_location`` says so or it carries a
    ``location`` entry (a runtime may follow either).
    """
    found: list[tuple[str, str]] = []

    def tensor(t: Any, where: str) -> None:
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if t.data_location == 1 or loc is not None:  # TensorProto.EXTERNAL
            found.append((loc or "", where))

    def sparse(sp: Any, where: str) -> None:
        tensor(sp.values, f"{where} (values)")
        tensor(sp.indices, f"{where} (indices)")

    graphs: list[tuple[Any, str]] = [(model.graph, "graph")]
    graphs += [(ti.initialization, f"training_info[{i}].initialization") for i, ti in enumerate(model.training_info)]
    graphs += [(ti.algorithm, f"training_info[{i}].algorithm") for i, ti in enumerate(model.training_info)]
    nodes: list[tuple[Any, str]] = [(n, f"function {f.name}") for f in model.functions for n in f.node]
    seen = 0
    while graphs or nodes:
        seen += 1
        if seen > 1_000_000:  # a hostile nesting: stop, and say so
            found.append(("", "a graph nested too deeply to walk"))
            break
        if graphs:
            g, where = graphs.pop()
            for t in g.initializer:
                tensor(t, f"{where}: initializer {t.name}")
            for sp in g.sparse_initializer:
                sparse(sp, f"{where}: sparse initializer {sp.values.name}")
            nodes += [(n, f"{where}: node {n.name or n.op_type}") for n in g.node]
            continue
        node, where = nodes.pop()
        for attr in node.attribute:
            at = f"{where}, attribute {attr.name}"
            if attr.HasField("t"):
                tensor(attr.t, at)
            for t in attr.tensors:
                tensor(t, at)
            if attr.HasField("sparse_tensor"):
                sparse(attr.sparse_tensor, at)
            for sp in attr.sparse_tensors:
                sparse(sp, at)
            if attr.HasField("g"):
                graphs.append((attr.g, at))
            graphs += [(sub, at) for sub in attr.graphs]
    return found


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

