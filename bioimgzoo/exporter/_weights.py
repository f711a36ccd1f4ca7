"""Write a module's weights in the zoo's PyTorch-family formats and run them back.

* ``pytorch_state_dict``: ``torch.save(module.state_dict())`` plus an
  *architecture*: a callable that rebuilds the module, named either as a
  callable of an installed package (``package.module:Callable``) or by an
  ``architecture.py`` written from the class's own source (:mod:`._source`:
  never by importing a script, notebook or any file that is not an installed
  module, which would run the user's program again).  Constructor arguments
  are taken from the caller or read back from same-named attributes of the
  module.  The rebuilt module must load the state dict strictly and reproduce
  the outputs (a written file: in a fresh process, from that file alone).
  A network of bioimgzoo itself is never named by ``import_from`` (readers
  such as BiaPy or DeepImageJ's Python engine have no bioimgzoo): an
  allow-listed one (:data:`bioimgzoo.trust.TRUSTED_ARCHITECTURES`) ships its
  module file byte for byte (loaded without ``trust_code``, as it is
  ours), any other its extracted source; no written architecture
  may import bioimgzoo.
* ``torchscript``: ``torch.jit.script`` first (keeps shape-dependent control
  flow), else ``torch.jit.trace`` at one size; either is accepted only when it
  reproduces the module on several input sizes.
* ``onnx``: the TorchScript-based exporter (``dynamo=False``) at opset 17
  with IR version 8 (what the onnxruntime 1.12 inside DeepImageJ reads) and
  dynamic batch and spatial axes, declared as the file says, run back with
  onnxruntime.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ExportError
from ..trust import load_callable_from_file
from ._probe import ModuleRunner

__all__ = ["WeightsFile", "WEIGHTS_FORMATS", "write_state_dict", "write_torchscript", "write_onnx",
           "compare_outputs", "torch_version"]

WEIGHTS_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
DEFAULT_OPSET = 17

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass
class WeightsFile:
    """One written weights file plus what its description entry needs."""

    format: str
    path: Path
    runner: Runner
    comment: str = ""
    #: extra fields for the spec entry (pytorch_version, opset_version, architecture ...)
    fields: dict = field(default_factory=dict)
    #: files the entry references beside the weights (architecture source)
    extra_files: list[Path] = field(default_factory=list)


def torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]


def compare_outputs(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], *, rtol: float,
                    atol_rel: float) -> tuple[bool, float, str]:
    """The zoo's comparison (:func:`bioimgzoo.descr.tolerance.compare_outputs`) of each output, with no
    mismatched element allowed and ``atol = atol_rel * max|expected|``.

    Returns (all agree, worst max-abs-difference, message).
    """
    from ..descr.tolerance import Tolerance, compare_outputs as zoo_compare

    if len(actual) != len(expected):
        return False, float("inf"), f"{len(actual)} outputs instead of {len(expected)}"
    worst = 0.0
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a.shape != e.shape:
            return False, float("inf"), f"output {i} has shape {a.shape} instead of {e.shape}"
        if not np.isfinite(a.astype(np.float64)).all():
            return False, float("inf"), f"output {i} holds NaN or infinite values"
        atol = atol_rel * float(np.abs(e.astype(np.float64)).max()) if e.size else 0.0
        cmp = zoo_compare(a, e, Tolerance(rtol, atol, 0.0, "the export's check"))
        worst = max(worst, cmp["max_abs"])
        if not cmp["passed"]:
            return False, worst, (f"output {i}: {cmp['mismatched']} of {e.size} values differ by more than "
                                  f"{atol:.3g} + {rtol:.3g} * |expected| (max difference {cmp['max_abs']:.3g})")
    return True, worst, ""


def _check_against(runner: Runner, reference: Runner, cases: Sequence[Sequence[np.ndarray]], *, rtol: float,
                   atol_rel: float, what: str) -> float:
    """Run ``runner`` and ``reference`` on every case; raise ExportError on a mismatch."""
    worst = 0.0
    for case in cases:
        expected = reference(case)
        try:
            actual = runner(case)
        except Exception as e:
            shapes = ", ".join(str(a.shape) for a in case)
            raise ExportError(f"{what} fails on input shape {shapes}: {type(e).__name__}: {e}") from e
        ok, diff, msg = compare_outputs(actual, expected, rtol=rtol, atol_rel=atol_rel)
        if not ok:
            shapes = ", ".join(str(a.shape) for a in case)
            raise ExportError(f"{what} does not reproduce the module on input shape {shapes}: {msg}")
        worst = max(worst, diff)
    return worst


# ----------------------------------------------------------------------------------------------
# pytorch_state_dict


_JSONABLE = (int, float, str, bool, type(None))


def _jsonable(v: Any) -> bool:
    if isinstance(v, _JSONABLE):
        return True
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return False


def _infer_kwargs(func: Callable, module: Any) -> tuple[dict, list[str]]:
    """Constructor kwargs read back from same-named module attributes; returns (kwargs, missing)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}, ["<signature unavailable>"]
    kwargs, missing = {}, []
    for name, p in sig.parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        for attr in (name, f"_{name}"):
            if hasattr(module, attr) and _jsonable(getattr(module, attr)):
                v = getattr(module, attr)
                kwargs[name] = list(v) if isinstance(v, tuple) else v
                break
        else:
            if p.default is p.empty:
                missing.append(name)
    return kwargs, missing


