"""numpy simulations of what the consumer tools compute, per consumer-rules.md.

- :func:`jdll_process`: JDLL's pre/postprocessing with its quirks (percentiles
  ``sorted[int(n * p)]``, ``>=`` thresholds, axes matched letter by letter,
  per-sample zero_mean_unit_variance over the whole tensor, list gains reduced to
  their first element, ``ensure_dtype`` skipped);
- :func:`deepimagej_prediction`: the zoo CI's DeepImageJ run of the test input
  (halos removed, JDLL's tile size, ``symmetric`` padding, whole-image
  preprocessing, tiles through the network, postprocessing on the stitch);
- :func:`zoo_ci_mismatch`: the CI's comparison ``|dij - expected| <= 1.5e-4 + 1e-4 |expected|``;
- :func:`percentile_deviation`: how far JDLL's percentiles move a scale_range;
- :func:`per_tile_deviation`: QuPath's per-tile normalisation against per-image.

The network runs through :mod:`bioimgzoo.runtime`'s engines (the raw network,
arrays in the description's own axis order).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np

from ._view import AxisView, ProcView, TensorView

__all__ = ["jdll_process", "deepimagej_prediction", "zoo_ci_mismatch", "percentile_deviation",
           "per_tile_deviation", "ATOL", "RTOL"]

#: the zoo CI's DeepImageJ tolerance (D27)
ATOL, RTOL = 1.5e-4, 1e-4


def _first(v: Any, default: float) -> float:
    if isinstance(v, (list, tuple)):
        v = v[0] if v else default
    return float(default if v is None else v)


def _reduced(t: TensorView, p: ProcView, *, v05: bool) -> tuple[int, ...]:
    """Axes JDLL reduces over: each tensor axis whose letter occurs in the joined ``axes`` (D22)."""
    value = p.kw.get("axes", p.kw.get("axis"))
    if value is None:
        return tuple(range(len(t.axes)))
    joined = value if isinstance(value, str) else "".join(str(v) for v in value)
    return tuple(i for i, a in enumerate(t.axes) if a.letter in joined)


def jdll_process(x: np.ndarray, t: TensorView, procs: Sequence[ProcView], *, v05: bool) -> np.ndarray:
    """Apply ``procs`` the way JDLL 0.6.1 does, in float32."""
    x = x.astype(np.float32)
    for p in procs:
        kw = p.kw
        eps = _first(kw.get("eps"), 1e-6)
        if p.id == "ensure_dtype":
            continue
        if p.id == "sigmoid":
            x = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
        elif p.id == "binarize":
            x = (x >= _first(kw.get("threshold"), 0.5)).astype(np.float32)
        elif p.id == "clip":
            x = np.clip(x, _first(kw.get("min"), -np.inf), _first(kw.get("max"), np.inf)).astype(np.float32)
        elif p.id == "scale_linear":
            x = (x * _first(kw.get("gain"), 1.0) + _first(kw.get("offset"), 0.0)).astype(np.float32)
        elif p.id == "fixed_zero_mean_unit_variance" or (p.id == "zero_mean_unit_variance"
                                                         and kw.get("mode") == "fixed"):
            mean, std = kw.get("mean", 0.0), kw.get("std", 1.0)
            if isinstance(mean, (list, tuple)) and len(mean) > 1:
                axis = next(i for i, a in enumerate(t.axes) if a.id == kw.get("axis", t.axes[0].id))
                shape = [1] * x.ndim
                shape[axis] = len(mean)
                m, s = np.reshape(mean, shape), np.reshape(std, shape)
            else:
                m, s = _first(mean, 0.0), _first(std, 1.0)
            x = ((x - m) / (s + eps)).astype(np.float32)
        elif p.id == "zero_mean_unit_variance":
            # D24: the per-sample statistics are taken over the whole tensor, whatever the axes
            x = ((x - x.mean(dtype=np.float64)) / (x.std(dtype=np.float64) + eps)).astype(np.float32)
        elif p.id == "scale_range":
            axes = _reduced(t, p, v05=v05)
            lo, hi = _jdll_percentiles(x, axes, _first(kw.get("min_percentile"), 0.0),
                                       _first(kw.get("max_percentile"), 100.0))
            x = ((x - lo) / (hi - lo + eps)).astype(np.float32)
        else:
            raise ValueError(f"{p.id} is not implemented by JDLL (D20)")
    return x


def _jdll_percentiles(x: np.ndarray, axes: tuple[int, ...], pmin: float, pmax: float) -> tuple[Any, Any]:
    """``sorted[int(n * p)]`` over ``axes`` (no interpolation), kept broadcastable."""
    keep = [i for i in range(x.ndim) if i not in axes]
    moved = np.moveaxis(x, keep, list(range(len(keep))))
    flat = moved.reshape(moved.shape[:len(keep)] + (-1,))
    srt = np.sort(flat, axis=-1)
    n = srt.shape[-1]

    def at(p: float) -> np.ndarray:
        return srt[..., min(int(n * p / 100.0), n - 1)]

    lo, hi = at(pmin), at(pmax)
    shape = [x.shape[i] if i in keep else 1 for i in range(x.ndim)]
    return lo.reshape(shape), hi.reshape(shape)


def percentile_deviation(x: np.ndarray, t: TensorView, p: ProcView, *, v05: bool) -> float:
    """Largest difference between JDLL's and numpy's (interpolated) scale_range of ``x``."""
    axes = _reduced(t, p, v05=v05)
    kw = p.kw
    pmin, pmax = _first(kw.get("min_percentile"), 0.0), _first(kw.get("max_percentile"), 100.0)
    eps = _first(kw.get("eps"), 1e-6)
    x = x.astype(np.float64)
    lo, hi = _jdll_percentiles(x, axes, pmin, pmax)
    ref_lo = np.percentile(x, pmin, axis=axes, keepdims=True)
    ref_hi = np.percentile(x, pmax, axis=axes, keepdims=True)
    jdll = (x - lo) / (hi - lo + eps)
    ref = (x - ref_lo) / (ref_hi - ref_lo + eps)
    return float(np.max(np.abs(jdll - ref))) if x.size else 0.0


def _tile_grid(shape: Sequence[int], tiles: Sequence[int]) -> list[tuple[slice, ...]]:
    starts = [range(0, n, tl) for n, tl in zip(shape, tiles)]
    return [tuple(slice(s, s + tl) for s, tl in zip(combo, tiles)) for combo in itertools.product(*starts)]


def deepimagej_prediction(x: np.ndarray, t_in: TensorView, t_out: TensorView, tiles: Sequence[int],
                          run: Callable[[np.ndarray], np.ndarray], *, v05: bool) -> np.ndarray:
    """The zoo CI's DeepImageJ output for the test input ``x`` (laid out as ``t_in``'s axes).

    ``tiles``: the tile size per input axis (the image size where not tiled); halos
    are removed by the CI, so tiles do not overlap; the last tile of an axis is
    filled by ``symmetric`` padding (edge pixel repeated) and cropped.  Output
    axes must map 1:1 onto the input's (scale 1, same order).
    """
    pre = jdll_process(x, t_in, t_in.procs, v05=v05)
    shape = pre.shape
    if tuple(tiles) == tuple(shape):
        out = run(pre)
    else:
        padded_shape = [-(-n // tl) * tl for n, tl in zip(shape, tiles)]
        pad = [(0, p - n) for n, p in zip(shape, padded_shape)]
        padded = np.pad(pre, pad, mode="symmetric") if any(p for _, p in pad) else pre
        out = None
        for window in _tile_grid(padded_shape, tiles):
            y = run(np.ascontiguousarray(padded[window]))
            if out is None:
                out_shape = [padded_shape[i] if y.shape[i] == tiles[i] else y.shape[i] for i in range(y.ndim)]
                out = np.zeros(out_shape, dtype=y.dtype)
            target = tuple(w if y.shape[i] == tiles[i] else slice(None) for i, w in enumerate(window))
            out[target] = y
        out = out[tuple(slice(0, n) if out.shape[i] == padded_shape[i] else slice(None)
                        for i, n in enumerate(shape))]
    out = out.astype(np.dtype(t_out.dtype) if t_out.dtype in np.sctypeDict else np.float32)
    return jdll_process(out, t_out, t_out.procs, v05=v05).astype(out.dtype) if t_out.procs else out


def zoo_ci_mismatch(actual: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """The zoo CI's DeepImageJ comparison: counts of pixels off by more than ``ATOL + RTOL * |expected|``."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        a2, e2 = np.squeeze(a), np.squeeze(e)
        if a2.shape != e2.shape:
            return {"shape_mismatch": True, "actual_shape": list(a.shape), "expected_shape": list(e.shape)}
        a, e = a2, e2
    diff = np.abs(a - e)
    bad = ~(diff <= ATOL + RTOL * np.abs(e))
    return {"shape_mismatch": False, "mismatched": int(bad.sum()), "total": int(bad.size),
            "max_abs": float(np.nanmax(diff)) if diff.size else 0.0}


