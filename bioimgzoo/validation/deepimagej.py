"""Static DeepImageJ (Fiji) / JDLL compatibility rules, one result per rule.

Fiji and Java cannot run here, so compatibility is predicted from the
package alone, by the 29 rules in ``shared/docs/deepimagej-rules.md``
(summarised from the JDLL 0.6.1 and DeepImageJ sources and the zoo's
DeepImageJ CI).  :func:`check_deepimagej` returns one :class:`RuleResult`
per rule, in order, in the one status vocabulary of :mod:`bioimgzoo.validation`:
``passed``, ``failed`` (DeepImageJ will not run it), ``warning`` (it may not,
or may compute something else), ``not-applicable`` (the package has nothing
the rule is about) or ``skipped`` (a file the rule needs could not be read).

The rules are also registered as the checks ``deepimagej.D1`` .. ``deepimagej.D29``
of the ``deepimagej`` family, each with its fix, so that
:func:`~bioimgzoo.validation.check_package` runs them like any other check.

Rules about how the description is *written* (file names, explicit axis
ids, processing kwargs, ``config.deepimagej``, the ONNX opset) read the raw
``rdf.yaml`` (:attr:`bioimgzoo.package.Package.raw`); rules about what it
*means* (axes, sizes, halo, processing) read the description upgraded to
format 0.5, so 0.4 packages are checked too.  Rules 9, 10 and 26-28 read
small files: the ONNX graph (not its weights) and the test tensors.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .._text import markdown_safe, terminal_safe
from ._registry import (FAILED, NOT_APPLICABLE, PASSED, SKIPPED, STAGE_CONSUMERS, WARNING, Check, Finding, Status,
                        register_family)
from .files import raw_file_refs as _raw_file_refs

__all__ = ["RuleResult", "RULES", "FIXES", "check_deepimagej", "format_results", "has_failures", "rule_results"]


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule (``status`` is one of :data:`~bioimgzoo.validation._registry.STATUSES`)."""

    rule: int
    name: str
    status: Status
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


#: rule number -> short name (numbers follow deepimagej-rules.md)
RULES: dict[int, str] = {
    1: "rdf.yaml at the root",
    2: "files flat at the root",
    3: "id or nickname",
    4: "covers",
    5: "one input (and one output)",
    6: "Java-runnable weights",
    7: "TorchScript version",
    8: "ONNX opset",
    9: "inputs float32, output count",
    10: "output data types",
    11: "explicit axis types and ids",
    12: "axis count and kinds",
    13: "input has x, y and channel",
    14: "batch size 1",
    15: "input sizes fixed or min/step",
    16: "min is a multiple of step",
    17: "output sizes",
    18: "size reference scale and offset",
    19: "halo smaller than half the tile",
    20: "processing operations",
    21: "processing kwargs",
    22: "no batch in processing axes",
    23: "scalar processing parameters",
    24: "zero_mean_unit_variance with channels",
    25: "config.deepimagej",
    26: "test tensors",
    27: "sample tensor",
    28: "test input is one tile",
    29: "output ids are file names",
}

_JDLL_OPS = {"binarize", "clip", "scale_linear", "scale_range", "zero_mean_unit_variance",
             "fixed_zero_mean_unit_variance", "sigmoid", "ensure_dtype"}
_JDLL_KWARGS = {
    "binarize": {"threshold"},
    "clip": {"min", "max"},
    "scale_linear": {"gain", "offset", "axes"},
    "scale_range": {"min_percentile", "max_percentile", "axes", "reference_tensor"},
    "zero_mean_unit_variance": {"mean", "std", "axes", "eps"},
    "fixed_zero_mean_unit_variance": {"mean", "std", "axes", "eps"},
    "sigmoid": set(),
    "ensure_dtype": {"dtype"},
}
_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64"}
_JAVA_FORMATS = ("torchscript", "onnx", "tensorflow_saved_model_bundle")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_ONNX_ELEM = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


class _Ctx:
    def __init__(self, pkg: Any):
        self.pkg = pkg
        self.raw: dict = dict(pkg.raw or {})
        self.descr = pkg.descr
        fv = str(getattr(pkg, "original_format_version", self.raw.get("format_version", "")))
        self.v05 = fv.startswith("0.5")
        self._arrays: dict[str, Any] = {}

    def array(self, file_descr: Any) -> np.ndarray:
        key = str(file_descr.source)
        if key not in self._arrays:
            path = self.pkg.file(file_descr)
            self._arrays[key] = np.load(path, allow_pickle=False)
        return self._arrays[key]


