"""QuPath (qupath-extension-bioimageio 0.2): rules ``Q1``-``Q5``; the zoo CI has no QuPath check.

Q5 also measures how far QuPath's per-tile normalisation moves the test input
from the per-image normalisation the test output was made with (tiles grown
from ``min`` with ``min`` as the step, toward 512 pixels).
"""

from __future__ import annotations

from typing import Iterator

from .._registry import FAILED, PASSED, SKIPPED, WARNING
from ._base import NeedsFiles, Subject, tool
from ._jdll import URL_SCHEME, join_list
from ._view import version_tuple
from .deepimagej import load_file, render_markdown

__all__ = ["TOOL", "qupath_tile"]

TOOL = tool("qupath", "QuPath rules", order=53, render_markdown=render_markdown)

_OPS = {"binarize", "clip", "scale_linear", "scale_range", "sigmoid", "zero_mean_unit_variance"}
_SKIPPED_OPS = {"fixed_zero_mean_unit_variance", "softmax", "scale_mean_variance"}


@TOOL.rule("Q1", title="local rdf, 2D, one input and output, local weights",
           fix="Unzip the package and open its rdf.yaml; give the model one 2D input and one output; reference "
               "the weights by relative paths.")
def q1(s: Subject) -> Iterator[tuple]:
    from ...package import FolderSource, ZipSource

    v = s.view
    problems = []
    src = s.pkg.source
    if isinstance(src, ZipSource):
        problems.append("a zip: QuPath opens a local rdf.yaml (unzip it first)")
    elif not isinstance(src, FolderSource):
        problems.append(f"not a local file ({type(src).__name__}): QuPath opens a local rdf.yaml")
    if len(v.inputs) != 1 or len(v.outputs) != 1:
        problems.append(f"{len(v.inputs)} inputs and {len(v.outputs)} outputs (QuPath needs 1 and 1)")
    for t in v.inputs:
        if len(t.spatial) != 2:
            problems.append(f"input {t.id!r} has {len(t.spatial)} spatial axes (QuPath is 2D)")
    remote = [f"{w.format}: {w.source}" for w in v.weights.values() if w.source and URL_SCHEME.match(w.source)]
    if remote:
        problems.append(f"weights by URL ({join_list(remote, 2)}): QuPath reads local relative files")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "a local rdf with one 2D input, one output and local weights"


@TOOL.rule("Q2", title="weights QuPath runs",
           fix="Add torchscript weights (QuPath also runs an unzipped TF saved model; ONNX is rarely installed).")
def q2(s: Subject) -> Iterator[tuple]:
    w = s.view.weights
    if "torchscript" in w:
        yield PASSED, "torchscript weights"
        return
    tf = w.get("tensorflow_saved_model_bundle")
    if tf is not None and tf.source and not str(tf.source).lower().endswith(".zip"):
        yield PASSED, "an unzipped TensorFlow saved model"
    elif "onnx" in w:
        yield WARNING, "only onnx (of what QuPath runs): its ONNX engine is rarely installed"
    elif tf is not None:
        yield FAILED, "the TensorFlow saved model is a zip: QuPath loads the unzipped folder"
    else:
        yield FAILED, f"weights {list(w) or 'none'}: QuPath runs torchscript, TF saved models, onnx (no state dicts)"


@TOOL.rule("Q3", title="format version and axes",
           fix="Write format_version 0.5.3 or later; give every axis a type, the channel axis channel_names, a time "
               "axis unit and scale.")
def q3(s: Subject) -> Iterator[tuple]:
    v = s.view
    problems = []
    if v.v05 and version_tuple(v.format_version) <= (0, 5, 0):
        problems.append(f"format_version {v.format_version}: QuPath reads 0.5.0 as 0.4")
    if v.v05:
        for t in v.tensors:
            for i, a in enumerate(t.axes):
                if a.type == "?":
                    problems.append(f"{t.role} {t.id!r} axis {i} has no type")
                if a.type == "channel" and not a.channel_names:
                    problems.append(f"{t.role} {t.id!r} channel axis has no channel_names")
                if a.type == "time" and (a.unit is None or "scale" not in (t.raw.get("axes") or [{}])[i]):
                    problems.append(f"{t.role} {t.id!r} time axis needs a unit and a scale")
    if problems:
        yield FAILED, join_list(problems)
    else:
        yield PASSED, f"format {v.format_version}; axes typed"