def _installed_top_levels() -> set[str]:
    try:
        return set(importlib.metadata.packages_distributions())
    except Exception:  # pragma: no cover - broken metadata
        return set()


def _installed_module(mod_name: str) -> bool:
    """``mod_name`` is loaded from an installed distribution, not a same-named folder of the user's.

    Some wheels install generic top-level names (tf2onnx 1.17 ships a ``tests`` package): a user's
    ``tests.test_x`` module then has an "installed" top-level name while its file is the user's own.
    Distributions whose file list names the top level must list the module's file; editable
    installs (no such list) are trusted.
    """
    top = mod_name.split(".")[0]
    try:
        owners = importlib.metadata.packages_distributions().get(top) or []
    except Exception:  # pragma: no cover - broken metadata
        return False
    if not owners:
        return False
    path = getattr(sys.modules.get(mod_name), "__file__", None)
    if not path:
        return True
    path = Path(path).resolve()
    for owner in owners:
        try:
            dist = importlib.metadata.distribution(owner)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            continue
        claimed = [Path(str(dist.locate_file(f))).resolve() for f in (dist.files or [])
                   if f.parts and f.parts[0] == top]
        if not claimed or path in claimed:
            return True
    return False


def _parse_architecture(architecture: Any) -> dict:
    """Normalise the ``architecture=`` option to {callable, import_from | source, kwargs?}."""
    if isinstance(architecture, Mapping):
        d = dict(architecture)
        if "callable" not in d or not ({"import_from", "source"} & set(d)):
            raise ExportError("architecture= as a mapping needs 'callable' and either 'import_from' (a module "
                              "name) or 'source' (a .py file)")
        return d
    if callable(architecture):
        mod = getattr(architecture, "__module__", None)
        name = getattr(architecture, "__qualname__", getattr(architecture, "__name__", ""))
        if not mod:
            raise ExportError(f"architecture={architecture!r} has no module")
        if "." in name or "<" in name:  # nested: only its source can describe it
            return {"callable": getattr(architecture, "__name__", name), "extract": architecture}
        if mod == "__main__" or mod not in sys.modules:
            return {"callable": name, "extract": architecture}
        return {"callable": name, "import_from": mod}
    if isinstance(architecture, str):
        text = architecture.strip()
        if ":" in text:
            where, name = text.rsplit(":", 1)
        elif "." in text:
            where, name = text.rsplit(".", 1)
        else:
            raise ExportError(f"architecture={architecture!r}: write 'package.module:Callable' or 'file.py:Callable'")
        if where.endswith(".py"):
            return {"callable": name, "source": where}
        return {"callable": name, "import_from": where}
    raise ExportError(f"architecture= must be 'package.module:Callable', 'file.py:Callable', a callable or a "
                      f"mapping, got {type(architecture).__name__}")


