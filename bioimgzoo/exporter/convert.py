"""``bioimgzoo convert``: add weight formats to an existing package, each checked; the rest kept byte for byte.

Conversions (the first source format the package has, in this order):

==============  ==========================================================
new format      made from
==============  ==========================================================
``torchscript``  ``pytorch_state_dict`` (``torch.jit.script``, else trace)
``onnx``         ``pytorch_state_dict``, ``torchscript``
                 (``torch.onnx.export``), or ``tensorflow_saved_model_bundle``
                 / ``keras_hdf5`` (tf2onnx, the ``tensorflow`` extra)
==============  ==========================================================

ONNX is written as DeepImageJ/JDLL reads it: opset 17 declared as in the
file, IR version <= 8, no external data.  Each new file is checked twice:
against the source weights on the network inputs of the package's test
input and on a random input of another valid size (the exporter's writers
of :mod:`._weights` for torch formats, :func:`bioimgzoo.runtime.tf_weights.
convert_and_check` for TensorFlow), and through bioimgzoo's whole pipeline
against the package's test outputs with the zoo's tolerance.

The new package holds every file of the old one unchanged, the new weights
files, and an ``rdf.yaml`` that differs only by the new ``weights`` entries
(built with bioimageio.spec's classes of the package's own format version,
their ``parent`` naming the format they were made from) -- see
:func:`write_description`, the one place the description is serialized.
Code a package names (a state-dict architecture, custom ops) runs only with
``trust_code=True``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ExportError, WeightsError

log = logging.getLogger("bioimgzoo")

__all__ = ["TARGETS", "ConvertResult", "convert_package", "write_description"]

#: formats ``convert`` writes, and the formats each is made from, in order of preference
TARGETS = {"torchscript": ("pytorch_state_dict",),
           "onnx": ("pytorch_state_dict", "torchscript", "tensorflow_saved_model_bundle", "keras_hdf5")}
_FILE_NAMES = {"torchscript": "weights_torchscript.pt", "onnx": "weights.onnx"}
#: the network-level check of a torch conversion (as the exporter's default; the zoo's tolerance is
#: checked on the test outputs through the whole pipeline)
_RTOL, _ATOL_FRACTION = 1e-3, 1e-3


@dataclass
class Converted:
    """One new weights entry."""

    format: str
    parent: str
    file: str
    bytes: int
    seconds: float
    #: largest difference to the source weights on the network inputs checked
    max_abs_vs_parent: float
    sha256: str = ""
    #: per output: largest difference to the package's test output through the whole pipeline
    test_outputs: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)


@dataclass
class ConvertResult:
    """What ``convert`` wrote and checked."""

    path: Path
    converted: list[Converted]
    skipped: dict[str, str] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def summary(self) -> str:
        lines = [f"wrote {self.path}"]
        for c in self.converted:
            tests = ", ".join(f"{k}: max abs {v:.2g}" for k, v in c.test_outputs.items())
            extra = "".join(f", {k} {v}" for k, v in c.fields.items() if k in ("opset_version", "pytorch_version"))
            lines.append(f"  {c.format:<12} from {c.parent} ({c.file}, {c.bytes / 1e6:.2f} MB, {c.seconds:.1f} s"
                         f"{extra}); vs {c.parent}: max abs {c.max_abs_vs_parent:.2g}; test outputs: {tests}")
        for fmt, why in self.skipped.items():
            lines.append(f"  {fmt:<12} not written: {why}")
        lines.append("check it with: bioimgzoo validate " + str(self.path))
        return "\n".join(lines)

    __str__ = summary


def convert_package(source: Any, out: Any, *, to: str | Sequence[str] = ("onnx", "torchscript"),
                    trust_code: bool = False, overwrite: bool = False) -> ConvertResult:
    """Add weight formats to the package ``source``, writing a new package ``out`` (a folder, or ``.zip``).

    Parameters
    ----------
    source : str or os.PathLike
        A package folder, its ``rdf.yaml`` or a ``.zip``.
    out : str or os.PathLike
        The new package: a ``.zip`` file, else a folder.
    to : str or sequence of str
        Formats to add (``"onnx,torchscript"``; aliases such as ``ts``
        work).  Formats the package has already are kept as they are.
    trust_code : bool
        Allow running code the package names (a state-dict architecture file).
    overwrite : bool
        Replace an existing ``out``.
    """
    from .._files import sha256_file
    from ..descr.weights import canonical_formats, present_formats
    from ..package import open_package
    from ..package.sources import FolderSource, ZipSource

    targets = canonical_formats(to, among=tuple(TARGETS), option="--to", error=ExportError)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists: choose another output, or pass --overwrite (overwrite=True)")
    pkg = open_package(source)
    if not isinstance(pkg.source, (FolderSource, ZipSource)):
        raise ExportError(f"convert works on a local package (folder or .zip), not {pkg.source.name}: pull it "
                          "first (bioimgzoo pull ID --all-files) and convert that folder")
    have = present_formats(pkg.descr)
    result = ConvertResult(out, [])
    made: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-convert-") as tmp:
        work = Path(tmp)
        for fmt in targets:
            if fmt in have:
                result.skipped[fmt] = "the package has it already"
                continue
            parent = next((p for p in TARGETS[fmt] if p in have), None)
            if parent is None:
                result.skipped[fmt] = (f"no weights to make it from (it is made from {', '.join(TARGETS[fmt])}; "
                                       f"the package has {', '.join(have)})")
                continue
            t0 = time.perf_counter()
            path, fields, worst = _convert(pkg, parent, fmt, work, trust_code=trust_code)
            conv = Converted(fmt, parent, _free_name(pkg, _FILE_NAMES[fmt]), path.stat().st_size,
                             time.perf_counter() - t0, worst, sha256_file(path), fields=fields)
            conv.test_outputs = _check_test_outputs(pkg, fmt, path, trust_code=trust_code)
            made[conv.file] = path
            result.converted.append(conv)
        if not result.converted:
            raise ExportError("nothing to convert: " + "; ".join(f"{k}: {v}" for k, v in result.skipped.items()))
        raw = _with_weights(pkg, result.converted)
        _write_package(pkg, raw, made, out, overwrite=overwrite)
    return result


# ----------------------------------------------------------------------------- converting
class _Recording:
    """Runs an engine and keeps the network inputs it was given (the test input's windows)."""

    def __init__(self, engine: Any):
        self.engine, self.format, self.device = engine, engine.format, engine.device
        self.inputs: list[list[np.ndarray]] = []

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.inputs.append([np.array(a) for a in arrays])
        return self.engine.run(arrays)


def _check_cases(pkg: Any, engine: Any, *, trust_code: bool) -> list[list[np.ndarray]]:
    """The network inputs of the test input (through the declared preprocessing) and of another valid size."""
    from ..descr.sizes import AxisSizes
    from ..descr.tensors import tensor_specs
    from ..runtime.model import predict_test_inputs

    inputs, _ = tensor_specs(pkg.descr)
    rec = _Recording(engine)
    predict_test_inputs(pkg, rec, trust_code=trust_code)
    cases = rec.inputs[:1]
    rng = np.random.default_rng(0)
    other = []
    for spec, a in zip(inputs, cases[0]):
        shape = [n + (spec.sizes[ax.id].step if isinstance(spec.sizes.get(ax.id), AxisSizes)
                      and ax.kind not in ("batch", "channel") else 0) for ax, n in zip(spec.axes, a.shape)]
        other.append(rng.standard_normal(shape).astype(a.dtype))
    if any(o.shape != a.shape for o, a in zip(other, cases[0])):
        cases.append(other)
    return cases


def _convert(pkg: Any, parent: str, fmt: str, work: Path, *, trust_code: bool) -> tuple[Path, dict, float]:
    """Write ``fmt`` from ``parent`` in ``work``; the file, its entry's extra fields, the worst difference."""
    from ..descr.weights import TENSORFLOW

    if parent in TENSORFLOW:
        from ..runtime.model import predict_test_inputs
        from ..runtime.tf_weights import convert_and_check, extra_installed

        if not extra_installed():
            raise ExportError(f"converting {parent} weights needs TensorFlow and tf2onnx: pip install "
                              "'bioimgzoo[tensorflow]'")
        conv = convert_and_check(pkg, parent, workdir=work / parent, predict_test=predict_test_inputs)
        if conv.worker is not None:
            conv.worker.close()
        if not conv.faithful or conv.onnx is None:
            raise ExportError(f"the ONNX conversion of the {parent} weights {conv.reason}: not written")
        final = work / f"{fmt}-{_FILE_NAMES[fmt]}"
        shutil.move(str(conv.onnx), final)
        return final, {"opset_version": conv.record.get("opset")}, float(conv.record.get("max_abs_vs_tensorflow")
                                                                         or 0.0)
    from ..runtime.engines import create_engine
    from ._weights import write_onnx, write_torchscript

    try:
        engine = create_engine(pkg, parent, device="cpu", trust_code=trust_code, n_outputs=len(pkg.descr.outputs))
    except WeightsError as e:
        raise ExportError(f"cannot load the {parent} weights to convert them: {e}") from e
    cases = _check_cases(pkg, engine, trust_code=trust_code)
    folder = work / fmt
    folder.mkdir(parents=True, exist_ok=True)
    check = dict(check_cases=cases, reference=engine.run, rtol=_RTOL, atol_rel=_ATOL_FRACTION)
    if fmt == "torchscript":
        w = write_torchscript(engine.module, folder, trace_case=cases[-1], **check)
    else:
        from ..descr.tensors import tensor_specs

        ins, outs = tensor_specs(pkg.descr)
        w = write_onnx(engine.module, folder, trace_case=cases[-1], input_names=[t.id for t in ins],
                       output_names=[t.id for t in outs], dynamic_axes=_dynamic_axes(ins, outs), **check)
    worst = 0.0
    for case in cases:
        for a, b in zip(w.runner(case), engine.run(case)):
            worst = max(worst, float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()))
    return w.path, dict(w.fields), worst


