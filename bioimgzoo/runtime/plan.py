"""Tile plans: how a large input is cut into model-sized windows and stitched.

Everything here is a pure function of integers (image shape, the model's
valid sizes, halo, output scale) so any executor can drive the same plan:
the in-memory runtime, or an out-of-core zarr/Dask executor.

Vocabulary (after :func:`skimage.util.apply_parallel`): a *tile* is the
window of input the model sees (``chunks``); ``depth`` is the halo, the
margin of each window whose output is discarded because it lacks context;
windows that reach past the image are padded (``mode``, reflect by
default).  Along one axis of length ``n``:

* window starts are multiples of ``align`` (the model's size step, so a
  U-Net's pooling grid lines up with a whole-image prediction), except the
  last window, which is moved back to end exactly at the image edge;
* consecutive windows overlap by at least ``2 * halo``;
* each output pixel is taken from exactly one window, the one in whose
  *trusted* region (the window less ``halo`` on each inner side) it lies,
  splitting overlaps in the middle; at the image edges the window edge is
  the image edge, so no context is lost there.

The result: no seams, and a tiled prediction equal to the whole-image
prediction wherever the receptive field fits in ``halo``.

:func:`plan_sample` applies this to one sample of a model: it picks the
window size per axis (the caller's ``tile=``, else :func:`choose_tile_size`),
the halo (the caller's, else the outputs' declared halo), and precomputes,
per tile, the region each input is read from (with its padding) and the
region each output is written to: a :class:`SamplePlan`, which the
executors (:mod:`bioimgzoo.runtime.executor`) follow without doing any
geometry of their own.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, NamedTuple, Sequence

from ..descr.sizes import AxisSizes, SizeRef, valid_size_at_least, valid_size_at_most
from ..descr.tensors import TensorSpec, output_scale
from ..errors import InputError

log = logging.getLogger("bioimgzoo")

__all__ = ["AxisWindow", "Tile", "plan_axis", "plan_tiles", "choose_tile_size", "MAX_WINDOW_ELEMENTS",
           "Region", "Read", "Write", "TileIO", "SamplePlan", "plan_sample", "pow2_divisor", "grid_period",
           "output_links"]


def choose_tile_size(n: int, sizes: AxisSizes, *, halo: int, target: int) -> int:
    """Pick a window size along one axis.

    The whole axis (padded to a valid size) when that is at most ``target``;
    otherwise the largest valid size <= ``target``, raised where needed so
    that the window is at least ``2 * halo + step``-ish bigger than its halo.
    """
    whole = valid_size_at_least(sizes, n)
    if whole <= target or sizes.step == 0:
        return whole
    tile = valid_size_at_most(sizes, max(target, sizes.min))
    minimum = valid_size_at_least(sizes, 4 * halo + 1) if halo else sizes.min
    return min(whole, max(tile, minimum))


@dataclass(frozen=True)
class AxisWindow:
    """One window along one axis, in input pixels.

    ``start``/``stop``: the window the model sees (may reach past
    ``[0, n)``: that part is padded).  ``inner_start``/``inner_stop``: the
    part of the image this window is responsible for.
    """

    start: int
    stop: int
    inner_start: int
    inner_stop: int


def plan_axis(n: int, tile: int, *, halo: int = 0, align: int = 1, scale: Fraction | float = 1) -> list[AxisWindow]:
    """Cut one axis of length ``n`` into windows of length ``tile``.

    Parameters
    ----------
    n : int
        Image length along the axis.
    tile : int
        Window length (a size the model accepts).
    halo : int
        Input pixels at each inner window edge whose output is discarded.
    align : int
        Window starts are multiples of this (except a last window flush
        with the image end).
    scale : Fraction or float
        Output pixels per input pixel; inner boundaries are placed so they
        fall on whole output pixels.

    Returns
    -------
    list of AxisWindow
        Inner regions partition ``[0, n)`` in order.
    """
    if n <= 0 or tile <= 0:
        raise ValueError(f"cannot tile length {n} with windows of {tile}")
    if tile >= n:
        return [AxisWindow(0, tile, 0, n)]
    if 2 * halo >= tile:
        raise ValueError(f"halo {halo} leaves nothing of a {tile}-pixel window (need 2 * halo < tile)")
    stride = tile - 2 * halo
    align = max(1, int(align))
    stride = max(align, (stride // align) * align) if stride >= align else stride
    starts = []
    s = 0
    while True:
        if s + tile >= n:
            starts.append(n - tile)
            break
        starts.append(s)
        s += stride
    starts = sorted(set(starts))
    # split each overlap between neighbours in the middle of their trusted regions,
    # snapped so the boundary maps onto whole output pixels
    grain = _boundary_grain(scale)
    bounds = [0]
    for a, b in zip(starts, starts[1:]):
        trusted_end_a = a + tile - halo
        trusted_start_b = b + halo
        mid = (trusted_start_b + trusted_end_a) // 2
        mid = (mid // grain) * grain
        if not (trusted_start_b <= mid <= trusted_end_a):
            mid = ((trusted_start_b + grain - 1) // grain) * grain
        bounds.append(min(max(mid, bounds[-1]), n))
    bounds.append(n)
    windows = [AxisWindow(s, s + tile, lo, hi) for s, lo, hi in zip(starts, bounds, bounds[1:]) if hi > lo]
    return windows


def _boundary_grain(scale: Fraction | float) -> int:
    """Input-pixel multiple at which boundaries land on whole output pixels."""
    frac = Fraction(scale).limit_denominator(64) if not isinstance(scale, Fraction) else scale
    return frac.denominator  # boundary * p/q is whole when boundary is a multiple of q


@dataclass(frozen=True)
class Tile:
    """One window across all tiled axes: ``{axis_id: AxisWindow}``."""

    windows: Mapping[str, AxisWindow]


def plan_tiles(
    shape: Mapping[str, int],
    tile: Mapping[str, int],
    *,
    halo: Mapping[str, int] | None = None,
    align: Mapping[str, int] | None = None,
    scale: Mapping[str, Fraction | float] | None = None,
) -> list[Tile]:
    """The Cartesian product of :func:`plan_axis` over the tiled axes (C order)."""
    halo = halo or {}
    align = align or {}
    scale = scale or {}
    axes: Sequence[str] = list(shape)
    per_axis = [plan_axis(shape[a], tile[a], halo=halo.get(a, 0), align=align.get(a, 1), scale=scale.get(a, 1))
                for a in axes]
    return [Tile(dict(zip(axes, combo))) for combo in itertools.product(*per_axis)]


# ----------------------------------------------------------------- sample plans
#: default window edge (pixels per tiled axis) by number of tiled axes
_TARGET_EDGE = {1: 1 << 16, 2: 1024, 3: 128, 4: 64}
#: most values one window of one input may hold (4 GiB of float32): a larger window, from a
#: description's fixed size or a tile= choice, is refused before anything tries to allocate it
MAX_WINDOW_ELEMENTS = 1 << 30

#: a box in an array: one slice (start and stop given) per axis
Region = tuple[slice, ...]
#: per output axis that follows a tiled input axis: (input axis id, output pixels per input pixel, offset)
Link = tuple[str, Fraction, int]


class Read(NamedTuple):
    """Where one window of one input comes from."""

    region: Region  # the part of the window inside the input (read from the source)
    pad: tuple[tuple[int, int], ...] | None  # numpy.pad widths to reach the window shape; None: no padding


class Write(NamedTuple):
    """Where one window's output goes: ``output[target] = window_output[source]``."""

    target: Region
    source: Region