def _axis_letter(a: Any) -> str:
    return {"batch": "b", "channel": "c"}.get(a.type, str(a.id))


def _sizes_ref(size: Any) -> bool:
    return type(size).__name__ == "SizeReference"


def _param(size: Any) -> bool:
    return type(size).__name__ == "ParameterizedSize"


def _procs(descr: Any) -> Iterable[tuple[str, Any, Any]]:
    for t in descr.inputs:
        for p in t.preprocessing:
            yield "input", t, p
    for t in descr.outputs:
        for p in t.postprocessing:
            yield "output", t, p


def _raw_tensors(raw: Mapping, kind: str) -> list[dict]:
    return [t for t in (raw.get(kind) or []) if isinstance(t, Mapping)]


def _raw_procs(raw: Mapping) -> Iterable[tuple[str, dict]]:
    for kind, key in (("inputs", "preprocessing"), ("outputs", "postprocessing")):
        for t in _raw_tensors(raw, kind):
            tid = t.get("id") or t.get("name") or "?"
            for p in t.get(key) or []:
                if isinstance(p, Mapping):
                    yield str(tid), dict(p)


def _proc_id(p: Mapping) -> str:
    return str(p.get("id") or p.get("name") or "?")


# --------------------------------------------------------------------------------------- rules


def _r1(c: _Ctx) -> tuple[Status, str]:
    src = c.pkg.source
    rdf_name = getattr(src, "rdf_name", None)
    prefix = getattr(src, "_prefix", "")
    if rdf_name is None:
        try:
            rdf_name = src.read_rdf()[1]
        except Exception:
            return SKIPPED, "cannot tell the description's file name from this source"
    if prefix:
        return FAILED, f"{rdf_name} sits in the folder {prefix!r} of the zip, not at its root: zip the files themselves"
    if rdf_name != "rdf.yaml":
        return FAILED, f"the description is named {rdf_name!r}; DeepImageJ reads only 'rdf.yaml'"
    return PASSED, "rdf.yaml at the root"


def _r2(c: _Ctx) -> tuple[Status, str]:
    refs = _raw_file_refs(c.raw)
    bad = []
    for where, ref in refs:
        if _URL.match(ref):
            bad.append(f"{where} is a URL ({ref})")
        elif len(PurePosixPath(ref.replace("\\", "/")).parts) != 1 or ref.startswith(("/", ".")):
            bad.append(f"{where} = {ref!r} is not a plain file name")
    if bad:
        return FAILED, "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else "") + \
            ": put every file beside rdf.yaml and reference it by name"
    return PASSED, f"{len(refs)} file references, all plain names"


def _r3(c: _Ctx) -> tuple[Status, str]:
    if not c.v05:
        return NOT_APPLICABLE, "format 0.4 package (the rule concerns format 0.5)"
    nickname = ((c.raw.get("config") or {}).get("bioimageio") or {}).get("nickname") \
        if isinstance(c.raw.get("config"), Mapping) else None
    if c.raw.get("id") or nickname:
        return PASSED, f"id {c.raw.get('id') or nickname!r}"
    return FAILED, "neither 'id' nor 'config.bioimageio.nickname' is set: DeepImageJ's loader crashes and hides " \
                   "the model"


def _r4(c: _Ctx) -> tuple[Status, str]:
    covers = c.raw.get("covers")
    if isinstance(covers, list) and covers:
        return PASSED, f"{len(covers)} cover(s)"
    return FAILED, "'covers' is missing or empty: add at least one cover image"


def _r5(c: _Ctx) -> tuple[Status, str]:
    n_in, n_out = len(c.descr.inputs), len(c.descr.outputs)
    if n_in != 1:
        return FAILED, f"{n_in} inputs: DeepImageJ runs models with exactly one input"
    if n_out != 1:
        return WARNING, f"{n_out} outputs: DeepImageJ prefers exactly one output"
    return PASSED, "one input, one output"


def _r6(c: _Ctx) -> tuple[Status, str]:
    formats = [wf for wf, w in c.descr.weights if w is not None]
    java = [wf for wf in formats if wf in _JAVA_FORMATS]
    if java:
        return PASSED, f"Java-runnable weights: {', '.join(java)}"
    if formats == ["pytorch_state_dict"]:
        return WARNING, "only pytorch_state_dict weights: they run only in DeepImageJ's fixed embedded Python " \
                       "environment; add torchscript or onnx"
    return FAILED, f"weights {formats}: DeepImageJ needs torchscript, onnx or tensorflow_saved_model_bundle"


