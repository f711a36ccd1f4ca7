"""Per-sample statistics of arrays too large for memory, streamed a block at a time.

:func:`streaming_sample_measures` computes the same measures as
:func:`bioimgzoo.runtime.processing.compute_sample_measures` from any
:class:`~.protocol.ArraySource`, reading slabs of at most
:data:`BLOCK_ELEMENTS` values:

* mean / var / std: per-block mean and sum of squared deviations in
  float64, combined with Chan's formula.  For integer data the in-memory
  path also works in float64, so both agree to float64 rounding (about
  1e-15 relative).  For float32 data the in-memory path (as
  bioimageio.core) sums in float32; the streamed value is the more exact
  one and differs from it by float32 rounding (about 1e-7 relative), and
  is returned as float32 like it.
* quantiles: exact order statistics by radix selection on the values' bit
  patterns (one pass per 16 bits of the type: one pass for 8/16-bit data,
  two for float32, four for float64) after a counting pass; then numpy's
  own interpolation (``linear`` / ``inverted_cdf``) of the neighbouring
  order statistics, so the result is numpy.quantile's on the whole array.
* NaN: skipped when ``ignore_nan`` (as in memory); inf set to NaN by the
  caller's wrapper.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator, Mapping, Sequence

import numpy as np

from ...errors import InputError
from ..processing import Measure
from .protocol import ArraySource

__all__ = ["streaming_sample_measures", "BLOCK_ELEMENTS", "iter_blocks"]

#: most values read at once by a statistics pass (32 MB of float64 work)
BLOCK_ELEMENTS = 1 << 22
#: most kept positions (e.g. channels) a streamed quantile may have
_MAX_QUANTILE_GROUPS = 64


def iter_blocks(shape: Sequence[int], *, elements: int = BLOCK_ELEMENTS,
                chunks: Sequence[int] | None = None) -> Iterator[tuple[slice, ...]]:
    """Regions covering ``shape`` in C order, each of at most about ``elements`` values.

    ``chunks``: the source's storage chunks; blocks are then made of whole
    chunks (at least one), so each chunk is read and decoded once per pass
    (slabs of full rows would decode every chunk they cross for a few rows:
    4 times per pass on a 16384-wide image of 1024² chunks).
    """
    shape = tuple(int(n) for n in shape)
    if chunks is not None and len(chunks) == len(shape):
        block = [max(1, min(int(c), n)) for c, n in zip(chunks, shape)]
        for i in reversed(range(len(shape))):  # grow the trailing axes first: contiguous runs of chunks
            times = elements // max(1, math.prod(block))
            if times < 2:
                break
            block[i] = min(shape[i], block[i] * times)
    else:
        block = list(shape)
        for i in range(len(shape)):  # cut the leading axes first, so blocks are contiguous slabs
            rest = math.prod(block[i + 1:])
            if math.prod(block) <= elements:
                break
            block[i] = max(1, elements // max(1, rest))
    for starts in itertools.product(*[range(0, n, b) for n, b in zip(shape, block)]):
        yield tuple(slice(s, min(s + b, n)) for s, b, n in zip(starts, block, shape))


def streaming_sample_measures(measures: Sequence[Measure], sources: Mapping[str, ArraySource],
                              axes: Mapping[str, Sequence[str]], *, ignore_nan: bool = False,
                              elements: int = BLOCK_ELEMENTS) -> dict[Measure, np.ndarray]:
    """The sample-scope ``measures`` of the whole ``sources``, read block by block (see the module notes)."""
    wanted = [m for m in set(measures) if m.scope == "sample"]
    moments: dict[tuple[str, tuple | None], set[str]] = {}
    quantiles: dict[tuple[str, tuple | None, str], set[float]] = {}
    for m in wanted:
        if m.tensor_id not in sources:
            raise InputError(f"the {m.describe()} needs tensor {m.tensor_id!r}, which is not an input: bioimgzoo "
                             "cannot stream statistics of outputs; predict this model in memory")
        if m.kind == "quantile":
            quantiles.setdefault((m.tensor_id, m.axes, m.method), set()).add(m.q)
        else:
            moments.setdefault((m.tensor_id, m.axes), set()).add(m.kind)
    out: dict[Measure, np.ndarray] = {}
    for (tid, m_axes), kinds in moments.items():
        src = sources[tid]
        red = _reduced(m_axes, axes[tid])
        n, mean, m2 = _moments(src, red, ignore_nan=ignore_nan, elements=elements)
        with np.errstate(invalid="ignore", divide="ignore"):
            if kinds == {"mean"}:  # core's MeanCalculator: float64
                out[Measure(tid, "mean", m_axes)] = mean
                continue
            var = m2 / n
        # the in-memory path computes in the data's float type (float64 for integers)
        dtype = src.dtype if np.dtype(src.dtype).kind == "f" else np.dtype(np.float64)
        values = {"mean": mean.astype(dtype), "var": var.astype(dtype)}
        values["std"] = np.sqrt(values["var"])
        for k in kinds:
            out[Measure(tid, k, m_axes)] = values[k]
    for (tid, m_axes, method), qs in quantiles.items():
        src = sources[tid]
        red = _reduced(m_axes, axes[tid])
        q_sorted = sorted(qs)
        values = _quantiles(src, q_sorted, red, method, elements=elements)
        for q, v in zip(q_sorted, values):
            out[Measure(tid, "quantile", m_axes, q, "sample", method)] = v
    return out


def _reduced(m_axes: tuple[str, ...] | None, tensor_axes: Sequence[str]) -> tuple[int, ...]:
    if m_axes is None:
        return tuple(range(len(tensor_axes)))
    return tuple(sorted(list(tensor_axes).index(a) for a in m_axes if a in tensor_axes))


def _kept_region(region: tuple[slice, ...], red: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, 1) if i in red else r for i, r in enumerate(region))


def _moments(src: ArraySource, red: tuple[int, ...], *, ignore_nan: bool, elements: int):
    kept_shape = tuple(1 if i in red else n for i, n in enumerate(src.shape))
    n = np.zeros(kept_shape, np.float64)
    mean = np.zeros(kept_shape, np.float64)
    m2 = np.zeros(kept_shape, np.float64)
    for region in iter_blocks(src.shape, elements=elements, chunks=getattr(src, "chunks", None)):
        x = np.asarray(src.read(region), dtype=np.float64)
        if ignore_nan and np.isnan(x).any():
            valid = ~np.isnan(x)
            n_b = valid.sum(axis=red, keepdims=True).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_b = np.nansum(x, axis=red, keepdims=True) / n_b
            d = np.where(valid, x - np.nan_to_num(mean_b), 0.0)
            mean_b = np.nan_to_num(mean_b)
        else:
            n_b = np.float64(math.prod(x.shape[i] for i in red))
            mean_b = x.mean(axis=red, keepdims=True)
            d = x - mean_b
        np.square(d, out=d)
        m2_b = d.sum(axis=red, keepdims=True)
        del d, x
        k = _kept_region(region, red)
        n_a, mean_a, m2_a = n[k], mean[k], m2[k]
        tot = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean_b - mean_a
            frac = np.where(tot > 0, n_b / np.where(tot > 0, tot, 1), 0.0)
            mean[k] = mean_a + delta * frac
            m2[k] = m2_a + m2_b + delta ** 2 * n_a * frac
        n[k] = tot
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, mean, np.nan)
    return n, mean, m2


# ------------------------------------------------------------------ quantiles
def _keys(x: np.ndarray) -> np.ndarray:
    """Unsigned integers ordered as the values of ``x`` (radix-selection keys)."""
    dt = np.dtype(x.dtype)
    bits = dt.itemsize * 8
    u = np.dtype(f"u{dt.itemsize}")
    top = np.array(1 << (bits - 1), dtype=u)
    if dt.kind == "u":
        return x
    if dt.kind == "i":
        return x.view(u) ^ top
    if dt.kind == "f":  # IEEE: flip all bits of negatives, the sign bit of the rest
        v = x.view(u)
        neg = (v & top).astype(bool)
        return np.where(neg, ~v, v | top)
    if dt.kind == "b":
        return x.view(np.uint8)
    raise InputError(f"cannot take quantiles of {dt} data")


def _from_key(key: int, dt: np.dtype) -> float:
    bits = dt.itemsize * 8
    u = np.dtype(f"u{dt.itemsize}")
    k = np.array([key], dtype=u)
    top = np.array(1 << (bits - 1), dtype=u)
    if dt.kind in "ub":
        return k.view(u).astype(dt)[0] if dt.kind == "u" else bool(k[0])
    if dt.kind == "i":
        return (k ^ top).view(dt)[0]
    v = np.where((k & top).astype(bool), k ^ top, ~k)
    return v.view(dt)[0]


def _quantile_groups(src: ArraySource, red: tuple[int, ...], elements: int):
    """The kept positions (outer product of the non-reduced axes) of a quantile measure."""
    kept = [i for i in range(len(src.shape)) if i not in red]
    groups = list(itertools.product(*[range(src.shape[i]) for i in kept]))
    if len(groups) > _MAX_QUANTILE_GROUPS:
        raise InputError(f"a streamed quantile over these axes needs {len(groups):,} separate quantiles (one per "
                         "kept position): only up to 64 are supported; predict this image in memory")
    return kept, groups


def _values_of(src: ArraySource, kept: list[int], group: tuple[int, ...], dtype: np.dtype, elements: int,
               *, work: np.dtype) -> Iterator[np.ndarray]:
    """The values of one kept position, as flat arrays (NaNs dropped)."""
    shape = list(src.shape)
    for i, g in zip(kept, group):
        shape[i] = 1
    where = dict(zip(kept, group))
    for block in iter_blocks(shape, elements=elements, chunks=getattr(src, "chunks", None)):
        region = tuple(slice(where[i], where[i] + 1) if i in where else r for i, r in enumerate(block))
        x = np.asarray(src.read(region)).astype(work, copy=False).reshape(-1)
        if x.dtype.kind == "f":
            x = x[~np.isnan(x)]
        yield x


def _quantiles(src: ArraySource, qs: Sequence[float], red: tuple[int, ...], method: str, *,
               elements: int) -> np.ndarray:
    kept, groups = _quantile_groups(src, red, elements)
    work = np.dtype(src.dtype)
    if work.kind == "f" and work.itemsize < 4:
        work = np.dtype(np.float32)
    q = np.asarray(qs, dtype=np.float64)
    kept_shape = tuple(1 if i in red else n for i, n in enumerate(src.shape))
    result_dtype = np.quantile(np.zeros(1, work), q[:1], method=method).dtype
    out = np.empty((len(qs),) + kept_shape, result_dtype)
    for group in groups:
        n = sum(int(v.size) for v in _values_of(src, kept, group, work, elements, work=work))
        idx = (slice(None),) + tuple(group[kept.index(i)] if i in kept else 0 for i in range(len(src.shape)))
        if n == 0:
            out[idx] = np.nan
            continue
        ranks: dict[int, float] = {}
        plan = []
        for qv in q:
            if method == "linear":
                h = (n - 1) * qv
                lo = int(np.floor(h))
                gamma = h - lo
                hi = min(lo + 1, n - 1)
                plan.append(("linear", lo, hi, gamma))
                ranks[lo] = ranks[hi] = 0
            else:  # numpy's inverted_cdf: floor(n q - 1), or one more unless on the boundary
                v = n * qv - 1
                prev = np.floor(v)
                rank = int(prev if (v - prev) == 0 else prev + 1)
                rank = min(max(rank, 0), n - 1)
                plan.append(("inverted_cdf", rank, rank, 0.0))
                ranks[rank] = 0
        found = _select(src, kept, group, work, elements, sorted(ranks))
        vals = []
        for kind, lo, hi, gamma in plan:
            if kind == "linear":
                pair = np.array([found[lo], found[hi]], dtype=work)
                vals.append(np.quantile(pair, np.float64(gamma), method="linear") if hi != lo else
                            np.quantile(pair[:1], np.float64(0.0), method="linear"))
            else:
                vals.append(np.quantile(np.array([found[lo]], dtype=work), np.float64(0.5), method=method))
        out[idx] = np.asarray(vals, dtype=result_dtype)
    return out


def _select(src: ArraySource, kept: list[int], group: tuple[int, ...], work: np.dtype, elements: int,
            ranks: Sequence[int]) -> dict[int, float]:
    """The values of 0-based ``ranks`` in sorted order, by radix selection (16 bits per pass)."""
    bits = work.itemsize * 8
    digit = min(16, bits)
    # per rank: (known high bits, number of values below that prefix)
    state = {r: (0, 0) for r in ranks}
    done_bits = 0
    while done_bits < bits:
        shift = bits - done_bits - digit
        prefixes = sorted({p for p, _ in state.values()})
        hists = {p: np.zeros(1 << digit, np.int64) for p in prefixes}
        for x in _values_of(src, kept, group, work, elements, work=work):
            k = _keys(x).astype(np.uint64)
            high = k >> np.uint64(shift + digit) if shift + digit < 64 else np.zeros_like(k)
            d = ((k >> np.uint64(shift)) & np.uint64((1 << digit) - 1)).astype(np.int64)
            for p in prefixes:
                sel = d[high == np.uint64(p)] if done_bits else d
                hists[p] += np.bincount(sel, minlength=1 << digit)
        new_state = {}
        for r, (p, below) in state.items():
            cum = np.cumsum(hists[p])
            b = int(np.searchsorted(cum, r - below, side="right"))
            new_state[r] = ((p << digit) | b, below + (int(cum[b - 1]) if b else 0))
        state = new_state
        done_bits += digit
    return {r: _from_key(p, work) for r, (p, _below) in state.items()}