@dataclass(frozen=True)
class TileIO:
    """One tile with the regions its inputs are read from and its outputs written to.

    ``writes[output_id]`` is None for an output whose size depends on the
    data (then the plan has one tile and its output is taken as it is).
    """

    tile: Tile
    reads: Mapping[str, Read]
    writes: Mapping[str, Write | None]


@dataclass(frozen=True)
class SamplePlan:
    """How one sample is cut into windows and where each window's output goes.

    Built by :func:`plan_sample` from shapes alone, so one plan serves every
    sample of that shape, and any executor (in memory or out of core) can
    follow it: read ``tiles[i].reads``, run the network on windows of
    ``window_shapes``, write ``tiles[i].writes`` into outputs of
    ``out_shapes``.  Every output element is written by exactly one tile.
    """

    tiled: tuple[str, ...]  # tiled axis ids of the primary input
    tiles: tuple[TileIO, ...]
    window_shapes: Mapping[str, tuple[int, ...]]  # input id -> window shape (batch 1)
    out_shapes: Mapping[str, tuple[int, ...] | None]  # output id -> full shape (None: as the network returns)
    out_links: Mapping[str, Mapping[str, Link]]  # output id -> output axis -> link to a primary axis
    image_len: Mapping[str, int]  # primary tileable axis -> image length
    #: windows of plans with equal keys have equal shapes and can share an engine batch
    key: tuple = ()


