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
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["probabilities_to_instances", "find_probability_channels", "output_to_labels", "link_slices",
           "LabelChannels", "LINK_IOU"]

_FOREGROUND = ("foreground", "fg", "mask", "nuclei", "nucleus", "cells", "cell", "object", "objects",
               "probability", "prob", "semantic")
_BOUNDARY = ("boundary", "boundaries", "border", "borders", "contour", "contours", "edge", "edges", "membrane")
_BACKGROUND = ("background", "bg")


#: smoothing of the distance transform before its peaks are taken (pixels)
_SIGMA = 1.0
#: a peak is the largest smoothed distance within this window (a radius of 3)
_PEAK_WINDOW = 7
#: rows beyond a band that its smoothing and peak filter read: with them, a band's result is exact
_BAND_MARGIN = int(4.0 * _SIGMA + 0.5) + _PEAK_WINDOW // 2
#: rows (first axis) per band of the whole-image filters: bounds their temporary arrays
_BAND_ROWS = 512

Progress = Callable[[float], None]


def probabilities_to_instances(foreground: np.ndarray, boundary: np.ndarray | None = None, *,
                               threshold: float = 0.5, min_size: int = 4, split: bool = True,
                               progress: Progress | None = None) -> np.ndarray:
    """Label image (int32, 0 = background) from a foreground probability map, 2D or 3D.

    With ``boundary``: the cores ``foreground > threshold and boundary <=
    threshold`` are seeds (with ``split``, cores still touching through a
    weak boundary are split by their distance transform), and every
    foreground pixel joins the nearest seed of its own object (Euclidean
    distance), so touching objects separated by a predicted boundary become
    two instances; foreground components without any seed stay instances of
    their own.  Without ``boundary`` (and with ``split``): each component
    is split by a watershed of its distance transform, seeded at the
    centres of its round parts.  Components smaller than ``min_size``
    pixels are dropped.

    Memory stays a few bytes per pixel: distance transforms and watersheds
    run object by object, on each object's bounding box (the result is the
    whole-image computation's: no object reaches another through the
    background), and the smoothing runs in bands of rows.  ``progress``, when
    given, is called with the fraction done (0 to 1) as objects are done.
    """
    from scipy import ndimage as ndi

    report = progress or (lambda fraction: None)
    fg = np.asarray(foreground) > threshold
    if boundary is not None:
        # the cores (foreground away from boundaries) are the seeds; cores a weak boundary left
        # touching are split further by their distance transform
        core = fg & (np.asarray(boundary) <= threshold)
        seeds, n = _distance_split(core, lambda f: report(0.7 * f)) if split else ndi.label(core)
        del core
        labels, n = _grow_seeds(fg, seeds, n, lambda f: report(0.7 + 0.3 * f))
        del seeds
    elif split:
        labels, n = _distance_split(fg, report)
    else:
        labels, n = ndi.label(fg)
    del fg
    labels = labels.astype(np.int32, copy=False)
    if min_size > 1 and n:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    report(1.0)
    return labels


def _boxes(components: np.ndarray, n: int, margin: int) -> list:
    """Each component's bounding box widened by ``margin`` (None for a number without pixels)."""
    from scipy import ndimage as ndi

    shape = components.shape
    return [None if sl is None else tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size))
                                          for s, size in zip(sl, shape))
            for sl in ndi.find_objects(components, n)]