def _dynamic_axes(ins: Sequence[Any], outs: Sequence[Any]) -> dict[str, dict[int, str]]:
    """Batch and every axis whose size is not fixed (inputs: min/step; outputs: a reference) are dynamic."""
    from ..descr.sizes import AxisSizes, SizeRef

    dyn: dict[str, dict[int, str]] = {}
    for t in ins:
        dyn[t.id] = {d: f"{t.id}_{a.id}" for d, a in enumerate(t.axes)
                     if a.kind == "batch" or (isinstance(t.sizes.get(a.id), AxisSizes) and t.sizes[a.id].step)}
    for t in outs:
        dyn[t.id] = {d: f"{t.id}_{a.id}" for d, a in enumerate(t.axes)
                     if a.kind == "batch" or isinstance(t.sizes.get(a.id), SizeRef)}
    return dyn


def _check_test_outputs(pkg: Any, fmt: str, path: Path, *, trust_code: bool) -> dict[str, float]:
    """The new weights through the whole pipeline against the package's test outputs (the zoo's tolerance)."""
    from ..descr.tensors import tensor_specs
    from ..descr.tolerance import compare_outputs, tolerance_for
    from ..runtime.engines import OnnxEngine, TorchScriptEngine
    from ..runtime.model import predict_test_inputs

    _, outs = tensor_specs(pkg.descr)
    engine = OnnxEngine(path, device="cpu", n_outputs=len(outs)) if fmt == "onnx" else \
        TorchScriptEngine(path, device="cpu")
    got = predict_test_inputs(pkg, engine, trust_code=trust_code)
    result = {}
    for t, descr in zip(outs, pkg.descr.outputs):
        expected = np.load(pkg.file(descr.test_tensor), allow_pickle=False)
        cmp = compare_outputs(np.asarray(got[t.id]), expected, tolerance_for(pkg, fmt, t.id))
        if not cmp["passed"]:
            raise ExportError(f"the converted {fmt} weights do not reproduce the package's test output "
                              f"'{t.id}' (max abs {cmp['max_abs']:.3g}, {cmp['mismatched']} elements beyond "
                              f"the tolerance): not written")
        result[t.id] = float(cmp["max_abs"])
    return result