def _local_imports(path: Path) -> list[str]:
    """Top-level modules a source file imports that are neither stdlib nor installed distributions."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("." * node.level + (node.module or ""))
            elif node.module:
                names.add(node.module.split(".")[0])
    installed = _installed_top_levels() | set(sys.stdlib_module_names) | {"__future__"}
    return sorted(n for n in names if n.startswith(".") or n not in installed)


def _candidates(module: Any, architecture: Any) -> tuple[list[dict], list[str]]:
    """Where the architecture may come from, best first, and why others were not tried.

    Only modules that can be imported without running a program are imported (an installed package, or a
    callable named ``package.module:Callable``); a class in ``__main__`` (a script, a notebook), in a function,
    or in a file that is not an installed package, and any ``file.py:Callable``, is *extracted* from its source
    instead (:mod:`._source`): the file is never executed.
    """
    cls = type(module)
    if architecture is not None:
        parsed = _parse_architecture(architecture)
        if "import_from" in parsed and _is_own(parsed["import_from"]):
            return _own_candidates(parsed["callable"], parsed["import_from"], cls), []
        if "import_from" in parsed and parsed["import_from"] != "__main__":
            return [parsed], []
        if "source" in parsed:
            return [{"callable": parsed["callable"], "extract_file": parsed["source"],
                     **({"kwargs": parsed["kwargs"]} if "kwargs" in parsed else {})}], []
        return [{"callable": parsed["callable"], "extract": parsed.get("extract", architecture)}], []
    mod_name = cls.__module__
    top = mod_name.split(".")[0]
    nested = "<locals>" in cls.__qualname__
    if _is_own(mod_name) and not nested:
        return _own_candidates(cls.__name__, mod_name, cls), []
    if mod_name != "__main__" and not nested and top in _installed_top_levels() and mod_name in sys.modules \
            and _installed_module(mod_name):
        return [{"callable": cls.__name__, "import_from": mod_name},
                {"callable": cls.__name__, "extract": cls}], []
    return [{"callable": cls.__name__, "extract": cls}], []


def _is_own(module_name: str) -> bool:
    """A module of bioimgzoo itself (never named by ``import_from`` in a package: readers lack bioimgzoo)."""
    return module_name.split(".")[0] == "bioimgzoo"


def _own_candidates(name: str, module_name: str, cls: type) -> list[dict]:
    """bioimgzoo's own network ``module_name:name``: its module file verbatim when allow-listed, else extracted."""
    from ..trust import TRUSTED_ARCHITECTURES

    obj = getattr(importlib.import_module(module_name), name, None)
    cands: list[dict] = []
    if (module_name, name) in TRUSTED_ARCHITECTURES:
        cands.append({"callable": name, "verbatim": module_name, "extract": obj})
    if obj is not None:
        cands.append({"callable": name, "extract": obj})
    elif cls.__name__ == name:
        cands.append({"callable": name, "extract": cls})
    return cands