def _every(total: int, report: Progress) -> Callable[[int], None]:
    """A per-object progress call that reports about every 1%."""
    step = max(total // 100, 1)

    def tick(i: int) -> None:
        if i % step == 0:
            report(i / max(total, 1))
    return tick


def _distance_split(fg: np.ndarray, report: Progress) -> tuple[np.ndarray, int]:
    """Watershed of the distance transform from its (smoothed) local maxima, inside the foreground.

    Object by object, in the order of their first pixel: an object with one centre (or none) is one
    instance; one with several is split by a watershed from them.  The labels are written into the
    array of objects itself (negated while the others are still being read), so the distance, the
    centres and the result cost about 10 bytes per pixel.
    """
    from scipy import ndimage as ndi

    labels, n_comp = ndi.label(fg)
    if n_comp == 0:
        return labels.astype(np.int32), 0
    # the distance of an object's pixel to the background is found within its bounding box plus one
    # pixel (the nearest background pixel is closer than the box's faces), with the other objects of
    # that box as foreground: the same values as the whole image's transform, a box at a time
    dist = np.zeros(fg.shape, np.float32)
    tick = _every(n_comp, lambda f: report(0.4 * f))
    for i, box in enumerate(_boxes(labels, n_comp, 1), 1):
        tick(i)
        if box is None:
            continue
        own = labels[box] == i
        dist[box][own] = ndi.distance_transform_edt(labels[box] > 0)[own]
    peaks = _peaks(dist)
    report(0.5)
    watershed = _watershed_function()
    scale = float(dist.max())  # the depth scale of scipy's watershed (used without scikit-image)
    tick = _every(n_comp, lambda f: report(0.5 + 0.5 * f))
    margin = int(4.0 * _SIGMA + 0.5)
    count = 0
    for i, box in enumerate(_boxes(labels, n_comp, margin), 1):
        tick(i)
        if box is None:
            continue
        own = labels[box] == i
        markers, k = ndi.label(peaks[box] & own)
        if k <= 1:  # one centre, or none: one instance
            count += 1
            labels[box][own] = -count
            continue
        # several centres: the object is split by a watershed of its smoothed distance (exact: the box
        # holds the smoothing's margin)
        smooth = ndi.gaussian_filter(dist[box], _SIGMA, output=np.float32)
        split = watershed(smooth, markers, own, scale)
        labels[box][own] = -(split[own] + count)
        count += k
    np.negative(labels, out=labels)
    return labels, count


def _peaks(dist: np.ndarray) -> np.ndarray:
    """Centres of round parts: the smoothed distance's local maxima at least 2 pixels deep.

    Computed in bands of rows with :data:`_BAND_MARGIN` rows of context each side, so the
    temporary arrays are a band's, and every value is the whole-image filter's.
    """
    from scipy import ndimage as ndi

    peaks = np.zeros(dist.shape, bool)
    rows = dist.shape[0]
    for r0 in range(0, rows, _BAND_ROWS):
        r1 = min(r0 + _BAND_ROWS, rows)
        a, b = max(r0 - _BAND_MARGIN, 0), min(r1 + _BAND_MARGIN, rows)
        d = dist[a:b]
        smooth = ndi.gaussian_filter(d, _SIGMA, output=np.float32)
        top = ndi.maximum_filter(smooth, size=_PEAK_WINDOW)
        peaks[r0:r1] = ((smooth == top) & (d >= 2))[r0 - a:r1 - a]
    return peaks


def _watershed_function() -> Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]:
    """``flood(smooth_distance, markers, mask, scale)``: scikit-image's watershed when installed, else scipy's."""
    try:
        from skimage.segmentation import watershed  # the better watershed, when installed
    except ImportError:
        from scipy import ndimage as ndi

        def flood(smooth, markers, mask, scale):
            depth = scale - smooth
            scaled = np.round(np.clip(depth, 0, None) / max(scale, 1e-9) * 65000).astype(np.uint16)
            marked = markers.astype(np.int32)
            marked[~mask] = -1  # background is its own basin, so objects never flood across it
            out = ndi.watershed_ift(scaled, marked)
            out[~mask] = 0
            out[out < 0] = 0
            return out
        return flood

    def flood(smooth, markers, mask, scale):
        return watershed(-smooth, markers, mask=mask)
    return flood