def plan_sample(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                shapes: Mapping[str, tuple[int, ...]], *, tile: int | Mapping[str, int] | None = None,
                halo: int | Mapping[str, int] | None = None,
                align: Mapping[str, int] | None = None) -> SamplePlan:
    """Plan one sample whose inputs have ``shapes`` (model layout, batch 1).

    Parameters
    ----------
    inputs, outputs : sequence of TensorSpec
        The model's tensors; the first input with a space or time axis is
        the *primary* one, whose tileable axes are tiled.
    shapes : mapping
        Input id to array shape, in the input's axis order.
    tile, halo : int or dict by axis id, optional
        As for :meth:`bioimgzoo.runtime.model.Model.predict`.
    align : dict by axis id, optional
        Window starts are multiples of this (default: the size step, or the largest power of two
        dividing a fixed window, up to 64); the measured receptive field passes the network's own
        period, which a stride shorter than the default would otherwise lose.

    Raises
    ------
    InputError
        For a tile or halo the model cannot take, an image that cannot be
        tiled, or a window or output too large to allocate.
    """
    primary = next((t for t in inputs if any(a.kind in ("space", "time") for a in t.axes)), inputs[0])
    shape_p = shapes[primary.id]
    tileable = [a.id for a in primary.axes if a.kind in ("space", "time")
                and isinstance(primary.sizes.get(a.id), AxisSizes)]
    links = {out.id: output_links(primary, out) for out in outputs}
    for name, option in (("tile", tile), ("halo", halo)):
        if isinstance(option, Mapping):
            unknown = sorted(set(map(str, option)) - set(tileable))
            if unknown:
                raise InputError(f"{name}= names axis {', '.join(map(repr, unknown))}, which input "
                                 f"'{primary.id}' cannot tile; its tileable axes are {', '.join(tileable) or 'none'}")
    in_halo = _input_halo(outputs, links, halo, tileable)
    image_len = {a: shape_p[primary.axis_ids.index(a)] for a in tileable}
    target = _TARGET_EDGE.get(len(tileable), 64)
    tile_sizes = {a: _tile_size(primary, a, image_len[a], tile, halo=in_halo.get(a, 0), target=target)
                  for a in tileable}
    tiled = tuple(a for a in tileable if tile_sizes[a] < image_len[a])
    if tiled:
        _check_tileable(outputs, links, tiled, tile_sizes, image_len, in_halo)
    aligns = {a: (align or {}).get(a) or primary.sizes[a].step or pow2_divisor(tile_sizes[a], 64) for a in tiled}
    scales = {}
    for a in tiled:  # boundaries must land on whole pixels of the most finely scaled output
        fs = [f for out in outputs for (ia, f, _o) in links[out.id].values() if ia == a]
        scales[a] = min(fs) if fs else Fraction(1)
    tiles = plan_tiles({a: image_len[a] for a in tiled}, {a: tile_sizes[a] for a in tiled},
                       halo={a: in_halo.get(a, 0) for a in tiled}, align=aligns, scale=scales)
    window_shapes = {spec.id: _window_shape(spec, primary, shapes[spec.id], tile_sizes, tiled, image_len)
                     for spec in inputs}
    out_shapes = {out.id: _output_shape(out, links[out.id], image_len, primary, shape_p) for out in outputs}
    if tiled and any(s is None for s in out_shapes.values()):
        raise InputError("the model's output size depends on the data, so the image cannot be tiled: "
                         "pass an image that fits in one window")
    tile_io = tuple(TileIO(t, {spec.id: _read(spec.axis_ids, shapes[spec.id], window_shapes[spec.id], t.windows)
                               for spec in inputs},
                           {out.id: _write(out.axis_ids, out_shapes[out.id], links[out.id], t.windows, image_len)
                            for out in outputs})
                    for t in tiles)
    return SamplePlan(tiled, tile_io, window_shapes, out_shapes, links, image_len,
                      key=tuple(sorted(window_shapes.items())))


def output_links(primary: TensorSpec, out: TensorSpec) -> dict[str, Link]:
    """Which axes of ``out`` follow which axes of the primary input."""
    links = {}
    for a in out.axes:
        link = output_scale(primary, out, a.id)
        if link is not None:
            links[a.id] = (link[1], link[2], link[3])
    return links


