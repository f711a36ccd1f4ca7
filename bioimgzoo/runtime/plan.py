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
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

from ..descr.sizes import AxisSizes, valid_size_at_least, valid_size_at_most

__all__ = ["AxisWindow", "Tile", "plan_axis", "plan_tiles", "choose_tile_size"]


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