def _grow_seeds(fg: np.ndarray, seeds: np.ndarray, n: int, report: Progress) -> tuple[np.ndarray, int]:
    """Every foreground pixel takes the label of the nearest seed in its own object; seedless objects their own.

    Objects in the order of their first pixel, their instances numbered on; written into the array
    of objects itself (negated while the others are still being read).
    """
    from scipy import ndimage as ndi

    labels, n_comp = ndi.label(fg)
    count = 0
    tick = _every(n_comp, report)
    for i, box in enumerate(_boxes(labels, n_comp, 0), 1):
        tick(i)
        if box is None:
            continue
        own = labels[box] == i
        mine = np.where(own, seeds[box], 0)
        found = np.unique(mine[mine > 0])
        if found.size <= 1:
            count += 1
            labels[box][own] = -count
            continue
        nearest = ndi.distance_transform_edt(mine == 0, return_distances=False, return_indices=True)
        grown = mine[tuple(nearest)][own]
        labels[box][own] = -(np.searchsorted(found, grown).astype(np.int32) + 1 + count)
        count += found.size
    np.negative(labels, out=labels)
    return labels.astype(np.int32, copy=False), count


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
                     channels: LabelChannels, threshold: float = 0.5, min_size: int = 4,
                     link: str | None = None, progress: Progress | None = None
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Instance labels for a whole output laid out as ``axes``; returns labels and their axes.

    ``spatial``: the axes labelled together (the model's own space axes,
    e.g. ``y, x`` for a 2D model); every other axis (time, a z stack
    folded through a 2D model, batch) is labelled slice by slice, and the
    labels are numbered on from slice to slice, so every object of the
    output has a label of its own (counting the labels counts the objects).
    ``link``: an axis labelled slice by slice (``"z"``) along which the
    objects of neighbouring slices that overlap (intersection over union of
    at least :data:`LINK_IOU`) are linked into one object (one label across
    the slices).  The channel axis is dropped.  ``progress``: called with
    the fraction done (0 to 1).
    """
    axes = tuple(axes)
    array = np.asarray(array)
    report = progress or (lambda fraction: None)
    if channels.foreground is not None:
        if "channel" not in axes:
            raise InputError("labels: the output has no channel axis to pick the foreground from")
        c = axes.index("channel")
        pick = [slice(None)] * array.ndim
        pick[c] = channels.foreground
        fg = array[tuple(pick)]  # a view, no copy of the output
        if channels.boundary is not None:
            pick[c] = channels.boundary
            bd = array[tuple(pick)]
        else:
            bd = None
        axes = axes[:c] + axes[c + 1:]
    else:
        fg, bd = array, None
    space = [i for i, a in enumerate(axes) if a in spatial]
    other = [i for i in range(len(axes)) if i not in space]
    if link is not None and link not in [axes[i] for i in other]:
        raise InputError(f"labels: cannot link objects along '{link}': the output has no such axis labelled "
                         f"slice by slice (axes {', '.join(axes)}; labelled together: {', '.join(spatial)})")
    order = other + space
    fg_t = np.transpose(fg, order)
    bd_t = np.transpose(bd, order) if bd is not None else None
    lead = fg_t.shape[:len(other)]
    slices = list(np.ndindex(*lead))
    out = np.zeros(fg_t.shape, np.int32) if len(slices) > 1 else None  # one slice: its labels are the output
    count = 0
    for k, index in enumerate(slices):
        part = probabilities_to_instances(
            fg_t[index], None if bd_t is None else bd_t[index], threshold=threshold, min_size=min_size,
            progress=lambda f, k=k: report(0.95 * (k + f) / len(slices)))
        if out is None:
            out = part.reshape(fg_t.shape)
            break
        found = part > 0
        part[found] += count  # numbered on: one label per object of the whole output
        out[index] = part
        if found.any():
            count = int(part.max())
    if out is None:  # an axis of length 0: nothing to label
        out = np.zeros(fg_t.shape, np.int32)
    if link is not None:
        _link(out, [axes[i] for i in other].index(link))
    report(1.0)
    back = np.argsort(order)
    return np.transpose(out, back), axes


#: objects of neighbouring slices overlapping at least this much (intersection over union) are one object
LINK_IOU = 0.25


def _link(labels: np.ndarray, axis: int) -> None:
    """Link the objects of neighbouring slices along ``axis`` (in place, :func:`link_slices`), then renumber 1..n."""
    moved = np.moveaxis(labels, axis, 0)
    if not labels.any():
        return
    for z in range(1, moved.shape[0]):
        link_slices(moved[z - 1], moved[z])
    # renumbered 1..n, in the order of their numbers
    used = np.unique(labels)
    used = used[used > 0]
    number = np.zeros(int(used[-1]) + 1, np.int32)
    number[used] = np.arange(1, used.size + 1, dtype=np.int32)
    labels[...] = number[labels]


def link_slices(previous: np.ndarray, current: np.ndarray) -> None:
    """Give the objects of ``current`` that continue an object of ``previous`` its label (in place).

    Each object of ``current`` takes the label of the object of ``previous`` it
    overlaps most, when their intersection over union is at least
    :data:`LINK_IOU` and no better overlapping object took that label first;
    the others keep their own (labels of the two slices are distinct).
    """
    both = (previous > 0) & (current > 0)
    if not both.any():
        return
    a, b = previous[both].astype(np.int64), current[both].astype(np.int64)
    base = int(max(previous.max(), current.max())) + 1
    pairs, inter = np.unique(a * base + b, return_counts=True)
    pa, pb = pairs // base, pairs % base
    area_prev = np.bincount(previous.ravel(), minlength=base)
    area_cur = np.bincount(current.ravel(), minlength=base)
    iou = inter / (area_prev[pa] + area_cur[pb] - inter)
    same = np.arange(base, dtype=previous.dtype)
    taken_prev, taken_cur = set(), set()
    for i in np.argsort(-iou, kind="stable"):
        if iou[i] < LINK_IOU:
            break
        x, y = int(pa[i]), int(pb[i])
        if x in taken_prev or y in taken_cur:
            continue
        taken_prev.add(x)
        taken_cur.add(y)
        same[y] = x
    current[...] = same[current]
