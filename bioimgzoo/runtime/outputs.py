"""What a prediction's outputs carry into image files: their calibration, and the output labels come from.

Shared by ``bioimgzoo predict`` (:mod:`bioimgzoo.cli.predict`) and the
server's files endpoint (:mod:`bioimgzoo.serve`), so a TIFF written by
either opens in Fiji with the same pixel sizes and the same labels:

* :func:`output_calibration`: the input's pixel sizes carried to an output
  (scaled as the model scales each axis), else the sizes the description
  declares;
* :func:`labels_plan`: which output instance labels are made from, and its
  foreground/boundary channels; an :class:`~bioimgzoo.errors.InputError`
  before any work when the model has no such output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..descr.sizes import AxisSizes
from ..descr.tensors import tensor_specs
from ..errors import InputError
from ..io import Calibration
from ..io.images import normalize_unit
from .processing.whole_sample import stardist_config
from .labels import LabelChannels, find_probability_channels

__all__ = ["LabelsPlan", "labels_plan", "output_calibration"]


@dataclass(frozen=True)
class LabelsPlan:
    """Which output --labels reads, its foreground/boundary channels, and the model's space axes."""

    output: str
    channels: LabelChannels | None  # None for a StarDist package
    spatial: tuple[str, ...]
    link: str | None = None  # --labels-3d: the axis along which slices' objects are linked
    #: a StarDist package (config.stardist): decoded by stardist, as predict_instances does
    stardist: bool = False


def labels_plan(package: Any, *, link: bool = False) -> LabelsPlan:
    """The output instance labels are made from (``package``: a Package or a Model); an InputError before any work
    when there is none.  ``link``: --labels-3d (objects of neighbouring z slices linked)."""
    _, outs = tensor_specs(package.descr)
    sd = stardist_config(getattr(package, "package", package).raw)
    if sd is not None and outs:
        if link:
            raise InputError("--labels-3d links slices labelled one by one; this StarDist package's labels come "
                             "from StarDist's own decoder: drop --labels-3d")
        return LabelsPlan(outs[0].id, None, sd.spatial, stardist=True)
    problems = []
    for spec in outs:
        spatial = tuple(a.id for a in spec.axes if a.kind == "space")
        if not spatial:
            problems.append(f"'{spec.id}' has no space axes")
            continue
        n = None
        if "channel" in spec.axis_ids:
            sz = spec.sizes.get("channel")
            n = sz.min if isinstance(sz, AxisSizes) else len(spec.channel_names) or None
        try:
            found = find_probability_channels(spec.channel_names, n, output=f"output '{spec.id}'")
        except InputError as e:
            problems.append(str(e))
            continue
        if link and "z" in spatial:
            raise InputError(f"--labels-3d links the slices of a z stack labelled slice by slice; this model's "
                             f"output '{spec.id}' is 3D ({', '.join(spatial)}), so --labels labels in 3D already: "
                             "drop --labels-3d")
        return LabelsPlan(spec.id, found, spatial, "z" if link else None)
    raise InputError("--labels needs an output of foreground (and optionally boundary) probabilities; this "
                     f"model has none ({'; '.join(problems)}): drop --labels")


def output_calibration(model: Any, output_id: str, calibration: Calibration, *, channels: bool) -> Calibration:
    """The input's pixel sizes carried to an output (scaled as the model scales that axis), else the model's.

    ``channels``: keep the output's channel names (not for a labels image).
    """
    out = next(t for t in model.outputs if t.id == output_id)
    primary = model.inputs[0]
    sizes, unit = {}, calibration.unit
    for a in out.axes:
        if a.kind not in ("space", "time"):
            continue
        ratio = out.scale.get(a.id, 1.0) / (primary.scale.get(a.id, 1.0) or 1.0)
        if a.id in calibration.pixel_size:
            sizes[a.id] = calibration.pixel_size[a.id] * ratio
    for a in ("t", "z"):  # axes a 2D model folds carry over unchanged
        if a in calibration.pixel_size and a not in sizes:
            sizes[a] = calibration.pixel_size[a]
    if not {"x", "y"} <= set(sizes):
        declared = _declared_scales(model, output_id)
        if declared:
            sizes, unit = {**declared[0], **{k: v for k, v in sizes.items() if k in "tz"}}, declared[1]
    names = tuple(out.channel_names) if channels else ()
    return Calibration(sizes, unit, calibration.time_unit, names)


def _declared_scales(model: Any, output_id: str) -> tuple[dict[str, float], str] | None:
    """The output's space scales and unit as the description declares them, when it declares a unit."""
    for t in model.descr.outputs:
        if str(t.id) != output_id:
            continue
        sizes, unit = {}, None
        for a in t.axes:
            u = getattr(a, "unit", None)
            if u is not None and str(getattr(a, "type", "")) == "space":
                sizes[str(a.id)] = float(getattr(a, "scale", 1.0))
                unit = str(u)
        if {"x", "y"} <= set(sizes) and unit:
            return sizes, normalize_unit(unit)
    return None
