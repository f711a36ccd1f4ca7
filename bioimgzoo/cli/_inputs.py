"""What a ``bioimgzoo predict`` run takes: its input files, and what ``--labels`` reads.

Shared by the plain-files, cluster and OME-Zarr paths of the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["input_files", "labels_plan", "LabelsPlan"]


def input_files(inputs: tuple[str, ...], out_root: Path, package) -> list[Path]:
    """The images to predict: what folders and globs find, less what bioimgzoo itself wrote (said in one line)."""
    from ..descr.tensors import tensor_specs
    from ..io import find_images

    _, outs = tensor_specs(package.descr)
    skipped: list = []
    files = find_images(inputs, out_dir=out_root, output_keys=[o.id for o in outs] + ["labels"], skipped=skipped)
    if skipped:
        shown = ", ".join(str(f) for f, _ in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3
                                                               else "")
        reasons = sorted({why.split(" ")[0] for _, why in skipped})
        why = " or ".join({"inside": "inside the output folder", "named": "named as its outputs"}[r]
                          for r in reasons)
        click.echo(f"Left out {len(skipped)} file(s) written by bioimgzoo ({why}): {shown}", err=True)
    return files


@dataclass(frozen=True)
class LabelsPlan:
    """Which output --labels reads, its foreground/boundary channels, and the model's space axes."""

    output: str
    channels: Any  # runtime.labels.LabelChannels
    spatial: tuple[str, ...]
    link: str | None = None  # --labels-3d: the axis along which slices' objects are linked
    #: a StarDist package (config.stardist): decoded by stardist, as predict_instances does
    stardist: bool = False


def labels_plan(package, *, link: bool = False) -> LabelsPlan:
    """The output --labels turns into instances; an InputError before any work when there is none."""
    from ..descr.sizes import AxisSizes
    from ..descr.tensors import tensor_specs
    from ..errors import InputError
    from ..runtime.processing.whole_sample import stardist_config
    from ..runtime.labels import find_probability_channels

    _, outs = tensor_specs(package.descr)
    sd = stardist_config(package.raw)
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