def _version_tuple(v: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(v))
    return tuple(int(n) for n in nums[:3])


def _r7(c: _Ctx) -> tuple[Status, str]:
    ts = c.descr.weights.torchscript
    if ts is None:
        return NOT_APPLICABLE, "no torchscript weights"
    raw_ts = ((c.raw.get("weights") or {}).get("torchscript") or {})
    version = raw_ts.get("pytorch_version") if isinstance(raw_ts, Mapping) else None
    if not version:
        return FAILED, "torchscript weights without 'pytorch_version'"
    if _version_tuple(version)[:2] > (2, 0):
        note = " (ONNX weights are shipped too)" if c.descr.weights.onnx is not None else \
            "; ship ONNX weights as well"
        return WARNING, f"saved by torch {version}; DeepImageJ bundles libtorch up to 2.0.x, which may not load " \
                       f"it{note}"
    return PASSED, f"pytorch_version {version}"


def _r8(c: _Ctx) -> tuple[Status, str]:
    if c.descr.weights.onnx is None:
        return NOT_APPLICABLE, "no onnx weights"
    raw_onnx = ((c.raw.get("weights") or {}).get("onnx") or {})
    opset = raw_onnx.get("opset_version") if isinstance(raw_onnx, Mapping) else None
    if opset is None:
        return FAILED, "onnx weights without 'opset_version'"
    try:
        opset = int(opset)
    except (TypeError, ValueError):
        return FAILED, f"opset_version {opset!r} is not a number"
    if opset > 18:
        return FAILED, f"opset {opset} > 18: DeepImageJ's ONNX Runtime cannot read it; export with opset 17"
    if opset == 18:
        return WARNING, "opset 18: readable only by newer Java ONNX Runtimes; 17 is the safe choice"
    return PASSED, f"opset {opset}"


def _onnx_io(c: _Ctx) -> tuple[list[str], list[str]] | None:
    """Element types of the ONNX graph's real inputs and outputs, or None if unreadable."""
    w = c.descr.weights.onnx
    if w is None:
        return None
    if "onnx_io" not in c._arrays:
        try:
            import onnx

            model = onnx.load(str(c.pkg.file(w)), load_external_data=False)
            inits = {i.name for i in model.graph.initializer}
            ins = [_ONNX_ELEM.get(i.type.tensor_type.elem_type, "?") for i in model.graph.input
                   if i.name not in inits]
            outs = [_ONNX_ELEM.get(o.type.tensor_type.elem_type, "?") for o in model.graph.output]
            c._arrays["onnx_io"] = (ins, outs)
        except Exception:
            c._arrays["onnx_io"] = None
    return c._arrays["onnx_io"]


def _declared_type(t: Any) -> str:
    data = t.data
    if isinstance(data, (list, tuple)):
        data = data[0]
    return str(data.type)


def _r9(c: _Ctx) -> tuple[Status, str]:
    n_out = len(c.descr.outputs)
    io = _onnx_io(c)
    if io is not None:
        ins, outs = io
        if len(ins) != len(c.descr.inputs):
            return FAILED, f"the ONNX graph takes {len(ins)} inputs but {len(c.descr.inputs)} are declared"
        if any(t != "float32" for t in ins):
            return FAILED, f"the ONNX graph's inputs are {ins}; DeepImageJ feeds float32"
        if len(outs) != n_out:
            return FAILED, f"the ONNX graph returns {len(outs)} outputs but {n_out} are declared"
        return PASSED, f"ONNX graph: {len(ins)} float32 input(s), {len(outs)} output(s) as declared"
    declared = [_declared_type(t) for t in c.descr.inputs]
    if any(d != "float32" for d in declared) and not any(
            p.id == "ensure_dtype" for t in c.descr.inputs for p in t.preprocessing):
        return WARNING, f"inputs declared as {declared}; DeepImageJ feeds float32 (network not inspected)"
    return PASSED, f"{len(c.descr.inputs)} input(s), {n_out} output(s) declared (network not inspected)"