def _imports_bioimgzoo(text: str) -> bool:
    import ast

    for node in ast.walk(ast.parse(text)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if any(n.split(".")[0] == "bioimgzoo" for n in names):
            return True
    return False


def _constructor(cand: dict, module: Any) -> Callable | None:
    """The callable whose signature names the constructor arguments (the live class when extracting)."""
    if "extract" in cand:
        return cand["extract"]
    if "extract_file" in cand:
        return type(module) if type(module).__name__ == cand["callable"] else None
    return getattr(importlib.import_module(cand["import_from"]), cand["callable"])


def write_state_dict(module: Any, folder: Path, *, architecture: Any, architecture_kwargs: Mapping | None,
                     check_cases: Sequence[Sequence[np.ndarray]], reference: Runner, rtol: float,
                     atol_rel: float) -> WeightsFile:
    """Save the state dict and find an architecture that rebuilds the module; raise ExportError if none."""
    import torch

    from ._source import SourceUnavailable

    candidates, tried = _candidates(module, architecture)
    for cand in candidates:
        name, label = cand["callable"], _candidate_label(cand)
        try:
            func = _constructor(cand, module)
        except Exception as e:
            tried.append(f"{label}: cannot import ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})")
            continue
        kwargs, problem = _candidate_kwargs(cand, func, module, architecture_kwargs)
        if problem:
            tried.append(f"{label}: {problem}")
            continue
        fields = {"pytorch_version": torch_version(), "callable": name, "kwargs": kwargs}
        try:
            if "import_from" in cand:
                runner, comment, extra = _rebuilt_from_library(cand, func, kwargs, module, label=label,
                                                               check_cases=check_cases, reference=reference,
                                                               rtol=rtol, atol_rel=atol_rel)
                fields["import_from"] = cand["import_from"]
            else:
                runner, comment, extra = _rebuilt_from_written_file(cand, kwargs, module, folder, fields,
                                                                    check_cases=check_cases, reference=reference,
                                                                    rtol=rtol, atol_rel=atol_rel)
        except SourceUnavailable as e:
            tried.append(f"{label}: {e}")
            continue
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:160]
            tried.append(f"{label} with kwargs {json.dumps(kwargs)}: {type(e).__name__}: {first}")
            continue
        path = folder / "weights.pt"
        torch.save(module.state_dict(), path)
        return WeightsFile("pytorch_state_dict", path, runner, fields=fields, extra_files=extra, comment=comment)
    reasons = "; ".join(tried) if tried else "no candidate found"
    raise ExportError(
        "cannot describe the architecture for pytorch_state_dict weights (" + reasons + "). Fix: pass "
        "architecture='package.module:Callable' (an importable callable returning the module) or "
        "architecture='path/to/file.py:Callable' (a file whose class is extracted without running it), plus "
        "architecture_kwargs={...} with its constructor arguments; or leave 'pytorch_state_dict' out of weights=")


def _candidate_label(cand: Mapping[str, Any]) -> str:
    name = cand["callable"]
    if "import_from" in cand:
        return f"{cand['import_from']}:{name}"
    if "verbatim" in cand:
        return f"{cand['verbatim']}:{name} (its module file, verbatim)"
    if "extract_file" in cand:
        return f"{Path(cand['extract_file']).name}:{name} (extracted)"
    return f"{getattr(cand['extract'], '__qualname__', name)} (extracted from its source)"


def _candidate_kwargs(cand: Mapping[str, Any], func: Any, module: Any,
                      architecture_kwargs: Mapping | None) -> tuple[dict, str]:
    """The constructor's kwargs for a candidate, and why it cannot be used ("" when it can)."""
    if architecture_kwargs is not None:
        # the given arguments, completed with the others read back from the module: readers such as
        # BiaPy read the network's channels from the written kwargs (out_channels, n_classes, ...)
        inferred = _infer_kwargs(func, module)[0] if func is not None else {}
        kwargs, missing = {**inferred, **dict(architecture_kwargs)}, []
    elif "kwargs" in cand:
        kwargs, missing = dict(cand["kwargs"]), []
    elif func is None:
        kwargs, missing = {}, ["<pass architecture_kwargs=>"]
    else:
        kwargs, missing = _infer_kwargs(func, module)
    if missing:
        return kwargs, (f"constructor arguments {missing} are not attributes of the module "
                        "(pass architecture_kwargs={...})")
    if not _jsonable(kwargs):
        return kwargs, "architecture_kwargs must be plain YAML values (numbers, strings, lists)"
    return kwargs, ""