def _input_halo(outputs: Sequence[TensorSpec], links: Mapping[str, Mapping[str, Link]], halo: Any,
                tileable: Sequence[str]) -> dict[str, int]:
    """Input pixels to discard at inner window edges, per axis: the caller's, else the outputs' halo."""
    if halo is not None and not isinstance(halo, Mapping):
        return {a: int(halo) for a in tileable}
    in_halo: dict[str, int] = {}
    for out in outputs:
        for oa, (ia, f, off) in links[out.id].items():
            # a negative offset (a valid convolution) loses context at the edge as a halo does
            h = out.halo.get(oa, 0) + max(0, -off)
            if h:
                in_halo[ia] = max(in_halo.get(ia, 0), math.ceil(h / f))
    if isinstance(halo, Mapping):  # the caller's halo wins where given
        in_halo.update({str(a): int(v) for a, v in halo.items()})
    return in_halo


def _tile_size(primary: TensorSpec, axis: str, n: int, tile: Any, *, halo: int, target: int) -> int:
    """The window size along one tileable axis: the caller's (checked, capped), else chosen."""
    sizes: AxisSizes = primary.sizes[axis]
    want = tile.get(axis) if isinstance(tile, Mapping) else tile
    if want is None:
        return choose_tile_size(n, sizes, halo=halo, target=target)
    want = int(want)
    if not sizes.is_valid(want):
        valid = f"{sizes.min}" if sizes.step == 0 else f"{sizes.min} + k*{sizes.step}"
        raise InputError(f"tile size {want} is not valid for axis '{axis}' of input '{primary.id}': "
                         f"the model accepts {valid}")
    whole = valid_size_at_least(sizes, n)
    if want > whole:  # a window past the whole image only adds padding (tile=10**9 is no bomb)
        log.info("tile %d on axis '%s' is larger than the image (%d): using %d", want, axis, n, whole)
        return whole
    return want


def _check_tileable(outputs: Sequence[TensorSpec], links: Mapping[str, Mapping[str, Link]],
                    tiled: Sequence[str], tile_sizes: Mapping[str, int], image_len: Mapping[str, int],
                    in_halo: Mapping[str, int]) -> None:
    for out in outputs:
        bad = [a.id for a in out.axes if a.kind in ("space", "time") and a.id not in links[out.id]]
        non_spatial = not any(a.kind in ("space", "time") for a in out.axes)
        if bad or non_spatial:
            raise InputError(
                f"the image ({', '.join(f'{a}={image_len[a]}' for a in tiled)}) is larger than the "
                f"model's input size ({', '.join(f'{a}={tile_sizes[a]}' for a in tiled)}) and output "
                f"'{out.id}' cannot be tiled (its size does not follow the input's): resize or crop the image")
    for a in tiled:
        if 2 * in_halo.get(a, 0) >= tile_sizes[a]:
            raise InputError(f"halo {in_halo.get(a, 0)} on axis '{a}' leaves nothing of {tile_sizes[a]}-pixel "
                             "tiles: pass a larger tile= or a smaller halo=")


def _window_shape(spec: TensorSpec, primary: TensorSpec, shape: tuple[int, ...], tile_sizes: Mapping[str, int],
                  tiled: Sequence[str], image_len: Mapping[str, int]) -> tuple[int, ...]:
    """The window shape of one input (batch 1), refused when too large to allocate."""
    shape = list(shape)
    for i, a in enumerate(spec.axes):
        sz = spec.sizes.get(a.id)
        if spec is primary and a.id in tile_sizes:
            shape[i] = tile_sizes[a.id]
        elif isinstance(sz, SizeRef) and sz.tensor_id == primary.id and sz.axis_id in tile_sizes:
            f = primary.scale.get(sz.axis_id, 1.0) / spec.scale.get(a.id, 1.0)
            shape[i] = int(round(tile_sizes[sz.axis_id] * f)) + sz.offset
        elif a.id in tiled and spec is not primary:
            if shape[i] != image_len[a.id]:
                raise InputError(f"input '{spec.id}' is {shape[i]} long on axis '{a.id}' but input "
                                 f"'{primary.id}' is {image_len[a.id]}: tiled inputs must match in size")
            shape[i] = tile_sizes[a.id]
        elif isinstance(sz, AxisSizes) and a.kind in ("space", "time"):
            shape[i] = valid_size_at_least(sz, shape[i])
    elements = math.prod(shape)
    if elements > MAX_WINDOW_ELEMENTS:
        raise InputError(
            f"a window of input '{spec.id}' would hold {elements:,} values (shape {tuple(shape)}, "
            f"axes {''.join(_short(a) for a in spec.axis_ids)}), more than the limit of "
            f"{MAX_WINDOW_ELEMENTS:,}: pass a smaller tile= or crop the image (if neither helps, the "
            "model's declared sizes are broken)")
    return tuple(shape)