def _r10(c: _Ctx) -> tuple[Status, str]:
    declared = [_declared_type(t) for t in c.descr.outputs]
    bad = [d for d in declared if d not in _DTYPES]
    if bad:
        return FAILED, f"output data type(s) {bad} are not readable by DeepImageJ (use one of {sorted(_DTYPES)})"
    io = _onnx_io(c)
    if io is not None:
        outs = io[1]
        diff = [(t.id, d, o) for t, d, o in zip(c.descr.outputs, declared, outs) if d != o]
        if diff:
            return FAILED, "; ".join(f"output {i!r} declared {d} but the network emits {o}" for i, d, o in diff) \
                + " (ensure_dtype is ignored by DeepImageJ)"
        return PASSED, f"declared output types {declared} match the ONNX graph"
    try:
        actual = [str(c.array(t.test_tensor).dtype) if t.test_tensor is not None else None
                  for t in c.descr.outputs]
    except Exception as e:
        return SKIPPED, f"cannot read the test outputs to compare types ({type(e).__name__})"
    diff = [(t.id, d, a) for t, d, a in zip(c.descr.outputs, declared, actual) if a is not None and a != d]
    if diff:
        return FAILED, "; ".join(f"output {i!r} declared {d} but its test tensor is {a}" for i, d, a in diff)
    return PASSED, f"declared output types {declared} (checked against the test tensors)"


def _r11(c: _Ctx) -> tuple[Status, str]:
    problems = []
    if c.v05:
        for kind in ("inputs", "outputs"):
            for t in _raw_tensors(c.raw, kind):
                tid = t.get("id", "?")
                for i, a in enumerate(t.get("axes") or []):
                    if not isinstance(a, Mapping) or "type" not in a:
                        problems.append(f"{tid} axis {i} has no type")
                        continue
                    typ, aid = a["type"], a.get("id")
                    if typ == "space":
                        if aid is None:
                            problems.append(f"{tid} space axis {i} has no explicit id")
                        elif aid not in ("x", "y", "z"):
                            problems.append(f"{tid} space axis id {aid!r} is not x, y or z")
                    elif typ == "time" and aid != "t":
                        problems.append(f"{tid} time axis id is {aid!r}, not 't'")
                    elif typ == "index":
                        problems.append(f"{tid} has an index axis")
    else:
        for t in c.descr.inputs + c.descr.outputs:
            for a in t.axes:
                if a.type == "index":
                    problems.append(f"{t.id} has an index axis")
    if problems:
        return FAILED, "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
    return PASSED, "every axis typed; space ids x/y/z, time id t"


def _r12(c: _Ctx) -> tuple[Status, str]:
    problems = []
    for t in list(c.descr.inputs) + list(c.descr.outputs):
        letters = [_axis_letter(a) for a in t.axes]
        if len(letters) > 5:
            problems.append(f"{t.id} has {len(letters)} axes (max 5)")
        types = [a.type for a in t.axes]
        if "batch" in types and "time" in types:
            problems.append(f"{t.id} has both batch and time axes")
        if len(set(letters)) != len(letters):
            problems.append(f"{t.id} repeats an axis")
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "at most 5 axes, no batch+time, no repeats"


def _r13(c: _Ctx) -> tuple[Status, str]:
    problems = []
    for t in c.descr.inputs:
        types = {a.type: a for a in t.axes}
        ids = {str(a.id) for a in t.axes if a.type == "space"}
        missing = [x for x in ("x", "y") if x not in ids]
        if missing:
            problems.append(f"input {t.id!r} lacks space axis {'/'.join(missing)}")
        if "channel" not in types:
            problems.append(f"input {t.id!r} has no channel axis (JDLL crashes)")
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "inputs have x, y and channel"


def _r14(c: _Ctx) -> tuple[Status, str]:
    for t in list(c.descr.inputs) + list(c.descr.outputs):
        for a in t.axes:
            if a.type == "batch" and a.size not in (None, 1):
                return FAILED, f"{t.id!r} fixes the batch size to {a.size}; DeepImageJ runs batch size 1"
    return PASSED, "batch size 1 is valid"


def _r15(c: _Ctx) -> tuple[Status, str]:
    problems = []
    for t in c.descr.inputs:
        for a in t.axes:
            if a.type in ("batch", "channel"):
                continue
            if _sizes_ref(a.size):
                problems.append(f"input {t.id!r} axis {a.id} is sized by reference to {a.size.tensor_id}."
                                f"{a.size.axis_id}")
    if problems:
        return FAILED, "; ".join(problems) + ": DeepImageJ needs fixed sizes or {min, step} on inputs"
    return PASSED, "input sizes are fixed or {min, step}"