# ----------------------------------------------------------------------------- the new package
def _free_name(pkg: Any, name: str) -> str:
    """``name``, or ``stem_2.ext``..., not taken by a file of the package."""
    taken = set(_package_files(pkg))
    stem, dot, ext = name.partition(".")
    cand, k = name, 2
    while cand in taken:
        cand, k = f"{stem}_{k}{dot}{ext}", k + 1
    return cand


def _package_files(pkg: Any) -> dict[str, Any]:
    """Every file of the package (relative posix name -> a path, or a zip member), the description included."""
    from ..package.sources import FolderSource

    src = pkg.source
    if isinstance(src, FolderSource):
        return {p.relative_to(src.root).as_posix(): p for p in sorted(src.root.rglob("*"))
                if p.is_file() and not p.is_symlink() and ".bioimgzoo" not in p.relative_to(src.root).parts}
    with zipfile.ZipFile(src.path) as z:
        prefix = _zip_prefix(z)
        return {i.filename[len(prefix):]: i for i in z.infolist() if not i.is_dir()
                and i.filename.startswith(prefix)}


def _zip_prefix(z: zipfile.ZipFile) -> str:
    """The folder of a zip's description ("" at the root; zips made by zipping a folder have one)."""
    for n in (i.filename for i in z.infolist()):
        if n.rsplit("/", 1)[-1] in ("rdf.yaml", "bioimageio.yaml"):
            return n[: len(n) - len(n.rsplit("/", 1)[-1])]
    return ""