def _output_shape(out: TensorSpec, links: Mapping[str, Link], image_len: Mapping[str, int],
                  primary: TensorSpec, shape_p: tuple[int, ...]) -> tuple[int, ...] | None:
    """The full shape of one output for the whole sample; None when it depends on the data."""
    shape = []
    for a in out.axes:
        sz = out.sizes.get(a.id)
        if a.kind == "batch":
            shape.append(1)
        elif a.id in links:
            ia, f, off = links[a.id]
            n = image_len.get(ia, shape_p[primary.axis_ids.index(ia)])
            shape.append(int(n * f) + off)
        elif isinstance(sz, AxisSizes) and sz.step == 0:
            shape.append(sz.min)
        else:
            return None
    shape = tuple(shape)
    _check_output_shape(out, shape)
    return shape


def _read(axis_ids: Sequence[str], shape: tuple[int, ...], target: tuple[int, ...],
          windows: Mapping[str, AxisWindow]) -> Read:
    """The part of an input a window covers, and the padding that brings it to the window shape."""
    region, pads = [], []
    need_pad = False
    for i, a in enumerate(axis_ids):
        n = shape[i]
        w = windows.get(a)
        if w is not None and n >= w.stop:
            region.append(slice(w.start, w.stop))
            pads.append((0, 0))
        elif w is not None:  # the window reaches past the image end
            region.append(slice(w.start, min(n, w.stop)))
            pads.append((0, w.stop - max(n, w.start)))
            need_pad = True
        else:  # not tiled: the whole axis, padded up to a size the model accepts
            region.append(slice(0, n))
            extra = target[i] - n
            pads.append((0, max(0, extra)))
            need_pad = need_pad or extra > 0
    return Read(tuple(region), tuple(pads) if need_pad else None)


def _write(axis_ids: Sequence[str], full: tuple[int, ...] | None, links: Mapping[str, Link],
           windows: Mapping[str, AxisWindow], image_len: Mapping[str, int]) -> Write | None:
    """The trusted part of a window's output and where it goes in the whole output."""
    if full is None:
        return None
    target, source = [], []
    for i, a in enumerate(axis_ids):
        link = links.get(a)
        w = windows.get(link[0]) if link is not None else None
        if w is None:  # not tiled: the (padded) window covers the image: crop the padding
            target.append(slice(0, full[i]))
            source.append(slice(0, full[i]))
            continue
        _ia, f, _off = link
        lo = int(w.inner_start * f)
        # the last window owns everything to the end (an offset may make the output longer)
        hi = full[i] if w.inner_stop >= image_len[link[0]] else int(w.inner_stop * f)
        base = int(w.start * f)
        target.append(slice(lo, hi))
        source.append(slice(lo - base, hi - base))
    return Write(tuple(target), tuple(source))


def _short(axis_id: str) -> str:
    return {"batch": "b", "channel": "c", "index": "i"}.get(axis_id, axis_id)


def grid_period(tile: int, halo: int, align: int) -> int:
    """The period window starts keep when windows of ``tile`` overlap by ``halo``: ``align``, or where the
    stride left is shorter, the largest divisor of ``align`` that fits in it.

    :func:`plan_axis` keeps a stride shorter than ``align`` as it is: a fixed 64-pixel window overlapped
    by a measured radius of 25 steps by 14, and a network that pools by 4 then gives another output in
    every window that starts off its grid.  Stepping by 8 (the largest divisor of 64 within 14) keeps
    every start on it, for networks that pool by up to 8.
    """
    stride = tile - 2 * halo
    if stride <= 0 or stride >= align:
        return align
    return max(d for d in range(1, stride + 1) if align % d == 0)


def pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two dividing ``n``, at most ``cap`` (how windows of a fixed size are aligned)."""
    d = 1
    while d < cap and n % (d * 2) == 0:
        d *= 2
    return d


def _machine_elements() -> int:
    """float32 values that fit in this machine's memory (a bound for one stitched output)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a large machine
        total = 1 << 40
    return max(MAX_WINDOW_ELEMENTS, total // 4)


def _check_output_shape(out: TensorSpec, shape: tuple[int, ...]) -> None:
    if any(n < 1 for n in shape):
        raise InputError(f"output '{out.id}' would have shape {shape} for this image: the image is too small for "
                         "the model (its output shrinks by a fixed offset); pass a larger image")
    elements = math.prod(shape)
    if elements > _machine_elements():
        raise InputError(f"output '{out.id}' would hold {elements:,} values (shape {shape}), more than this "
                         "machine's memory: crop the image, or, if a small image gives this, the model's output "
                         "sizes (scale, offset) are broken")