def _rebuilt_from_library(cand: Mapping[str, Any], func: Any, kwargs: dict, module: Any, *, label: str,
                          check_cases: Sequence[Sequence[np.ndarray]], reference: Runner, rtol: float,
                          atol_rel: float) -> tuple[Runner, str, list[Path]]:
    """An installed library's callable rebuilds the module (checked on the check cases)."""
    import torch

    rebuilt = func(**kwargs)
    if not isinstance(rebuilt, torch.nn.Module):
        raise TypeError(f"returned a {type(rebuilt).__name__}, not a torch.nn.Module")
    rebuilt.load_state_dict(module.state_dict(), strict=True)
    rebuilt.eval()
    _check_against(ModuleRunner(rebuilt, []), reference, check_cases[:2], rtol=rtol, atol_rel=atol_rel,
                   what=f"the module rebuilt by {label}({json.dumps(kwargs)})")
    return ModuleRunner(rebuilt, []), f"state dict; architecture {label}", []


def _rebuilt_from_written_file(cand: Mapping[str, Any], kwargs: dict, module: Any, folder: Path, fields: dict, *,
                               check_cases: Sequence[Sequence[np.ndarray]], reference: Runner, rtol: float,
                               atol_rel: float) -> tuple[Runner, str, list[Path]]:
    """``architecture.py`` written (our own module verbatim, or the class's source extracted), checked to rebuild
    the module in a fresh process, and only that file run here."""
    from ._source import ExtractedSource, SourceUnavailable, extract_architecture, extract_from_file, rebuild_outputs

    name = cand["callable"]
    if "verbatim" in cand:
        from ..trust import own_source

        extracted = ExtractedSource(text=own_source(cand["verbatim"]).decode("utf-8"), callable=name,
                                    origin=f"bioimgzoo's {cand['verbatim']} (verbatim)", names=())
    else:
        extracted = (extract_from_file(cand["extract_file"], name) if "extract_file" in cand
                     else extract_architecture(cand["extract"]))
    if _imports_bioimgzoo(extracted.text):
        raise SourceUnavailable("the architecture's source imports bioimgzoo, which the package's "
                                "readers (BiaPy, DeepImageJ's Python engine, bioimageio.core) lack")
    cases = list(check_cases[:2])
    outputs = rebuild_outputs(extracted.text, name, kwargs, module.state_dict(), cases)
    for case, got in zip(cases, outputs):
        ok, _, msg = compare_outputs(got, reference(case), rtol=rtol, atol_rel=atol_rel)
        if not ok:
            raise SourceUnavailable(f"the module rebuilt from the written file in a fresh process "
                                    f"computes something else: {msg}")
    arch_path = folder / "architecture.py"
    arch_path.write_bytes(extracted.text.encode("utf-8"))  # byte for byte (no newline translation)
    fields["source"] = arch_path
    rebuilt = load_callable_from_file(arch_path, name)(**kwargs)  # only the written file runs
    rebuilt.load_state_dict(module.state_dict(), strict=True)
    rebuilt.eval()
    local = _local_imports(arch_path)
    if local:
        fields["note"] = (f"the architecture file imports {', '.join(local)}, which is not an installed "
                          "package: the pytorch_state_dict weights load only where that is importable; "
                          "make it a package or pass architecture='pkg.mod:Callable'")
    comment = (f"state dict; architecture {name} in architecture.py, written from the source of "
               f"{extracted.origin} and checked to rebuild the module in a fresh process")
    return ModuleRunner(rebuilt, []), comment, [arch_path]


# ----------------------------------------------------------------------------------------------
# torchscript