def _with_weights(pkg: Any, converted: Sequence[Converted]) -> dict:
    """The package's own description (as read) with the new weights entries, built by bioimageio.spec."""
    import copy

    raw = copy.deepcopy(pkg.raw)
    weights = raw.setdefault("weights", {})
    for c in converted:
        weights[c.format] = _weights_entry(pkg, c)
    return raw


def _weights_entry(pkg: Any, c: Converted) -> dict:
    """One weights entry as bioimageio.spec writes it in the package's own format version."""
    from bioimageio.spec._internal.validation_context import ValidationContext
    from bioimageio.spec.model import v0_4, v0_5

    v04 = str(pkg.original_format_version).startswith("0.4")
    mod = v0_4 if v04 else v0_5
    cls = {"onnx": mod.OnnxWeightsDescr, "torchscript": mod.TorchscriptWeightsDescr}[c.format]
    data: dict = {"source": c.file, "sha256": c.sha256, "parent": c.parent}
    if c.format == "onnx":
        data["opset_version"] = int(c.fields.get("opset_version") or 17)
    else:
        data["pytorch_version"] = str(c.fields.get("pytorch_version"))
    if not v04:
        data["comment"] = f"converted from {c.parent} by bioimgzoo convert"
    with ValidationContext(perform_io_checks=False):
        entry = cls.model_validate(data)
    return entry.model_dump(mode="json", exclude_none=True, exclude_unset=True)


def write_description(raw: dict, path: Path) -> None:
    """Serialize a description (the one place ``convert`` does): keys in their order, plain YAML 1.1 scalars.

    PyYAML writes floats with a dot (``1.0e-06``), which SnakeYAML (DeepImageJ) reads as numbers.
    """
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _write_package(pkg: Any, raw: dict, made: dict[str, Path], out: Path, *, overwrite: bool) -> None:
    """The old files byte for byte, the new weights, the new description: to ``out`` (zip or folder), atomically."""
    from .._files import atomic_path
    from ..package import open_package
    from ..package.sources import FolderSource

    rdf_name = next((n for n in ("rdf.yaml", "bioimageio.yaml") if n in _package_files(pkg)), "rdf.yaml")
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-convert-out-") as tmp:
        staging = Path(tmp) / "package"
        staging.mkdir()
        src = pkg.source
        files = _package_files(pkg)
        if isinstance(src, FolderSource):
            for name, p in files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, staging / name)
        else:
            with zipfile.ZipFile(src.path) as z:
                for name, info in files.items():
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as fin, open(staging / name, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
        for name, p in made.items():
            shutil.copyfile(p, staging / name)
        write_description(raw, staging / rdf_name)
        # the new description must be one bioimageio.spec accepts, with every file present and verified
        from bioimageio.spec import InvalidDescr, load_description

        checked = load_description(staging / rdf_name, perform_io_checks=True)
        if isinstance(checked, InvalidDescr):
            errors = checked.validation_summary.errors if checked.validation_summary else []
            raise ExportError("the converted description is not valid: " + "; ".join(
                f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:5]))
        open_package(staging / rdf_name)  # and one bioimgzoo opens as it opened the original
        if out.exists() and overwrite:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        if out.suffix.lower() == ".zip":
            with atomic_path(out) as tmp_zip:
                with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
                    for p in sorted(staging.rglob("*")):
                        if p.is_file():
                            z.write(p, p.relative_to(staging).as_posix())
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            temp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            try:
                shutil.copytree(staging, temp_dir, dirs_exist_ok=True)
                os.replace(temp_dir, out)
            finally:
                if temp_dir.exists():
                    shutil.rmtree(temp_dir, ignore_errors=True)