def _r16(c: _Ctx) -> tuple[Status, str]:
    problems, seen = [], 0
    for t in c.descr.inputs:
        for a in t.axes:
            if a.type not in ("batch", "channel") and _param(a.size):
                seen += 1
                if a.size.min % a.size.step:
                    problems.append(f"input {t.id!r} axis {a.id}: min {a.size.min} is not a multiple of step "
                                    f"{a.size.step}")
    if not seen:
        return NOT_APPLICABLE, "no {min, step} input sizes"
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, f"{seen} parameterized axes, min % step == 0"


def _r17(c: _Ctx) -> tuple[Status, str]:
    problems = []
    inputs = {t.id: t for t in c.descr.inputs}
    for t in c.descr.outputs:
        refs = set()
        for a in t.axes:
            if a.type == "batch":
                continue
            s = a.size
            if isinstance(s, int):
                continue
            if _sizes_ref(s):
                ref_t = inputs.get(s.tensor_id)
                if ref_t is None:
                    problems.append(f"output {t.id!r} axis {a.id} references {s.tensor_id}, not an input")
                    continue
                ref_a = next((x for x in ref_t.axes if x.id == s.axis_id), None)
                if ref_a is None or ref_a.type not in ("space", "time"):
                    problems.append(f"output {t.id!r} axis {a.id} references {s.tensor_id}.{s.axis_id}, "
                                    "not an x/y/z/t axis")
                refs.add(s.tensor_id)
            else:
                problems.append(f"output {t.id!r} axis {a.id} has a {type(s).__name__} size")
        if len(refs) > 1:
            problems.append(f"output {t.id!r} references several inputs ({sorted(refs)})")
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "output sizes fixed or referencing one input's spatial axes"


def _r18(c: _Ctx) -> tuple[Status, str]:
    flagged = []
    inputs = {t.id: t for t in c.descr.inputs}
    for t in c.descr.outputs:
        for a in t.axes:
            if a.type == "batch" or not _sizes_ref(a.size):
                continue
            ref_t = inputs.get(a.size.tensor_id)
            ref_a = next((x for x in ref_t.axes if x.id == a.size.axis_id), None) if ref_t else None
            ratio = (getattr(ref_a, "scale", 1.0) or 1.0) / (getattr(a, "scale", 1.0) or 1.0)
            if abs(ratio - 1.0) > 1e-9 or a.size.offset:
                flagged.append(f"output {t.id!r} axis {a.id}: scale {ratio:g}, offset {a.size.offset}")
    if flagged:
        return WARNING, "; ".join(flagged) + ": JDLL computes such sizes differently than the spec; check the " \
                                           "output size in Fiji"
    return PASSED, "no scaled or offset size references"


def _r19(c: _Ctx) -> tuple[Status, str]:
    problems, checked = [], 0
    inputs = {t.id: t for t in c.descr.inputs}
    for t in c.descr.outputs:
        for a in t.axes:
            halo = getattr(a, "halo", 0) or 0
            if not halo or not _sizes_ref(a.size):
                continue
            ref_t = inputs.get(a.size.tensor_id)
            ref_a = next((x for x in ref_t.axes if x.id == a.size.axis_id), None) if ref_t else None
            if ref_a is None:
                continue
            halo_in = halo * (getattr(a, "scale", 1.0) or 1.0) / (getattr(ref_a, "scale", 1.0) or 1.0)
            tile = ref_a.size.min if _param(ref_a.size) else ref_a.size if isinstance(ref_a.size, int) else None
            if tile is None:
                continue
            checked += 1
            if not 2 * halo_in < tile:
                problems.append(f"output {t.id!r} axis {a.id}: 2 * halo ({2 * halo_in:g} input pixels) >= smallest "
                                f"tile {tile}")
    if problems:
        return FAILED, "; ".join(problems)
    if not checked:
        return NOT_APPLICABLE, "no halo declared"
    return PASSED, f"{checked} halo(s) below half the smallest tile"


def _r20(c: _Ctx) -> tuple[Status, str]:
    bad = sorted({f"{p.id} ({kind} {t.id})" for kind, t, p in _procs(c.descr) if p.id not in _JDLL_OPS})
    if bad:
        return FAILED, f"processing not implemented in JDLL: {', '.join(bad)}"
    n = sum(1 for _ in _procs(c.descr))
    return PASSED, f"{n} processing step(s), all known to JDLL" if n else "no processing"


def _r21(c: _Ctx) -> tuple[Status, str]:
    problems = []
    for tid, p in _raw_procs(c.raw):
        op = _proc_id(p)
        if op not in _JDLL_KWARGS:
            continue  # rule 20 reports it
        kwargs = p.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            problems.append(f"{op} on {tid}: kwargs is not a mapping")
            continue
        unknown = sorted(set(kwargs) - _JDLL_KWARGS[op])
        if unknown:
            problems.append(f"{op} on {tid}: unknown kwargs {unknown}")
        if op == "clip" and not {"min", "max"} <= set(kwargs):
            problems.append(f"clip on {tid} needs both min and max")
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "processing kwargs all known to JDLL"


