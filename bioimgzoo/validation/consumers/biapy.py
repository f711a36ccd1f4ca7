"""BiaPy's ``check_bmz_model_compatibility`` (a static check the zoo CI runs as is): rules ``B1``-``B5``."""

from __future__ import annotations

from typing import Iterator, Mapping

from .._registry import FAILED, NOT_APPLICABLE, PASSED
from ._base import Subject, tool
from ._view import version_tuple
from .deepimagej import render_markdown

__all__ = ["TOOL", "WORKFLOW_TAGS"]

TOOL = tool("biapy", "BiaPy rules", order=54, render_markdown=render_markdown)

WORKFLOW_TAGS = ("semantic-segmentation", "segmentation", "instance-segmentation", "detection", "denoising",
                 "super-resolution", "self-supervision", "classification", "image-to-image", "image-restoration",
                 "pix2pix")
#: the kwargs BiaPy reads a semantic-segmentation network's class count from, and its own networks' names
_CLASS_KWARGS = ("n_classes", "out_channels", "output_channels", "classes")
_BIAPY_NETS = {"unet", "resunet", "resunet++", "seunet", "attention_unet", "resunet_se", "unetr", "multiresunet",
               "unext_v1", "unext_v2", "hrnet"}
_PRE = {"zero_mean_unit_variance", "fixed_zero_mean_unit_variance", "scale_range", "scale_linear"}


@TOOL.rule("B1", title="state dict, one input", fix="Ship pytorch_state_dict weights and give the model one input.")
def b1(s: Subject) -> Iterator[tuple]:
    problems = []
    if "pytorch_state_dict" not in s.view.weights:
        problems.append(f"no pytorch_state_dict weights (BiaPy loads only those; has {list(s.view.weights)})")
    if len(s.view.inputs) != 1:
        problems.append(f"{len(s.view.inputs)} inputs (BiaPy needs exactly one)")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "pytorch_state_dict weights, one input"


@TOOL.rule("B2", title="architecture kwargs written",
           fix="Write the state-dict architecture's kwargs explicitly (an empty mapping is fine); for a "
               "semantic-segmentation model name its output channels (out_channels or n_classes).")
def b2(s: Subject) -> Iterator[tuple]:
    w = s.view.weights.get("pytorch_state_dict")
    if w is None:
        yield NOT_APPLICABLE, "no pytorch_state_dict weights (B1 fails first)"
        return
    arch = w.get("architecture")
    has = "kwargs" in arch if isinstance(arch, Mapping) else "kwargs" in w.raw
    if not has:
        yield FAILED, "the state-dict architecture has no 'kwargs' key (BiaPy reads it without a default)"
        return
    kwargs = (arch.get("kwargs") if isinstance(arch, Mapping) else w.raw.get("kwargs")) or {}
    tags = {t.lower() for t in s.view.tags}
    semantic = "semantic-segmentation" in tags or ("segmentation" in tags and "instance-segmentation" not in tags)
    names = [str(arch.get(k, "")).lower().replace(".py", "") for k in ("callable", "source")] \
        if isinstance(arch, Mapping) else []
    if semantic and isinstance(kwargs, Mapping) and not any(_BIAPY_NETS & set(names)) and \
            not any(isinstance(kwargs.get(k), (int, list)) for k in _CLASS_KWARGS):
        # check_bmz_model_compatibility: "Couldn't find the classes this model is returning"
        yield FAILED, (f"a semantic-segmentation model whose kwargs name none of {list(_CLASS_KWARGS)}: BiaPy "
                       "cannot tell how many classes it returns and refuses it")
        return
    yield PASSED, "the architecture's kwargs are written"


@TOOL.rule("B3", title="workflow tag",
           fix="Tag the model with its BiaPy workflow: semantic-segmentation, instance-segmentation, detection, "
               "denoising, super-resolution, self-supervision, classification or image-to-image.")
def b3(s: Subject) -> Iterator[tuple]:
    tags = {t.lower() for t in s.view.tags}
    found = [t for t in WORKFLOW_TAGS if t in tags]
    if "segmentation" in tags and "instance-segmentation" in tags and found == ["segmentation",
                                                                               "instance-segmentation"]:
        found = ["instance-segmentation"]
    if found:
        yield PASSED, f"workflow tag {found[0]!r}"
    else:
        yield FAILED, f"no BiaPy workflow tag among the tags {sorted(tags)}"


@TOOL.rule("B4", title="input axes bcyx or bczyx", fix="Lay the input out as batch, channel, (z,) y, x.")
def b4(s: Subject) -> Iterator[tuple]:
    bad = []
    for t in s.view.inputs:
        letters = "".join(a.letter for a in t.axes)
        if letters not in ("bcyx", "bczyx"):
            bad.append(f"input {t.id!r} axes {letters!r}")
    if bad:
        yield FAILED, "; ".join(bad) + " (BiaPy needs exactly bcyx or bczyx)"
    else:
        yield PASSED, "input axes " + ", ".join("".join(a.letter for a in t.axes) for t in s.view.inputs)


@TOOL.rule("B5", title="preprocessing and format version",
           fix="Keep at most one of zero_mean_unit_variance, fixed_zero_mean_unit_variance, scale_range (with both "
               "percentiles) or scale_linear (plus a float ensure_dtype); write format_version 0.5.3 or later.")
def b5(s: Subject) -> Iterator[tuple]:
    v = s.view
    problems = []
    if v.v05 and version_tuple(v.format_version) <= (0, 5, 0):
        problems.append(f"format_version {v.format_version}: BiaPy reads 0.5.0 as 0.4")
    for t in v.inputs:
        ops = []
        for p in t.procs:
            if p.id == "ensure_dtype":
                if not str(p.kw.get("dtype", "float32")).startswith("float"):
                    problems.append(f"ensure_dtype to {p.kw.get('dtype')} on {t.id}")
                continue
            if p.id not in _PRE:
                problems.append(f"{p.id} on {t.id} is not a preprocessing BiaPy applies")
                continue
            if p.id == "scale_range" and not {"min_percentile", "max_percentile"} <= set(p.kw):
                problems.append(f"scale_range on {t.id} without explicit percentiles")
            ops.append(p.id)
        if len(ops) > 1:
            problems.append(f"{len(ops)} preprocessing ops on {t.id} ({ops}); BiaPy takes at most one")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "preprocessing BiaPy applies"
