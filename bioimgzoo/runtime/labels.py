"""Instance labels from a segmentation model's probabilities: threshold, then split touching objects.

Pure array functions (numpy, scipy.ndimage; scikit-image's watershed when
it is installed, else scipy's):

* :func:`probabilities_to_instances`: one label image from a foreground
  probability map, split by a boundary probability map when there is one
  (each foreground pixel joins its nearest seed, the foreground away from
  boundaries), else by the distance transform (a watershed from the
  centres of objects).
* :func:`find_probability_channels`: which channels of an output are the
  foreground and the boundary, from their names.
* :func:`output_to_labels`: labels for a whole model output (every image,
  time point or folded slice labelled on its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["probabilities_to_instances", "find_probability_channels", "output_to_labels", "LabelChannels"]

_FOREGROUND = ("foreground", "fg", "mask", "nuclei", "nucleus", "cells", "cell", "object", "objects",
               "probability", "prob", "semantic")
_BOUNDARY = ("boundary", "boundaries", "border", "borders", "contour", "contours", "edge", "edges", "membrane")
_BACKGROUND = ("background", "bg")


def probabilities_to_instances(foreground: np.ndarray, boundary: np.ndarray | None = None, *,
                               threshold: float = 0.5, min_size: int = 4, split: bool = True) -> np.ndarray:
    """Label image (int32, 0 = background) from a foreground probability map, 2D or 3D.

    With ``boundary``: the cores ``foreground > threshold and boundary <=
    threshold`` are seeds (with ``split``, cores still touching through a
    weak boundary are split by their distance transform), and every
    foreground pixel joins its nearest seed (Euclidean distance transform),
    so touching objects separated by a predicted boundary become two
    instances; foreground components without any seed stay instances of
    their own.  Without ``boundary`` (and with ``split``): each component
    is split by a watershed of its distance transform, seeded at the
    centres of its round parts.  Components smaller than ``min_size``
    pixels are dropped.
    """
    from scipy import ndimage as ndi

    fg = np.asarray(foreground) > threshold
    if boundary is not None:
        # the cores (foreground away from boundaries) are the seeds; cores a weak boundary left
        # touching are split further by their distance transform
        core = fg & (np.asarray(boundary) <= threshold)
        seeds, n = _distance_split(core) if split else ndi.label(core)
        if n:
            _, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
            labels = np.where(fg, seeds[tuple(idx)], 0)
        else:
            labels = np.zeros(fg.shape, np.int32)
        # foreground components that hold no seed (all boundary): keep them
        rest, n_rest = ndi.label(fg & (labels == 0))
        if n_rest:
            labels = np.where(rest > 0, rest + n, labels)
            n += n_rest
    elif split:
        labels, n = _distance_split(fg)
    else:
        labels, n = ndi.label(fg)
    labels = labels.astype(np.int32)
    if min_size > 1 and n:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return labels


def _distance_split(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """Watershed of the distance transform from its (smoothed) local maxima, inside the foreground."""
    from scipy import ndimage as ndi

    if not fg.any():
        return np.zeros(fg.shape, np.int32), 0
    dist = ndi.distance_transform_edt(fg)
    smooth = ndi.gaussian_filter(dist, 1.0)
    # a peak must stand out by 1 pixel of depth within a radius of 3: the centre of a round part
    peaks = (smooth == ndi.maximum_filter(smooth, size=7)) & (dist >= 2)
    markers, n = ndi.label(peaks)
    if n == 0:
        return ndi.label(fg)
    try:
        from skimage.segmentation import watershed  # the better watershed, when installed

        labels = watershed(-smooth, markers, mask=fg)
    except ImportError:
        depth = smooth.max() - smooth
        scaled = np.round(depth / max(float(depth.max()), 1e-9) * 65000).astype(np.uint16)
        marked = markers.astype(np.int32)
        marked[~fg] = -1  # background is its own basin, so objects never flood across it
        labels = ndi.watershed_ift(scaled, marked)
        labels[labels < 0] = 0
        labels[~fg] = 0
    # foreground the watershed left unlabelled (no marker in its component): its own instance
    rest, n_rest = ndi.label(fg & (labels == 0))
    if n_rest:
        labels = np.where(rest > 0, rest + n, labels)
        n += n_rest
    return labels.astype(np.int32), n


@dataclass(frozen=True)
class LabelChannels:
    """Which channel of an output holds the foreground (and the boundary, if any), and why."""

    foreground: int | None  # None: the output has no channel axis
    boundary: int | None
    reason: str


def find_probability_channels(channel_names: Sequence[str], n_channels: int | None, *,
                              output: str = "output") -> LabelChannels:
    """The foreground and boundary channels of an output, from its channel names.

    A single channel is the foreground; otherwise names decide
    (``foreground``/``nuclei``/... and ``boundary``/``contour``/...); two
    unnamed channels are taken as foreground then boundary (the common
    layout), and said so.
    """
    if n_channels is None:
        return LabelChannels(None, None, "no channel axis: the output is the foreground probability")
    if n_channels == 1:
        return LabelChannels(0, None, "one channel: the foreground probability")
    names = [str(n).lower() for n in channel_names]

    def find(words: Sequence[str], skip: int | None = None) -> int | None:
        for i, name in enumerate(names):
            if i != skip and any(name == w or name.startswith(w) or name.endswith(w) for w in words):
                return i
        return None

    bnd = find(_BOUNDARY)
    fg = find(_FOREGROUND, skip=bnd)
    if fg is None and names:
        rest = [i for i in range(len(names)) if i != bnd and names[i] not in _BACKGROUND]
        fg = rest[0] if len(rest) == 1 else None
    if fg is not None:
        return LabelChannels(fg, bnd, f"channel {names[fg]!r} as foreground"
                             + (f", {names[bnd]!r} as boundary" if bnd is not None else ""))
    if n_channels == 2 and not names:
        return LabelChannels(0, 1, "two unnamed channels: 0 taken as foreground, 1 as boundary")
    shown = ", ".join(repr(n) for n in channel_names) or f"{n_channels} unnamed"
    raise InputError(f"labels: cannot tell which channel of {output} ({shown}) is the foreground probability; "
                     "labels need an output of foreground (and optionally boundary) probabilities")


def output_to_labels(array: np.ndarray, axes: Sequence[str], *, spatial: Sequence[str],
                     channels: LabelChannels, threshold: float = 0.5,
                     min_size: int = 4) -> tuple[np.ndarray, tuple[str, ...]]:
    """Instance labels for a whole output laid out as ``axes``; returns labels and their axes.

    ``spatial``: the axes labelled together (the model's own space axes,
    e.g. ``y, x`` for a 2D model); every other axis (time, a z stack
    folded through a 2D model, batch) is labelled slice by slice, labels
    counted from 1 in each.  The channel axis is dropped.
    """
    axes = tuple(axes)
    array = np.asarray(array)
    if channels.foreground is not None:
        if "channel" not in axes:
            raise InputError("labels: the output has no channel axis to pick the foreground from")
        c = axes.index("channel")
        fg = np.take(array, channels.foreground, axis=c)
        bd = np.take(array, channels.boundary, axis=c) if channels.boundary is not None else None
        axes = axes[:c] + axes[c + 1:]
    else:
        fg, bd = array, None
    space = [i for i, a in enumerate(axes) if a in spatial]
    other = [i for i in range(len(axes)) if i not in space]
    order = other + space
    fg_t = np.transpose(fg, order)
    bd_t = np.transpose(bd, order) if bd is not None else None
    lead = fg_t.shape[:len(other)]
    out = np.zeros(fg_t.shape, np.int32)
    for index in np.ndindex(*lead):
        out[index] = probabilities_to_instances(fg_t[index], None if bd_t is None else bd_t[index],
                                                threshold=threshold, min_size=min_size)
    back = np.argsort(order)
    return np.transpose(out, back), axes