def per_tile_deviation(x: np.ndarray, t: TensorView, tiles: Sequence[int]) -> float:
    """Largest difference of the input normalised per tile (QuPath) against per image.

    Only the normalising ops (zero_mean_unit_variance, scale_range) of ``t``'s
    preprocessing are compared, each over the spatial axes, per tile.
    """
    def norm(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        spatial = tuple(i for i, ax in enumerate(t.axes) if ax.type == "space")
        for p in t.procs:
            kw = p.kw
            if p.id == "zero_mean_unit_variance" and kw.get("mode") != "fixed":
                a = (a - a.mean(axis=spatial, keepdims=True)) / (a.std(axis=spatial, keepdims=True)
                                                                 + _first(kw.get("eps"), 1e-6))
            elif p.id == "scale_range":
                lo = np.percentile(a, _first(kw.get("min_percentile"), 0.0), axis=spatial, keepdims=True)
                hi = np.percentile(a, _first(kw.get("max_percentile"), 100.0), axis=spatial, keepdims=True)
                a = (a - lo) / (hi - lo + _first(kw.get("eps"), 1e-6))
        return a

    whole = norm(x)
    dev = 0.0
    for window in _tile_grid(x.shape, tiles):
        tile = x[window]
        dev = max(dev, float(np.max(np.abs(norm(tile) - whole[window]))) if tile.size else 0.0)
    return dev


def axis_is_spatial(a: AxisView) -> bool:
    return a.type == "space"