@TOOL.rule("Q4", title="tile growth and output axis order",
           fix="Choose min as a multiple of step, and give the output the input's axes in the input's order.")
def q4(s: Subject) -> Iterator[tuple]:
    v = s.view
    problems = []
    for t in v.inputs:
        for a in t.axes:
            if a.kind == "param" and a.step and a.min is not None and a.min % a.step:
                problems.append(f"{t.id}.{a.id}: min {a.min} is not a multiple of step {a.step} (QuPath grows "
                                "tiles by min)")
    if len(v.inputs) == 1:
        in_ids = [a.id for a in v.inputs[0].axes]
        for t in v.outputs:
            common = [a.id for a in t.axes if a.id in in_ids]
            if common != [i for i in in_ids if i in common]:
                problems.append(f"output {t.id!r} axes {[a.id for a in t.axes]} are not in the input's order "
                                f"{in_ids} (QuPath reads halo and channels at the input's indices)")
    if problems:
        yield FAILED, join_list(problems)
    else:
        yield PASSED, "tiles grow by min; output axes in the input's order"


def qupath_tile(a, image: int, target: int = 512) -> int:
    """QuPath's tile along one axis: ``min`` grown in steps of ``min`` toward ``target``."""
    if a.kind == "fixed":
        return a.size
    if a.kind != "param" or not a.min:
        return image
    return max(a.min, (min(target, image) // a.min) * a.min)


@TOOL.rule("Q5", title="processing and per-tile normalisation",
           fix="Use binarize, clip, scale_linear, scale_range (both percentiles written), sigmoid or "
               "zero_mean_unit_variance; QuPath normalises per tile, so prefer fixed statistics or large tiles.")
def q5(s: Subject) -> Iterator[tuple]:
    from ._simulate import per_tile_deviation

    v = s.view
    problems, warnings = [], []
    for t in v.tensors:
        for p in t.procs:
            if p.id == "ensure_dtype" or p.id in _OPS:
                if p.id == "scale_range" and not {"min_percentile", "max_percentile"} <= set(p.kw):
                    problems.append(f"scale_range on {t.id} without both percentiles (QuPath's defaults are "
                                    "swapped)")
            elif p.id in _SKIPPED_OPS:
                warnings.append(f"{p.id} on {t.id} is skipped by QuPath (with a warning): the values differ")
            else:
                problems.append(f"{p.id} on {t.id} is not implemented by QuPath")
    if problems:
        yield FAILED, join_list(problems)
    elif warnings:
        yield WARNING, join_list(warnings)
    else:
        yield PASSED, "processing QuPath implements"
    norm = [t for t in v.inputs if any(p.id in ("zero_mean_unit_variance", "scale_range") and
                                       p.kw.get("mode") != "fixed" for p in t.procs)]
    if len(v.inputs) != 1 or not norm:
        return
    t = norm[0]
    try:
        x = load_file(s, t.test, f"test tensor of {t.id!r}")
    except NeedsFiles as e:
        yield SKIPPED, f"the per-tile normalisation deviation is not measured ({e})"
        return
    if x.ndim != len(t.axes):
        yield SKIPPED, "the test input's dims do not match its axes (D26)"
        return
    tiles = [qupath_tile(a, n) if a.type == "space" else n for a, n in zip(t.axes, x.shape)]
    dev = per_tile_deviation(x, t, tiles)
    msg = f"QuPath normalises per tile ({tiles}): the normalised test input moves by up to {dev:.3g}"
    yield (WARNING if dev > 1e-4 else PASSED), msg, {"deviation": dev, "tiles": tiles}

