"""The rules of JDLL 0.6.1 (DeepImageJ 3.x and Icy run on it): ``D1``-``D29`` of consumer-rules.md.

Each ``d<N>(subject)`` yields ``(status, message[, details])`` outcomes; the
DeepImageJ module registers all of them, the Icy module the ones that are
JDLL's (not DeepImageJ's own config nor the zoo CI's test script).  Rules about
how the description is written read :class:`~._view.ModelView` (the raw YAML,
any format); rules reading files (the ONNX graph, the TorchScript archive, test
tensors) raise :class:`~._base.NeedsFiles` when files may not be read, which
makes them ``skipped``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from .._registry import FAILED, NOT_APPLICABLE, PASSED, SKIPPED, WARNING
from ._base import NeedsFiles, Subject
from ._files import npy_header, onnx_info, torchscript_info
from ._view import AxisView, TensorView, version_tuple

__all__ = ["JdllRule", "JDLL_RULES", "jdll_rule", "rules_for", "D0_TITLE", "D0_FIX"]


@dataclass(frozen=True)
class JdllRule:
    """One rule of JDLL (DeepImageJ and Icy run on it): its id, title, fix, check, and the tools it is for."""

    id: str
    title: str
    fix: str
    check: Callable[..., Iterator[tuple]]
    tools: tuple[str, ...]


#: (tool, rule id) -> the rule, in the order the decorator registered them (D1..D29)
JDLL_RULES: dict[tuple[str, str], JdllRule] = {}


def jdll_rule(rule_id: str, *, title: str, fix: str,
              tools: tuple[str, ...] = ("deepimagej", "icy")) -> Callable[[Callable], Callable]:
    """Register a JDLL rule for ``tools`` (the tools' modules hand them to their registry: :func:`rules_for`)."""

    def register(check: Callable) -> Callable:
        for t in tools:
            JDLL_RULES[(t, rule_id)] = JdllRule(rule_id, title, fix, check, tuple(tools))
        return check

    return register


def rules_for(tool_name: str) -> list[JdllRule]:
    """The JDLL rules of one tool, in rule order."""
    return sorted((r for (t, _), r in JDLL_RULES.items() if t == tool_name), key=lambda r: int(r.id[1:]))


URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
JAVA_FORMATS = ("torchscript", "onnx", "tensorflow_saved_model_bundle")
OPS = ("binarize", "clip", "scale_linear", "scale_range", "zero_mean_unit_variance",
       "fixed_zero_mean_unit_variance", "sigmoid")
KWARGS = {
    "binarize": {"threshold", "eps"},
    "clip": {"min", "max", "eps"},
    "scale_linear": {"gain", "offset", "axes", "axis", "eps"},
    "scale_range": {"min_percentile", "max_percentile", "axes", "axis", "eps", "tensor_name", "reference_tensor"},
    "zero_mean_unit_variance": {"mean", "std", "axes", "axis", "eps"},
    "fixed_zero_mean_unit_variance": {"mean", "std", "axes", "axis", "eps"},
    "sigmoid": set(),
}
TEST_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64"}
ONNX_OUT = {"float32", "float64", "int32", "int64", "int8"}
TS_OUT = {"uint8", "int32", "int64", "float32", "float64"}
#: libtorch 1.13 / 2.0 read TorchScript archives up to this file-format version (caffe2 kMaxSupportedFileFormatVersion)
TS_MAX_FILE_VERSION = 10
ONNX_MAX_OPSET = 17
ONNX_MAX_IR = 8


def join_list(items: list[str], n: int = 6) -> str:
    return "; ".join(items[:n]) + (f"; ... ({len(items) - n} more)" if len(items) > n else "")


def basename_of(ref: str) -> str:
    """The file name a reference downloads as (Zenodo's ``.../files/<name>/content`` URLs: ``<name>``)."""
    parts = PurePosixPath(ref.split("?", 1)[0]).parts
    if len(parts) > 1 and parts[-1] == "content" and URL_SCHEME.match(ref):
        return parts[-2]
    return parts[-1] if parts else ""


def _file_refs(raw: Mapping) -> list[tuple[str, str]]:
    """Every file reference JDLL downloads, as ``(where, reference)``: read defensively from the raw YAML.

    Weights' ``dependencies`` are left out: JDLL ignores them (it runs its own environments); so are the
    icon and an inline dataset's files, which it never fetches.
    """
    from ..files import raw_file_refs

    return [(where, ref) for where, ref in raw_file_refs(raw)
            if not where.endswith(".dependencies") and where != "icon" and not where.startswith("training_data.")]


@jdll_rule("D1", title='rdf.yaml at the root',
           fix='Name the description rdf.yaml and zip the files themselves, not a folder holding them.')
def d1(s: Subject) -> Iterator[tuple]:
    src = s.pkg.source
    rdf_name = getattr(src, "rdf_name", None)
    prefix = getattr(src, "_prefix", "")
    if rdf_name is None:
        try:
            rdf_name = src.read_rdf()[1]
        except Exception:
            yield SKIPPED, "cannot tell the description's file name from this source"
            return
    if prefix:
        yield FAILED, f"{rdf_name} sits in the folder {prefix!r} of the zip, not at its root"
    elif rdf_name != "rdf.yaml":
        yield FAILED, f"the description is named {rdf_name!r}; JDLL finds only 'rdf.yaml'"
    else:
        yield PASSED, "rdf.yaml at the package root"


@jdll_rule("D2", title='files flat at the root',
           fix='Put every file beside rdf.yaml and reference it by its plain name (no sub-folders).')
def d2(s: Subject) -> Iterator[tuple]:
    refs = _file_refs(s.raw)
    bad, names = [], {}
    for where, ref in refs:
        if URL_SCHEME.match(ref):
            name = basename_of(ref)  # JDLL downloads every URL flat, by its basename
        elif len(PurePosixPath(ref.replace("\\", "/")).parts) != 1 or ref.startswith(("/", "..")):
            bad.append(f"{where} = {ref!r} is not a plain file name")
            continue
        else:
            name = ref
        if name in names and names[name] != ref:
            bad.append(f"{where} and {names[name]} both download as {name!r}")
        names.setdefault(name, ref)
    if bad:
        yield FAILED, join_list(bad) + " (JDLL downloads flat and looks files up by basename)"
    else:
        yield PASSED, f"{len(refs)} file references, all flat"


@jdll_rule("D3", title='format_version and id',
           fix="Write format_version as a string (0.5.3 or later for 0.5) and set 'id' or config.bioimageio.nickname.")
def d3(s: Subject) -> Iterator[tuple]:
    fv = s.raw.get("format_version")
    problems = []
    if not isinstance(fv, str):
        problems.append(f"format_version {fv!r} is not a string (quote it)")
    elif s.view.v05 and version_tuple(fv) < (0, 5, 3):
        problems.append(f"format_version {fv} < 0.5.3 (write 0.5.3 or later; BiaPy and QuPath read '0.5.0' as 0.4)")
    if "config" in s.raw:
        bio = s.view.config.get("bioimageio")
        nickname = bio.get("nickname") if isinstance(bio, Mapping) else None
        if not (s.raw.get("id") or nickname):
            problems.append("a 'config' section exists but neither 'id' nor 'config.bioimageio.nickname' is set "
                            "(JDLL's id is then null and the model disappears from its list)")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, f"format_version {fv!r}" + (f", id {s.raw.get('id')!r}" if s.raw.get("id") else "")


@jdll_rule("D4", title='covers key',
           fix="Add a 'covers' key (a real cover image is best; an empty list works).")
def d4(s: Subject) -> Iterator[tuple]:
    if "covers" not in s.raw or s.raw.get("covers") is None:
        yield FAILED, "no 'covers' key: JDLL's downloader iterates it without a null check"
    elif not isinstance(s.raw.get("covers"), list):
        yield FAILED, f"'covers' is {s.raw['covers']!r}, not a list"
    elif not s.raw.get("covers"):
        yield PASSED, "'covers' is an empty list (works; a real cover is better)"
    else:
        yield PASSED, f"{len(s.raw['covers'])} cover(s)"


@jdll_rule("D5", title='one input (and one output)',
           fix='Give the model exactly one input and one output (merge or split tensors inside the network).', tools=("deepimagej",))
def d5(s: Subject, *, outputs: bool = True) -> Iterator[tuple]:
    n_in, n_out = len(s.view.inputs), len(s.view.outputs)
    if n_in != 1:
        yield FAILED, f"{n_in} inputs: JDLL runs models with exactly one input"
    elif outputs and n_out != 1:
        yield FAILED, f"{n_out} outputs: DeepImageJ runs them, but the zoo CI compares every output with the " \
                      f"last one's expected output"
    else:
        yield PASSED, f"one input, {n_out} output(s)"


@jdll_rule("D5", title="one input", fix="Give the model exactly one input (Icy runs several outputs).",
           tools=("icy",))
def d5_icy(s: Subject) -> Iterator[tuple]:
    yield from d5(s, outputs=False)


@jdll_rule("D6", title='StarDist routing',
           fix="Drop config.stardist or 'stardist' from the name unless the model is StarDist.")
def d6(s: Subject) -> Iterator[tuple]:
    named = "stardist" in s.view.name.lower()
    cfg = "stardist" in s.view.config
    if named and cfg:
        yield WARNING, "the name contains 'stardist' and config.stardist exists: JDLL runs it down its StarDist " \
                       "Python path (right only for a real StarDist model)"
    else:
        yield PASSED, "not routed down JDLL's StarDist path"


# ----------------------------------------------------------------------------------------- weights


_JDLL_ENV = {"torch", "numpy", "biapy", "careamics", "cellpose", "timm"}


def arch_imports(s: Subject, entry: Any) -> list[str]:
    """Top-level modules the state-dict architecture file imports (parsed, never run)."""
    import ast
    import sys

    arch = entry.get("architecture")
    if isinstance(arch, Mapping):
        if arch.get("import_from"):
            return [str(arch["import_from"]).split(".")[0]]
        ref = arch.get("source")
    elif isinstance(arch, str) and ":" in arch:
        ref = arch.rsplit(":", 1)[0]
    else:
        return []
    path = s.file(str(ref), "architecture file")
    tree = ast.parse(open(path, encoding="utf-8").read())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            mods.add(node.module.split(".")[0])
    return sorted(m for m in mods if m not in sys.stdlib_module_names)


@jdll_rule("D7", title='weights JDLL runs',
           fix="Add torchscript or onnx weights (a state dict alone runs only in JDLL's fixed Python env).")
def d7(s: Subject) -> Iterator[tuple]:
    formats = list(s.view.weights)
    java = [f for f in formats if f in JAVA_FORMATS]
    if java:
        yield PASSED, f"weights JDLL runs: {', '.join(java)}"
        return
    if "pytorch_state_dict" in formats:
        try:
            mods = arch_imports(s, s.view.weights["pytorch_state_dict"].raw)
        except NeedsFiles as e:
            yield WARNING, f"only pytorch_state_dict: it runs in JDLL's fixed Python env (torch 2.4, biapy, " \
                           f"careamics, cellpose, timm), the package's dependencies are ignored ({e})"
            return
        other = [m for m in mods if m not in _JDLL_ENV]
        if other:
            yield FAILED, f"only pytorch_state_dict, and its architecture imports {other}, which JDLL's fixed " \
                          "Python env lacks (the package's dependencies are ignored)"
        else:
            yield WARNING, f"only pytorch_state_dict: it runs in JDLL's fixed Python env (imports {mods or 'none'})"
        return
    yield FAILED, f"weights {formats or 'none'}: JDLL runs torchscript, onnx or tensorflow_saved_model_bundle " \
                  "(keras_hdf5 and tensorflow_js are ignored)"


@jdll_rule("D8", title='TorchScript version and name',
           fix="Set weights.torchscript.pytorch_version, save with torch 1.13-2.x and name the file '<stem>.pt'.")
def d8(s: Subject) -> Iterator[tuple]:
    w = s.view.weights.get("torchscript")
    if w is None:
        yield NOT_APPLICABLE, "no torchscript weights"
        return
    problems = []
    version = w.get("pytorch_version")
    major = version_tuple(version)[:1]
    if version is None:
        problems_w = "no pytorch_version: JDLL loads it with libtorch 1.13.1"
    else:
        problems_w = ""
        if major and major[0] not in (1, 2):
            problems.append(f"pytorch_version {version}: JDLL has libtorch 1.13.1 and 2.0.0 only")
    name = basename_of(w.source or "")
    stem = name[:-3] if name.endswith(".pt") else name
    if not name.endswith(".pt") or ".pt" in stem:
        problems.append(f"the file is named {name!r}: JDLL wants '<stem>.pt' with no other '.pt' in the stem")
    static = problems[:]
    try:
        info = torchscript_info(s)
    except NeedsFiles as e:
        info = None
        skip = str(e)
    if info is not None:
        if not info["torchscript"]:
            problems.append(f"{name} is not a TorchScript archive ({info['why']})")
        elif info["version"] is not None and info["version"] > TS_MAX_FILE_VERSION:
            problems.append(f"{name} has TorchScript file format version {info['version']} > "
                            f"{TS_MAX_FILE_VERSION}, more than libtorch 1.13/2.0 read")
    if problems:
        yield FAILED, "; ".join(problems)
    elif problems_w:
        yield WARNING, problems_w + " (set weights.torchscript.pytorch_version)"
    else:
        yield PASSED, f"pytorch_version {version}, file {name}" + \
            (f", archive version {info['version']}" if info else "")
    if info is None and not static:
        yield SKIPPED, f"the TorchScript archive is not read ({skip})"


@jdll_rule("D9", title='ONNX opset and IR version',
           fix='Export ONNX with opset 17 and IR version <= 8, declare opset_version: 17, keep no external data.')
def d9(s: Subject) -> Iterator[tuple]:
    w = s.view.weights.get("onnx")
    if w is None:
        yield NOT_APPLICABLE, "no onnx weights"
        return
    declared = w.get("opset_version")
    problems, notes = [], []
    if declared is not None:
        try:
            declared = int(declared)
        except (TypeError, ValueError):
            problems.append(f"opset_version {declared!r} is not a number")
            declared = None
    if isinstance(declared, int) and declared > ONNX_MAX_OPSET:
        problems.append(f"opset_version {declared} > {ONNX_MAX_OPSET}: JDLL's onnxruntime (1.12.1, or 1.13.1 for a "
                        f"declared 18) implements opset {ONNX_MAX_OPSET} at most")
    if declared is None and not problems:
        notes.append("no opset_version declared (JDLL then uses onnxruntime 1.12.1, opset <= 17)")
    try:
        info = onnx_info(s)
    except NeedsFiles as e:
        info = None
        skip = str(e)
    if info is not None:
        opset, ir = info["opset"], info["ir_version"]
        if opset is not None and opset > ONNX_MAX_OPSET:
            problems.append(f"the file's default-domain opset is {opset} > {ONNX_MAX_OPSET}")
        elif isinstance(declared, int) and opset is not None and opset != declared:
            notes.append(f"declared opset {declared} but the file's opset_import is {opset}")
        if ir > ONNX_MAX_IR:
            problems.append(f"the file's IR version is {ir} > {ONNX_MAX_IR} (onnxruntime 1.12 reads IR <= 8)")
        if info["external"]:
            problems.append(f"the file keeps tensors in external data files ({', '.join(info['external'][:3])})")
    if problems:
        yield FAILED, "; ".join(problems)
    elif notes:
        yield WARNING, "; ".join(notes)
    else:
        yield PASSED, f"opset {declared if declared is not None else info['opset']}" + \
            (f", IR {info['ir_version']}, no external data" if info else "")
    if info is None:
        yield SKIPPED, f"the ONNX file is not read ({skip})"


@jdll_rule("D10", title='float32 inputs, output count',
           fix='Make the network take float32 inputs and return exactly the declared outputs.')
def d10(s: Subject) -> Iterator[tuple]:
    n_in, n_out = len(s.view.inputs), len(s.view.outputs)
    declared = [t.dtype for t in s.view.inputs]
    if "onnx" in s.view.weights:
        try:
            info = onnx_info(s)
        except NeedsFiles as e:
            info = None
            skip = str(e)
        if info is not None:
            ins, outs = info["inputs"], info["outputs"]
            problems = []
            if len(ins) != n_in:
                problems.append(f"the ONNX graph takes {len(ins)} inputs, {n_in} are declared")
            bad = [f"{n} ({t})" for n, t, _ in ins if t != "float32"]
            if bad:
                problems.append(f"ONNX graph inputs {bad} are not float32; JDLL feeds float32")
            if len(outs) != n_out:
                problems.append(f"the ONNX graph returns {len(outs)} outputs, {n_out} are declared")
            if problems:
                yield FAILED, "; ".join(problems)
            else:
                yield PASSED, f"ONNX graph: {len(ins)} float32 input(s), {len(outs)} output(s), as declared"
            return
        yield SKIPPED, f"the ONNX graph is not read ({skip})"
    if any(d != "float32" for d in declared):
        yield WARNING, f"inputs declared {declared}: JDLL feeds float32 whatever is declared"
    else:
        yield PASSED, f"{n_in} float32 input(s) declared"


@jdll_rule("D11", title='output data types',
           fix="Declare each output's data type as the network emits it (ONNX: float32/float64/int32/int64/int8; TorchScript: uint8/int32/int64/float32/float64); cast inside the network.")
def d11(s: Subject) -> Iterator[tuple]:
    java = [f for f in s.view.weights if f in ("onnx", "torchscript")]
    problems = []
    for t in s.view.outputs:
        if len(t.axes) > 5:
            problems.append(f"output {t.id!r} has {len(t.axes)} dims (JDLL allocates at most 5)")
        ok = [f for f in java if t.dtype in (ONNX_OUT if f == "onnx" else TS_OUT)]
        if java and not ok:
            allowed = " / ".join(f"{f}: {sorted(ONNX_OUT if f == 'onnx' else TS_OUT)}" for f in java)
            extra = " (uint8 arrives as int8 and fails)" if t.dtype == "uint8" and "onnx" in java else ""
            problems.append(f"output {t.id!r} is declared {t.dtype}, which JDLL cannot allocate for {allowed}{extra}")
    if "onnx" in s.view.weights and not problems:
        try:
            info = onnx_info(s)
        except NeedsFiles as e:
            yield SKIPPED, f"the ONNX output types are not read ({e})"
            info = None
        if info is not None:
            for t, (name, etype, ndim) in zip(s.view.outputs, info["outputs"]):
                if etype == "uint8":
                    problems.append(f"the ONNX output {name!r} is uint8, which JDLL receives as int8")
                elif etype != t.dtype:
                    problems.append(f"the ONNX output {name!r} is {etype} but {t.id!r} is declared {t.dtype} "
                                    "(JDLL's buffer has the declared type; ensure_dtype is skipped)")
                if ndim is not None and ndim > 5:
                    problems.append(f"the ONNX output {name!r} has {ndim} dims (at most 5)")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, f"output types {[t.dtype for t in s.view.outputs]} allocatable"


# ---------------------------------------------------------------------------------------------- axes


@jdll_rule("D12", title='explicit axis types and ids',
           fix='Give every axis a type and an explicit id, and the channel axis channel_names.')
def d12(s: Subject) -> Iterator[tuple]:
    if not s.view.v05:
        yield PASSED, f"format {s.view.format_version}: axes are written as letters"
        return
    problems = []
    for t in s.view.tensors:
        for i, a in enumerate(t.axes):
            if a.type == "?":
                problems.append(f"{t.role} {t.id!r} axis {i} has no type")
            elif not a.explicit_id:
                problems.append(f"{t.role} {t.id!r} {a.type} axis {i} has no explicit id")
            if a.type == "channel" and not a.channel_names:
                problems.append(f"{t.role} {t.id!r} channel axis has no channel_names")
    if problems:
        yield FAILED, join_list(problems)
    else:
        yield PASSED, "every axis has a type and an explicit id"


@jdll_rule("D13", title='axis kinds',
           fix='Use only batch, channel, x, y, z axes (no time axis), at most 5.')
def d13(s: Subject) -> Iterator[tuple]:
    problems = []
    for t in s.view.tensors:
        ids = [a.id for a in t.axes]
        bad = [a.id for a in t.axes if a.type == "time" or a.id not in ("batch", "channel", "x", "y", "z")]
        if any(a.type == "time" for a in t.axes):
            problems.append(f"{t.role} {t.id!r} has a time axis (JDLL's tile calculator crashes on it)")
        elif bad:
            problems.append(f"{t.role} {t.id!r} has axes {bad} (JDLL knows batch, channel, x, y, z)")
        if len(t.axes) > 5:
            problems.append(f"{t.role} {t.id!r} has {len(t.axes)} axes (at most 5)")
        if len(set(ids)) != len(ids):
            problems.append(f"{t.role} {t.id!r} names an axis twice ({ids})")
    if problems:
        yield FAILED, join_list(problems)
    else:
        yield PASSED, "axes among batch, channel, x, y, z"


@jdll_rule("D14", title='input axes',
           fix='Give the input a channel axis and x, y axes.')
def d14(s: Subject) -> Iterator[tuple]:
    problems = []
    for t in s.view.inputs:
        missing = [k for k, ok in (("channel", t.has("channel")), ("x", t.axis("x")), ("y", t.axis("y"))) if not ok]
        if missing:
            problems.append(f"input {t.id!r} has no {' / '.join(missing)} axis" +
                            (" (without a channel axis JDLL crashes)" if "channel" in missing else ""))
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "the input has channel, x and y axes"


@jdll_rule("D15", title='batch size',
           fix='Leave the batch size unset (or 1).')
def d15(s: Subject) -> Iterator[tuple]:
    bad = []
    for t in s.view.inputs:
        for a in t.axes:
            if a.type == "batch":
                if a.kind == "fixed" and a.size not in (None, 1):
                    bad.append(f"{t.id}: batch {a.size}")
                elif a.kind == "param" and (a.min or 1) > 1:
                    bad.append(f"{t.id}: batch min {a.min}")
    if bad:
        yield FAILED, f"batch size must be null or 1: {', '.join(bad)}"
    else:
        yield PASSED, "batch size null or 1"


@jdll_rule("D16", title='input sizes',
           fix='Size inputs by a fixed integer or {min, step} with min a multiple of step; no references.')
def d16(s: Subject) -> Iterator[tuple]:
    problems = []
    for t in s.view.inputs:
        for a in t.axes:
            if a.kind == "ref":
                problems.append(f"input {t.id!r} axis {a.id} is sized by reference")
            elif a.kind == "param":
                if not a.step or a.min is None:
                    continue
                if a.min % a.step:
                    problems.append(f"input {t.id!r} axis {a.id}: min {a.min} is not a multiple of step {a.step}")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "input sizes fixed or {min, step} with min % step == 0"


def _ref_axis(s: Subject, a: AxisView) -> tuple[TensorView | None, AxisView | None]:
    ref_t = s.view.tensor(a.ref_tensor)
    return ref_t, (ref_t.axis(a.ref_axis) if ref_t is not None else None)


@jdll_rule("D17", title='output sizes',
           fix='Size output axes by reference to one input axis with scale 1 and offset 0.')
def d17(s: Subject) -> Iterator[tuple]:
    problems, notes = [], []
    for t in s.view.outputs:
        refs = set()
        for a in t.axes:
            if a.type != "space":  # a time axis is D13's
                continue
            if a.kind == "param":
                problems.append(f"output {t.id!r} axis {a.id} is parametrized (min/step): JDLL throws")
            elif a.kind == "any" and a.type != "batch":
                problems.append(f"output {t.id!r} axis {a.id} has no size JDLL can compute")
            elif a.kind == "fixed":
                notes.append(f"output {t.id!r} axis {a.id} has the fixed size {a.size} (scaled by image/tile; "
                             "throws when not integral)")
            elif a.kind == "ref":
                ref_t, ref_a = _ref_axis(s, a)
                if ref_t is None or ref_t.role != "input":
                    problems.append(f"output {t.id!r} axis {a.id} references {a.ref_tensor!r}, not an input")
                    continue
                refs.add(ref_t.id)
                if ref_a is None or ref_a.type != "space":
                    problems.append(f"output {t.id!r} axis {a.id} references {a.ref_tensor}.{a.ref_axis}, "
                                    "not a spatial axis")
                if s.view.v05:
                    ref_scale = ref_a.scale if ref_a is not None else 1.0
                    if a.scale != 1 or ref_scale != 1 or a.offset:
                        problems.append(f"output {t.id!r} axis {a.id}: scale {a.scale:g} (input {ref_scale:g}), "
                                        f"offset {a.offset:g}: JDLL computes ref * scale + 2 * offset, not the "
                                        "spec's size")
                elif a.ref_scale != 1 or a.offset:
                    notes.append(f"output {t.id!r} axis {a.id}: scale {a.ref_scale:g}, offset {a.offset:g}")
        if len(refs) > 1:
            problems.append(f"output {t.id!r} references several inputs {sorted(refs)}")
    if problems:
        yield FAILED, join_list(problems)
    elif notes:
        yield WARNING, join_list(notes) + "; prefer references with scale 1 and offset 0"
    else:
        yield PASSED, "output sizes reference the input with scale 1 and offset 0"


def _input_halo(s: Subject, t: TensorView) -> dict[str, float]:
    """Input axis id -> the largest output halo mapped onto it, in input pixels."""
    halo: dict[str, float] = {}
    for o in s.view.outputs:
        for a in o.axes:
            if not a.halo:
                continue
            if a.kind == "ref" and a.ref_tensor == t.id:
                ref_a = t.axis(a.ref_axis)
                factor = (a.scale / ref_a.scale) if (s.view.v05 and ref_a and ref_a.scale) else \
                    (1.0 / a.ref_scale if a.ref_scale else 1.0)
                key = a.ref_axis
            else:
                factor, key = 1.0, a.id
            halo[key] = max(halo.get(key, 0.0), a.halo * factor)
    return halo


def jdll_tile(a: AxisView, image: int, halo: float) -> int:
    """JDLL's tile size along one axis for an image of ``image`` pixels (D18)."""
    if a.kind == "param" and a.step:
        return int((image + 2 * halo) // a.step) * a.step
    if a.kind == "param":
        return a.min or image
    return a.size if a.size is not None else image


@jdll_rule("D18", title='JDLL tiles',
           fix="Choose min/step and halo so that JDLL's tile (floor((S + 2 halo) / step) * step) is valid and larger than 2 * halo.")
def d18(s: Subject) -> Iterator[tuple]:
    problems, checked = [], 0
    shapes = {}
    for t in s.view.inputs:
        try:
            hdr = npy_header(s, t)
            shapes[t.id] = hdr[0] if hdr[0] and len(hdr[0]) == len(t.axes) else None
        except NeedsFiles:
            shapes[t.id] = None
    for t in s.view.inputs:
        halo = _input_halo(s, t)
        for i, a in enumerate(t.axes):
            if a.type != "space":
                continue
            h = halo.get(a.id, 0.0)
            image = shapes[t.id][i] if shapes[t.id] else (a.size if a.kind == "fixed" else a.min)
            if image is None:
                continue
            tile = jdll_tile(a, image, h)
            checked += 1
            if tile - 2 * h <= 0:
                problems.append(f"{t.id}.{a.id}: tile {tile} leaves nothing inside the halo {h:g}")
            if shapes[t.id] and tile > 3 * image:
                problems.append(f"{t.id}.{a.id}: tile {tile} > 3 x the image ({image})")
            if a.kind == "param" and a.min is not None and tile < a.min:
                problems.append(f"{t.id}.{a.id}: JDLL's tile {tile} (floor((S + 2 halo) / step) * step) is "
                                f"below min {a.min}")
    if problems:
        yield FAILED, join_list(problems)
    elif checked:
        where = "the test input" if all(shapes.values()) else "the smallest valid input"
        yield PASSED, f"JDLL's tiles fit {where} ({checked} axes)"
    else:
        yield NOT_APPLICABLE, "no spatial input axis"


@jdll_rule("D19", title='config.deepimagej',
           fix='Write config.deepimagej.allow_tiling and pyramidal_model as booleans (allow_tiling: true).', tools=("deepimagej",))
def d19(s: Subject) -> Iterator[tuple]:
    dij = s.view.config.get("deepimagej")
    if dij is None:
        yield NOT_APPLICABLE, "no config.deepimagej"
        return
    if not isinstance(dij, Mapping):
        yield FAILED, "config.deepimagej is not a mapping"
        return
    problems = [f"{k} is {dij[k]!r}, not a boolean" for k in ("allow_tiling", "pyramidal_model")
                if k in dij and not isinstance(dij[k], bool)]
    param = [f"{t.id}.{a.id}" for t in s.view.inputs for a in t.axes if a.kind == "param" and a.type == "space"]
    if dij.get("allow_tiling") is not True and param and not problems:
        problems.append(f"allow_tiling is {'missing' if 'allow_tiling' not in dij else dij['allow_tiling']} "
                        f"(false), which breaks the parametrized inputs {param}")
    if problems:
        yield FAILED, "config.deepimagej: " + "; ".join(problems)
    else:
        yield PASSED, f"config.deepimagej allow_tiling {dij.get('allow_tiling')!r}"


# ------------------------------------------------------------------------------------ processing


def _procs(s: Subject):
    for t in s.view.tensors:
        for p in t.procs:
            yield t, p


@jdll_rule("D20", title='processing operations',
           fix='Use only binarize, clip, scale_linear, scale_range, zero_mean_unit_variance, fixed_zero_mean_unit_variance, sigmoid; move other steps into the network.')
def d20(s: Subject) -> Iterator[tuple]:
    bad = sorted({f"{p.id} ({t.role} {t.id})" for t, p in _procs(s) if p.id not in OPS and p.id != "ensure_dtype"})
    if bad:
        yield FAILED, f"processing JDLL does not implement (it throws): {', '.join(bad)}"
    else:
        n = sum(1 for _ in _procs(s))
        yield PASSED, f"{n} processing step(s), all implemented (ensure_dtype is skipped)" if n else "no processing"


@jdll_rule("D21", title='processing kwargs',
           fix='Pass only the kwargs JDLL accepts for each op (clip: both min and max; mean/std only with mode fixed).')
def d21(s: Subject) -> Iterator[tuple]:
    problems = []
    for t, p in _procs(s):
        if p.id not in KWARGS:
            continue  # D20 reports it; ensure_dtype is skipped with its kwargs
        if not isinstance(p.kwargs, Mapping):
            problems.append(f"{p.id} on {t.id}: kwargs is not a mapping")
            continue
        kw = p.kw
        unknown = sorted(set(kw) - KWARGS[p.id] - {"mode"})
        if unknown:
            problems.append(f"{p.id} on {t.id}: unknown kwargs {unknown}")
        if p.id == "clip" and not {"min", "max"} <= set(kw):
            problems.append(f"clip on {t.id} needs both min and max")
        if p.id == "zero_mean_unit_variance" and ({"mean", "std"} & set(kw)) and kw.get("mode") != "fixed":
            problems.append(f"zero_mean_unit_variance on {t.id}: mean/std only with mode: fixed")
    if problems:
        yield FAILED, join_list(problems) + " (unknown kwargs throw)"
    else:
        yield PASSED, "processing kwargs all accepted"


_SAFE_AXES = {"x", "y", "z", "channel"}


def _axes_names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value in _SAFE_AXES or len(value) > 1 and value not in "xyzc" else list(value)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


@jdll_rule("D22", title='processing axes',
           fix='Name only x, y, z, channel in processing axes (never batch or time).')
def d22(s: Subject) -> Iterator[tuple]:
    bad = []
    for t, p in _procs(s):
        for key in ("axes", "axis"):
            if key not in p.kw:
                continue
            v = p.kw[key]
            names = list(v) if isinstance(v, str) and not s.view.v05 else _axes_names(v)
            safe = _SAFE_AXES | ({"c"} if not s.view.v05 else set())
            unsafe = [n for n in names if n not in safe]
            if unsafe:
                bad.append(f"{p.id} on {t.id}: {key} {unsafe}")
    if bad:
        yield FAILED, f"processing axes JDLL matches letter by letter (only x, y, z, channel are safe): {join_list(bad)}"
    else:
        yield PASSED, "processing axes among x, y, z, channel"


def _is_list(v: Any) -> bool:
    return isinstance(v, (list, tuple))


@jdll_rule("D23", title='list parameters',
           fix='Use scalar mean/std/threshold/gain/offset.')
def d23(s: Subject) -> Iterator[tuple]:
    bad = []
    for t, p in _procs(s):
        kw = p.kw
        fixed = p.id == "fixed_zero_mean_unit_variance" or (p.id == "zero_mean_unit_variance"
                                                             and kw.get("mode") == "fixed")
        if fixed and (_is_list(kw.get("mean")) or _is_list(kw.get("std"))):
            axis = kw.get("axis")
            first = t.axes[0].id if t.axes else None
            if s.view.v05 and axis is not None and axis == first:
                continue
            where = f"axis {axis!r}, not the first axis {first!r}" if s.view.v05 else \
                f"axes {kw.get('axes')!r} (format {s.view.format_version})"
            bad.append(f"{p.id} on {t.id}: list mean/std (length {len(kw.get('mean') or kw.get('std') or [])}) "
                       f"with {where}: JDLL crashes, even for one element")
        if p.id == "binarize" and _is_list(kw.get("threshold")):
            bad.append(f"binarize on {t.id}: list threshold crashes JDLL")
        if p.id == "scale_linear":
            for k in ("gain", "offset"):
                v = kw.get(k)
                if _is_list(v) and len(set(map(str, v))) > 1:
                    bad.append(f"scale_linear on {t.id}: list {k} {v} (JDLL uses the first element only)")
    if bad:
        yield FAILED, join_list(bad) + "; use scalars"
    else:
        yield PASSED, "processing parameters JDLL handles"


def _size_for(s: Subject, t: TensorView, a: AxisView) -> int | None:
    if a.type == "batch":
        return 1
    if a.type == "channel":
        return a.size if a.size is not None else (len(a.channel_names) if a.channel_names else None)
    if a.kind == "fixed":
        return a.size
    if a.kind == "param":
        return a.min
    if a.kind == "ref":
        ref_t, ref_a = _ref_axis(s, a)
        return _size_for(s, ref_t, ref_a) if ref_t is not None and ref_a is not None and ref_a.kind != "ref" else None
    return None


@jdll_rule("D24", title='zero_mean_unit_variance over a subset',
           fix='Normalise over every non-singleton axis, or per channel inside the network.')
def d24(s: Subject) -> Iterator[tuple]:
    bad, seen = [], 0
    for t, p in _procs(s):
        if p.id != "zero_mean_unit_variance" or p.kw.get("mode") == "fixed":
            continue
        seen += 1
        v = p.kw.get("axes")
        if v is None:
            continue  # over the whole tensor: what JDLL does anyway
        names = set(list(v) if isinstance(v, str) and not s.view.v05 else _axes_names(v))
        names = {({"c": "channel", "b": "batch"}.get(n, n)) for n in names}
        kept = [a for a in t.axes if a.id not in names and a.type not in ("batch",)]
        sizes = [_size_for(s, t, a) for a in kept]
        product = 1
        for n in sizes:
            product *= n if n else 2  # unknown sizes: assume more than one
        if product > 1:
            bad.append(f"{t.id}: per-sample over {sorted(names)} keeps {[a.id for a in kept]} (sizes {sizes})")
    if bad:
        yield FAILED, "JDLL applies zero_mean_unit_variance over the whole tensor: " + join_list(bad)
    elif seen:
        yield PASSED, "zero_mean_unit_variance reduces over everything but singleton axes"
    else:
        yield NOT_APPLICABLE, "no zero_mean_unit_variance"


@jdll_rule("D25", title='percentile and threshold numerics',
           fix="Expect JDLL's percentiles (no interpolation) and >= thresholds; check the values in DeepImageJ.")
def d25(s: Subject) -> Iterator[tuple]:
    from ._simulate import percentile_deviation

    ops = [(t, p) for t, p in _procs(s) if p.id in ("scale_range", "binarize")]
    if not ops:
        yield NOT_APPLICABLE, "no scale_range or binarize"
        return
    binar = [f"binarize on {t.id}" for t, p in ops if p.id == "binarize"]
    if binar:
        yield PASSED, f"{', '.join(binar)}: JDLL thresholds with >= (simulated in deepimagej.simulation)"
    for t, p in ops:
        if p.id != "scale_range" or t.role != "input":
            continue
        arr = s.once(f"npy:{t.test}", lambda: _load_npy(s, t))
        dev = percentile_deviation(arr, t, p, v05=s.view.v05)
        msg = f"scale_range on {t.id}: JDLL's percentiles (sorted[int(n * p)]) move the normalised test input " \
              f"by up to {dev:.3g}"
        yield (WARNING if dev > 1e-4 else PASSED), msg, {"deviation": dev}


def _load_npy(s: Subject, t: TensorView):
    import numpy as np

    return np.load(s.file(t.test, f"test tensor of {t.id!r}"), allow_pickle=False)


# --------------------------------------------------------------------------------------- test data


@jdll_rule("D26", title='test tensors',
           fix='Ship a .npy test tensor per input and output (int8..int64, uint8..uint32, float32/64), ndim = axes.')
def d26(s: Subject) -> Iterator[tuple]:
    problems = []
    for t in s.view.tensors:
        if not t.test:
            problems.append(f"{t.role} {t.id!r} has no test tensor")
        elif not basename_of(t.test).lower().endswith(".npy"):
            problems.append(f"{t.role} {t.id!r} test tensor {t.test} is not .npy")
    if problems:
        yield FAILED, "; ".join(problems)
        return
    try:
        for t in s.view.tensors:
            shape, dtype = npy_header(s, t)
            if dtype not in TEST_DTYPES:
                problems.append(f"{t.role} {t.id!r} test tensor is {dtype} (JDLL reads {sorted(TEST_DTYPES)})")
            if len(shape) != len(t.axes):
                problems.append(f"{t.role} {t.id!r} test tensor has {len(shape)} dims for {len(t.axes)} axes")
    except NeedsFiles as e:
        yield PASSED, "a .npy test tensor per input and output"
        yield SKIPPED, f"their dtypes and dims are not read ({e})"
        return
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "a .npy test tensor per input and output; dtypes and dims fit"


@jdll_rule("D27", title='sample tensor',
           fix="Omit sample_tensor, or make it an ImageJ hyperstack TIFF (float32/uint8/uint16) of the test input; make DeepImageJ's prediction match the test output.", tools=("deepimagej",))
def d27(s: Subject) -> Iterator[tuple]:
    import numpy as np

    with_sample = [t for t in s.view.inputs if t.sample]
    if not with_sample:
        yield PASSED, "no sample tensor: the zoo CI feeds the test input"
        return
    problems = []
    for t in with_sample:
        if not basename_of(t.sample).lower().endswith((".tif", ".tiff")):
            problems.append(f"input {t.id!r} sample {t.sample} is not a TIFF: the zoo CI feeds it to DeepImageJ "
                            "and compares the result with the test output")
    if problems:
        yield FAILED, "; ".join(problems)
        return
    try:
        import tifffile

        for t in with_sample:
            sample = tifffile.imread(str(s.file(t.sample, f"sample tensor of {t.id!r}")))
            test = s.once(f"npy:{t.test}", lambda: _load_npy(s, t))
            if str(sample.dtype) not in ("float32", "uint8", "uint16"):
                problems.append(f"input {t.id!r} sample is {sample.dtype} (ImageJ reads float32, uint8, uint16)")
            a, b = np.squeeze(sample), np.squeeze(test)
            if a.shape != b.shape or not np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-6,
                                                     atol=1e-6, equal_nan=True):
                problems.append(f"input {t.id!r} sample holds other data than the test input "
                                f"({a.shape} vs {b.shape})")
    except NeedsFiles as e:
        yield SKIPPED, f"the TIFF sample is not compared with the test input ({e})"
        return
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "the TIFF samples hold the test inputs"


@jdll_rule("D28", title='test input is one tile',
           fix='Make the test input one valid tile: each spatial size >= min and a multiple of step.', tools=("deepimagej",))
def d28(s: Subject) -> Iterator[tuple]:
    problems = []
    for t in s.view.inputs:
        shape, _ = npy_header(s, t)
        if len(shape) != len(t.axes):
            yield SKIPPED, f"the test input of {t.id!r} has {len(shape)} dims for {len(t.axes)} axes (D26)"
            return
        for a, n in zip(t.axes, shape):
            if a.type != "space":
                continue
            if a.kind == "fixed" and a.size is not None and n != a.size:
                problems.append(f"{t.id}.{a.id} is {n}, the fixed size is {a.size}")
            elif a.kind == "param" and a.min is not None and (n < a.min or (a.step and n % a.step)):
                problems.append(f"{t.id}.{a.id} is {n}: needs >= {a.min} and a multiple of {a.step}")
    if problems:
        yield FAILED, "; ".join(problems) + " (the test input must be one exact tile)"
    else:
        yield PASSED, "the test input is one exact tile"


@jdll_rule("D29", title='output ids',
           fix="Use output ids that are safe file names, none ending in '_' + another output id.", tools=("deepimagej",))
def d29(s: Subject) -> Iterator[tuple]:
    ids = [t.id for t in s.view.outputs]
    problems = [f"{i!r} is not a safe file name" for i in ids if not _SAFE_NAME.match(i)]
    problems += [f"{a!r} ends with '_{b}'" for a in ids for b in ids if a != b and a.endswith(f"_{b}")]
    if problems:
        yield FAILED, "; ".join(problems) + " (the zoo CI finds outputs by the suffix _<id>.tif)"
    else:
        yield PASSED, "output ids are safe file names"


#: rule D0 (JDLL reads the description) is the readers' (:mod:`.readers`); its title and fix, as JDLL's rules
D0_TITLE = "JDLL reads the description (ModelDescriptor)"
D0_FIX = 'Write every field JDLL casts with the type it casts to (documentation and covers as plain path strings, format_version, name, id as strings): re-export with bioimgzoo, or fix the field named.'