def _torch_inputs(arrays: Sequence[np.ndarray]):
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def write_torchscript(module: Any, folder: Path, *, trace_case: Sequence[np.ndarray],
                      check_cases: Sequence[Sequence[np.ndarray]], reference: Runner, rtol: float,
                      atol_rel: float) -> WeightsFile:
    """Script (else trace) the module, check it on every case, save it; raise ExportError if neither works."""
    import torch

    problems = []
    for how in ("script", "trace"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if how == "script":
                    converted = torch.jit.script(module)
                else:
                    with torch.no_grad():
                        converted = torch.jit.trace(module, _torch_inputs(trace_case), check_trace=False)
            converted.eval()
            runner = ModuleRunner(converted, [])
            _check_against(runner, reference, check_cases, rtol=rtol, atol_rel=atol_rel,
                           what=f"the {how}d TorchScript module")
        except Exception as e:
            msg = [m.strip() for m in str(e).strip().splitlines() if m.strip()]
            where = next((m for m in msg if m.startswith("File ")), "")
            problems.append(f"torch.jit.{how}: {type(e).__name__}: {msg[0] if msg else ''}"
                            + (f" ({where})" if where else ""))
            continue
        path = folder / "weights_torchscript.pt"
        torch.jit.save(converted, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
        loaded.eval()
        return WeightsFile("torchscript", path, ModuleRunner(loaded, []),
                           comment=f"torch.jit.{how} of the module (torch {torch_version()})",
                           fields={"pytorch_version": torch_version()})
    raise ExportError("the module can be neither scripted nor traced into TorchScript that reproduces it: "
                      + "; ".join(problems)
                      + ". Fix: make forward() scriptable (type annotations, no unsupported Python), or free of "
                      "shape-dependent Python control flow so tracing works; or leave 'torchscript' out of weights=")


# ----------------------------------------------------------------------------------------------
# onnx


class OnnxRunner:
    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(self.names, arrays)}
        return list(self.session.run(None, feed))


def write_onnx(module: Any, folder: Path, *, trace_case: Sequence[np.ndarray], input_names: Sequence[str],
               output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]],
               check_cases: Sequence[Sequence[np.ndarray]], reference: Runner, rtol: float, atol_rel: float,
               opset: int = DEFAULT_OPSET) -> WeightsFile:
    """Export to ONNX with dynamic axes, check with onnxruntime on every case; raise ExportError on failure."""
    import io
    import torch

    path = folder / "weights.onnx"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            log = io.StringIO()
            import contextlib

            with contextlib.redirect_stdout(log):
                torch.onnx.export(module, _torch_inputs(trace_case), str(path), dynamo=False,
                                  opset_version=opset, input_names=list(input_names),
                                  output_names=list(output_names),
                                  dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                                  do_constant_folding=True)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ExportError(f"ONNX export (opset {opset}) failed: {type(e).__name__}: {msg[0] if msg else ''}. "
                          "Fix: replace the unsupported operation, pass opset_version= (DeepImageJ reads <= 18), "
                          "or leave 'onnx' out of weights=") from e
    ir_version, file_opset = _lower_ir_version(path, opset)
    try:
        runner = OnnxRunner(path)  # onnxruntime still loads it after the IR version was lowered
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported ONNX file: {type(e).__name__}: {e}") from e
    _check_against(runner, reference, check_cases, rtol=rtol, atol_rel=atol_rel, what="the ONNX export")
    declared = file_opset if file_opset is not None else opset  # declared equal to the file (D9)
    return WeightsFile("onnx", path, runner, fields={"opset_version": declared},
                       comment=f"torch.onnx.export (TorchScript-based exporter), opset {declared}, IR version "
                               f"{ir_version}, dynamic axes")


def _lower_ir_version(path: Path, opset: int) -> tuple[int | None, int | None]:
    """Write IR version 8 when the opset allows it: DeepImageJ's onnxruntime 1.12 reads IR <= 8.

    Returns the file's (IR version, default-domain opset) as written.
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover
        return None, None
    model = onnx.load(str(path))
    if opset <= 17 and model.ir_version > 8:
        model.ir_version = 8
        onnx.save(model, str(path))
    file_opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return int(model.ir_version), file_opset