def _r22(c: _Ctx) -> tuple[Status, str]:
    bad = []
    for kind, t, p in _procs(c.descr):
        axes = getattr(p.kwargs, "axes", None) if hasattr(p, "kwargs") else None
        if axes and any(str(a) in ("batch", "b") for a in axes):
            bad.append(f"{p.id} on {t.id}")
    if bad:
        return FAILED, f"'batch' in processing axes: {', '.join(bad)}"
    return PASSED, "no processing over the batch axis"


def _r23(c: _Ctx) -> tuple[Status, str]:
    bad = []
    for tid, p in _raw_procs(c.raw):
        kwargs = p.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            continue
        for k in ("gain", "offset", "mean", "std"):
            if isinstance(kwargs.get(k), (list, tuple)):
                bad.append(f"{_proc_id(p)}.{k} on {tid}")
    if bad:
        return FAILED, f"per-channel (list) parameters crash JDLL: {', '.join(bad)}; use scalars"
    return PASSED, "scalar processing parameters"


def _r24(c: _Ctx) -> tuple[Status, str]:
    flagged = []
    for kind, t, p in _procs(c.descr):
        if p.id != "zero_mean_unit_variance":
            continue
        chan = next((a for a in t.axes if a.type == "channel"), None)
        n_chan = len(chan.channel_names) if chan is not None else 1
        axes = [str(a) for a in (getattr(p.kwargs, "axes", None) or [])]
        if n_chan > 1 and "channel" not in axes:
            flagged.append(f"{t.id} ({n_chan} channels, axes {axes or 'all'})")
    if flagged:
        return WARNING, f"zero_mean_unit_variance per channel over x/y: JDLL computes other values: " \
                       f"{', '.join(flagged)}"
    return PASSED, "no per-channel zero_mean_unit_variance on multi-channel tensors"


def _r25(c: _Ctx) -> tuple[Status, str]:
    cfg = c.raw.get("config")
    dij = cfg.get("deepimagej") if isinstance(cfg, Mapping) else None
    if dij is None:
        return NOT_APPLICABLE, "no config.deepimagej"
    if not isinstance(dij, Mapping) or dij.get("allow_tiling") is not True:
        return FAILED, f"config.deepimagej.allow_tiling is {dij.get('allow_tiling') if isinstance(dij, Mapping) else dij!r}, " \
                       "must be the boolean true"
    return PASSED, "config.deepimagej.allow_tiling: true"


def _r26(c: _Ctx) -> tuple[Status, str]:
    problems = []
    for kind, tensors in (("input", c.descr.inputs), ("output", c.descr.outputs)):
        for t in tensors:
            if t.test_tensor is None:
                problems.append(f"{kind} {t.id!r} has no test tensor")
                continue
            if not str(t.test_tensor.source).lower().endswith(".npy"):
                problems.append(f"{kind} {t.id!r} test tensor is not a .npy file")
                continue
            try:
                arr = c.array(t.test_tensor)
            except Exception as e:
                return SKIPPED, f"cannot read the test tensor of {t.id!r} ({type(e).__name__}: {e})"
            if str(arr.dtype) not in _DTYPES:
                problems.append(f"{kind} {t.id!r} test tensor dtype {arr.dtype} (not readable by JDLL)")
            if arr.ndim != len(t.axes):
                problems.append(f"{kind} {t.id!r} test tensor has {arr.ndim} dims for {len(t.axes)} axes")
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "a .npy test tensor per input and output, dtypes and ndim fit"


def _r27(c: _Ctx) -> tuple[Status, str]:
    inputs = [t for t in c.descr.inputs if t.sample_tensor is not None]
    if not inputs:
        return NOT_APPLICABLE, "no sample tensors"
    problems = []
    for t in inputs:
        name = str(t.sample_tensor.source).lower()
        if not name.endswith((".tif", ".tiff")):
            problems.append(f"input {t.id!r} sample tensor {t.sample_tensor.source} is not a TIFF")
            continue
        try:
            import tifffile

            sample = tifffile.imread(str(c.pkg.file(t.sample_tensor)))
            test = c.array(t.test_tensor) if t.test_tensor is not None else None
        except Exception as e:
            return SKIPPED, f"cannot read the sample/test tensor of {t.id!r} ({type(e).__name__}: {e})"
        if str(sample.dtype) not in ("float32", "uint8", "uint16"):
            problems.append(f"input {t.id!r} sample tensor is {sample.dtype} (float32, uint8 or uint16 needed)")
        if test is not None:
            a, b = np.squeeze(sample), np.squeeze(test)
            if a.shape != b.shape or not np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-6,
                                                     atol=1e-6, equal_nan=True):
                problems.append(f"input {t.id!r} sample tensor holds other data than the test input")
    if problems:
        return FAILED, "; ".join(problems)
    return PASSED, "sample tensors are TIFFs of the test inputs"


def _r28(c: _Ctx) -> tuple[Status, str]:
    problems = []
    for t in c.descr.inputs:
        if t.test_tensor is None:
            return SKIPPED, f"input {t.id!r} has no test tensor"
        try:
            arr = c.array(t.test_tensor)
        except Exception as e:
            return SKIPPED, f"cannot read the test tensor of {t.id!r} ({type(e).__name__})"
        if arr.ndim != len(t.axes):
            return SKIPPED, "test tensor ndim does not match the axes (rule 26)"
        for a, n in zip(t.axes, arr.shape):
            if a.type not in ("space", "time"):
                continue
            if isinstance(a.size, int) and n != a.size:
                problems.append(f"{t.id}.{a.id} is {n}, fixed size is {a.size}")
            elif _param(a.size) and (n < a.size.min or n % a.size.step):
                problems.append(f"{t.id}.{a.id} is {n}: needs >= {a.size.min} and a multiple of {a.size.step}")
    if problems:
        return FAILED, "; ".join(problems) + " (DeepImageJ runs the test input as one tile)"
    return PASSED, "test input sizes are valid tile sizes"


def _r29(c: _Ctx) -> tuple[Status, str]:
    bad = [str(t.id) for t in c.descr.outputs if not _SAFE_NAME.match(str(t.id))]
    if bad:
        return FAILED, f"output id(s) {bad} are not safe file names"
    return PASSED, "output ids are safe file names"


_CHECKS = {1: _r1, 2: _r2, 3: _r3, 4: _r4, 5: _r5, 6: _r6, 7: _r7, 8: _r8, 9: _r9, 10: _r10, 11: _r11,
           12: _r12, 13: _r13, 14: _r14, 15: _r15, 16: _r16, 17: _r17, 18: _r18, 19: _r19, 20: _r20,
           21: _r21, 22: _r22, 23: _r23, 24: _r24, 25: _r25, 26: _r26, 27: _r27, 28: _r28, 29: _r29}


#: rule number -> how to fix a failure or warning of it
FIXES: dict[int, str] = {
    1: "Name the description rdf.yaml and zip the package's files themselves, not a folder holding them.",
    2: "Put every file beside rdf.yaml and reference it by its plain file name (no folders, no URLs).",
    3: "Set 'id' (or config.bioimageio.nickname).",
    4: "Add at least one cover image to 'covers'.",
    5: "Give the model exactly one input (and preferably one output); split or merge tensors in the network.",
    6: "Add torchscript or onnx weights (tensorflow_saved_model_bundle also works).",
    7: "Set weights.torchscript.pytorch_version; save with torch <= 2.0 or ship ONNX weights as well.",
    8: "Export the ONNX weights with opset 17 and set weights.onnx.opset_version.",
    9: "Make the network take float32 inputs and return exactly the declared outputs, in order.",
    10: "Declare each output's data.type as what the network really emits (ensure_dtype is ignored).",
    11: "Give every axis a type and space axes the ids x, y (z), the time axis the id t; drop index axes.",
    12: "Use at most 5 axes, not both batch and time, and no axis twice.",
    13: "Give the input x and y space axes and a channel axis.",
    14: "Let the batch size be 1 (leave batch axes unsized).",
    15: "Size input axes by a fixed integer or {min, step}, never by reference.",
    16: "Choose min as a multiple of step.",
    17: "Size outputs by a fixed integer or by reference to one input's x/y/z/t axis.",
    18: "Check the output size in Fiji; prefer references with scale 1 and offset 0.",
    19: "Make 2 * halo smaller than the smallest valid tile (raise min or lower the halo).",
    20: "Use only binarize, clip, scale_linear, scale_range, zero_mean_unit_variance, "
        "fixed_zero_mean_unit_variance, sigmoid (and ensure_dtype); move other steps into the network.",
    21: "Pass only the kwargs JDLL knows for each op (clip needs both min and max).",
    22: "Remove 'batch' from the processing axes.",
    23: "Use scalar gain/offset/mean/std (not per-channel lists).",
    24: "Normalise over the channel axis as well, or per channel inside the network.",
    25: "Set config.deepimagej.allow_tiling to the boolean true.",
    26: "Ship a .npy test tensor per input and output, of a JDLL dtype and with one dimension per axis.",
    27: "Save the sample tensor as a TIFF (float32, uint8 or uint16) of the test input's data.",
    28: "Make the test input a valid tile: each spatial size >= min and a multiple of step.",
    29: "Use output ids that are safe file names (letters, digits, '_', '.', '-').",
}


def _run_rule(rule: int, ctx: _Ctx) -> tuple[Status, str]:
    try:
        return _CHECKS[rule](ctx)
    except Exception as e:  # a rule must never crash the whole check
        return SKIPPED, f"could not evaluate ({type(e).__name__}: {e})"


def check_deepimagej(source: Any, **hub_options: Any) -> list[RuleResult]:
    """Check a package against the static DeepImageJ rules.

    Parameters
    ----------
    source : Package or anything :func:`bioimgzoo.package.open_package` accepts
        Folder, rdf.yaml, .zip, URL, zoo id, or an opened :class:`~bioimgzoo.package.Package`.
    **hub_options
        Passed to :func:`~bioimgzoo.package.open_package` for URLs and ids.

    Returns
    -------
    list of RuleResult
        Exactly one result per rule 1..29, in order.
    """
    from ..package import Package, open_package

    pkg = source if isinstance(source, Package) else open_package(source, **hub_options)
    ctx = _Ctx(pkg)
    results = []
    for rule in _CHECKS:
        status, message = _run_rule(rule, ctx)
        results.append(RuleResult(rule=rule, name=RULES[rule], status=status, message=message))
    return results


def rule_results(findings: Iterable[Finding]) -> list[RuleResult]:
    """The :class:`RuleResult` of each DeepImageJ rule that ran, from :func:`check_package` findings."""
    return [RuleResult(rule=f.details["rule"], name=RULES[f.details["rule"]], status=f.status, message=f.message)
            for f in findings if f.family == FAMILY.name and "rule" in f.details]


def has_failures(results: Sequence[RuleResult]) -> bool:
    """Whether any rule failed (DeepImageJ will not run the package)."""
    return any(r.status == FAILED for r in results)


def format_results(results: Sequence[RuleResult], *, markdown: bool = False) -> str:
    """A plain-text (or markdown) table of the results."""
    if markdown:
        lines = ["| # | rule | status | detail |", "|---|---|---|---|"]
        for r in results:  # messages quote the package's own text: no raw HTML into the report
            lines.append(f"| {r.rule} | {r.name} | {r.status} | {markdown_safe(r.message, table_cell=True)} |")
        return "\n".join(lines)
    width = max(len(r.name) for r in results) if results else 10
    sw = max(len(r.status) for r in results) if results else 6
    return "\n".join(f"{r.rule:>2}  {r.name:<{width}}  {r.status:<{sw}}  "
                     f"{terminal_safe(r.message, single_line=True)}" for r in results)


# ------------------------------------------------------------------------------ registration


def _markdown(findings: Sequence[Finding]) -> list[str]:
    results = rule_results(findings)
    if not results:  # the rules did not run: the skipped findings say why
        return [markdown_safe(findings[0].message)] if findings else []
    lines = [format_results(results, markdown=True)]
    fixes = [f"- {f.check} ({f.status}): {f.fix}" for f in findings if f.fix]
    return lines + (["", "Fixes:", ""] + fixes if fixes else [])


FAMILY = register_family("deepimagej", "DeepImageJ rules", order=50, render_markdown=_markdown)


def _rule_check(rule: int):
    def run(ctx: Any) -> Iterator[tuple]:
        # one _Ctx per run, shared by the 29 checks: it caches the test tensors and the ONNX graph
        c = ctx.scratch("deepimagej", lambda: _Ctx(ctx.pkg))
        status, message = _run_rule(rule, c)
        yield status, message, {"rule": rule}
    return run


for _rule in _CHECKS:
    FAMILY.add(Check(f"deepimagej.D{_rule}", FAMILY.name, RULES[_rule], "error", FIXES[_rule], _rule_check(_rule),
                     stage=STAGE_CONSUMERS, requires=("package",)))
