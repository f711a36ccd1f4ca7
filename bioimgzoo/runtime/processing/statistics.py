"""Statistics of raw tensors: per sample (:func:`compute_sample_measures`) and per dataset (:class:`DatasetStatistics`)."""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

from ...errors import InputError
from .measures import Measure, einsum_reduce_sq, has_nan, quantiles_of, reduced_axes

__all__ = ["nan_for_nonfinite", "compute_sample_measures", "DatasetStatistics"]


# ----------------------------------------------------------------- sample statistics
def nan_for_nonfinite(tensors: Mapping[str, np.ndarray], ids: Iterable[str]) -> dict[str, np.ndarray]:
    """``tensors`` with inf set to NaN in ``ids``, so that statistics with ``ignore_nan`` skip them."""
    out = dict(tensors)
    for tid in ids:
        a = out.get(tid)
        if a is not None and a.dtype.kind in "fc":
            out[tid] = np.where(np.isfinite(a), a, np.array(np.nan, a.dtype))
    return out


def _tensor_for(m: Measure, tensors: Mapping[str, np.ndarray], axes: Mapping[str, Sequence[str]],
                where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if m.tensor_id not in tensors:
        raise InputError(f"{where}: the {m.describe()} needs tensor {m.tensor_id!r}, which was not given "
                         f"(got {', '.join(map(repr, tensors)) or 'none'}); pass the raw tensor")
    if m.tensor_id not in axes:
        raise InputError(f"{where}: the axes of tensor {m.tensor_id!r} were not given; pass them in `axes`")
    x = np.asarray(tensors[m.tensor_id])
    t_axes = tuple(str(a) for a in axes[m.tensor_id])
    if x.ndim != len(t_axes):
        raise InputError(f"{where}: tensor {m.tensor_id!r} has shape {x.shape} but axes ({', '.join(t_axes)}); "
                         "lay it out in the model's axis order")
    return x, t_axes


def compute_sample_measures(measures: Iterable[Measure], tensors: Mapping[str, np.ndarray],
                            axes: Mapping[str, Sequence[str]], *,
                            ignore_nan: bool = False) -> dict[Measure, np.ndarray | float]:
    """Compute the sample-scope ``measures`` on raw ``tensors`` (one sample each).

    Dataset-scope measures are skipped (see :class:`DatasetStatistics`).
    Values keep the reduced axes (keepdims) in the tensor's own axis order.
    Measures of one tensor and axes are computed together, as core does.

    With ``ignore_nan`` mean/var/std skip NaN values (quantiles always do,
    like xarray's), so a few bad pixels, set to NaN by the caller, do not
    make every statistic NaN; a reduction with no value left gives NaN.
    Without it (the default, and core's behaviour) a NaN makes the mean NaN.
    """
    where = "computing sample statistics"
    wanted = [m for m in set(measures) if m.scope == "sample"]
    moments: dict[tuple[str, tuple[str, ...] | None], set[str]] = {}
    quantiles: dict[tuple[str, tuple[str, ...] | None, str], set[float]] = {}
    for m in wanted:
        if m.kind == "quantile":
            quantiles.setdefault((m.tensor_id, m.axes, m.method), set()).add(m.q)
        else:
            moments.setdefault((m.tensor_id, m.axes), set()).add(m.kind)

    out: dict[Measure, np.ndarray | float] = {}
    for (tid, m_axes), kinds in moments.items():
        probe = Measure(tid, "mean", m_axes)
        x, t_axes = _tensor_for(probe, tensors, axes, where)
        red = reduced_axes(probe, t_axes, where=where)
        if ignore_nan and has_nan(x):
            for k, v in _nan_moments(x, red, only_mean=kinds == {"mean"}).items():
                if k in kinds:
                    out[Measure(tid, k, m_axes)] = v
            continue
        if kinds == {"mean"}:
            # core's MeanCalculator casts to float64 when only the mean is needed
            out[probe] = np.mean(x, axis=red, dtype=np.float64, keepdims=True)
            continue
        # core's MeanVarStdCalculator.compute: in the data's dtype, var = dot(c, c) / n
        mean = np.mean(x, axis=red, keepdims=True)
        c = np.subtract(x, mean)
        n = int(np.prod([x.shape[i] for i in red], dtype=np.int64))
        var = einsum_reduce_sq(c, red) / n
        del c
        values = {"mean": mean, "var": var, "std": np.sqrt(var)}
        for k in kinds:
            out[Measure(tid, k, m_axes)] = values[k]
    for (tid, m_axes, method), qs in quantiles.items():
        probe = Measure(tid, "quantile", m_axes, 0.5, "sample", method)
        x, t_axes = _tensor_for(probe, tensors, axes, where)
        red = reduced_axes(probe, t_axes, where=where)
        q_sorted = sorted(qs)
        values = quantiles_of(x, q_sorted, red, method)
        for q, v in zip(q_sorted, values):
            out[Measure(tid, "quantile", m_axes, q, "sample", method)] = v
    return out


def _nan_moments(x: np.ndarray, red: tuple[int, ...], *, only_mean: bool) -> dict[str, np.ndarray]:
    """mean/var/std over ``red`` skipping NaNs, in the dtypes of the NaN-free computation."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": NaN is the answer
        if only_mean:
            return {"mean": np.nanmean(x, axis=red, dtype=np.float64, keepdims=True)}
        mean = np.nanmean(x, axis=red, keepdims=True)
        c = np.subtract(x, mean)
        np.square(c, out=c)
        var = np.nanmean(c, axis=red, keepdims=True)  # population variance, as without NaNs
    return {"mean": mean, "var": var, "std": np.sqrt(var)}



# ---------------------------------------------------------------- dataset statistics
class _MeanVarStdAccumulator:
    """Core's ``MeanVarStdCalculator.update``/``finalize`` (float64, Chan's combination)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, x: np.ndarray, red: tuple[int, ...], *, ignore_nan: bool = False) -> None:
        if ignore_nan and has_nan(x):
            # per-group counts of the values left; a group with none adds nothing
            n_b = np.sum(~np.isnan(x), axis=red, keepdims=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean_b = np.nan_to_num(np.nanmean(x, axis=red, dtype=np.float64, keepdims=True), nan=0.0)
            d = np.subtract(x, mean_b, dtype=np.float64)
            np.square(d, out=d)
            m2_b = np.nansum(d, axis=red, keepdims=True)
        else:
            mean_b = np.mean(x, axis=red, dtype=np.float64, keepdims=True)
            n_b = int(x.size // mean_b.size)
            d = np.subtract(x, mean_b, dtype=np.float64)
            np.square(d, out=d)
            m2_b = np.sum(d, axis=red, keepdims=True)
        del d
        if self.mean is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
        else:
            n_a, mean_a, m2_a = self.n, self.mean, self.m2
            self.n = n = n_a + n_b
            with np.errstate(invalid="ignore", divide="ignore"):  # n is 0 only where no value was seen
                self.mean = (n_a * mean_a + n_b * mean_b) / n
                delta = mean_b - mean_a
                self.m2 = m2_a + m2_b + delta**2 * n_a * n_b / n

    def finalize(self) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            var = self.m2 / self.n
            mean = self.mean if np.all(self.n) else np.where(np.asarray(self.n) > 0, self.mean, np.nan)
        return {"mean": mean, "var": var, "std": var**0.5}


class _QuantileAccumulator:
    """Core's ``MeanQuantilesCalculator``: voxel-weighted mean of per-sample linear quantiles."""

    def __init__(self, qs: Sequence[float]) -> None:
        self.qs = sorted(set(qs))
        self.n = 0
        self.estimates: np.ndarray | None = None

    def update(self, x: np.ndarray, red: tuple[int, ...], *, ignore_nan: bool = False) -> None:
        # NaNs are always skipped (xarray's quantile); the weight stays the sample's size
        est = quantiles_of(x, self.qs, red, "linear").astype(np.float64, copy=False)
        n = int(x.size // int(np.prod(est.shape[1:])))
        if self.estimates is None:
            self.estimates = est
        else:
            self.estimates = (self.n * self.estimates + n * est) / (self.n + n)
        self.n += n


class DatasetStatistics:
    """Accumulates dataset-scope measures over samples, as bioimageio.core does.

    Parameters
    ----------
    measures : iterable of Measure
        Measures to accumulate; sample-scope ones are ignored.
    axes : mapping of tensor id to its axis ids
        Axis order of the arrays passed to :meth:`update`.

    Notes
    -----
    mean/var/std are exact (float64, per-sample mean and squared deviations
    combined with Chan's formula); quantiles are core's estimate: the
    weighted mean of per-sample linear quantiles.  :meth:`finalize` may be
    called after every :meth:`update` to get running statistics.
    """

    def __init__(self, measures: Iterable[Measure], axes: Mapping[str, Sequence[str]]):
        self.measures = frozenset(m for m in measures if m.scope == "dataset")
        self.axes = {str(k): tuple(str(a) for a in v) for k, v in axes.items()}
        self.samples_seen = 0
        self._moments: dict[tuple[str, tuple[str, ...] | None], _MeanVarStdAccumulator] = {}
        self._quantiles: dict[tuple[str, tuple[str, ...] | None], _QuantileAccumulator] = {}
        qs: dict[tuple[str, tuple[str, ...] | None], set[float]] = {}
        for m in self.measures:
            if m.tensor_id not in self.axes:
                raise InputError(f"dataset statistics: the {m.describe()} is of a tensor whose axes were not "
                                 "given; pass its axis ids in `axes`")
            reduced_axes(m, self.axes[m.tensor_id], where="dataset statistics")  # validate early
            if m.kind == "quantile":
                qs.setdefault((m.tensor_id, m.axes), set()).add(m.q)
            else:
                self._moments[(m.tensor_id, m.axes)] = _MeanVarStdAccumulator()
        for key, q in qs.items():
            self._quantiles[key] = _QuantileAccumulator(sorted(q))

    def update(self, tensors: Mapping[str, np.ndarray], *, ignore_nan: bool = False) -> None:
        """Add one raw sample: arrays by tensor id.

        Only the measured tensors among ``tensors`` are used, so inputs can be
        added before the model runs and outputs (for postprocessing measures)
        after it.  ``ignore_nan``: mean/var/std skip NaN values (see
        :func:`compute_sample_measures`).
        """
        where = "updating dataset statistics"
        used = False
        for (tid, m_axes), acc in [*self._moments.items(), *self._quantiles.items()]:
            if tid not in tensors:
                continue
            probe = Measure(tid, "mean", m_axes, None, "dataset")
            x, t_axes = _tensor_for(probe, tensors, self.axes, where)
            acc.update(x, reduced_axes(probe, t_axes, where=where), ignore_nan=ignore_nan)
            used = True
        if self.measures and not used:
            needed = sorted({m.tensor_id for m in self.measures})
            raise InputError(f"{where}: none of the measured tensors ({', '.join(map(repr, needed))}) was given "
                             f"(got {', '.join(map(repr, tensors)) or 'none'}); pass the raw tensors by id")
        self.samples_seen += 1

    def finalize(self) -> dict[Measure, np.ndarray | float]:
        """The accumulated dataset measures (keepdims, float64); callable repeatedly.

        Measures of tensors not added yet are left out.
        """
        if self.measures and self.samples_seen == 0:
            raise InputError("dataset statistics were asked for before any sample was added; call update() "
                             "with at least one raw sample (e.g. the image being predicted) first")
        out: dict[Measure, np.ndarray | float] = {}
        for (tid, m_axes), acc in self._moments.items():
            if acc.mean is None:
                continue
            values = acc.finalize()
            for kind in ("mean", "var", "std"):
                m = Measure(tid, kind, m_axes, None, "dataset")
                if m in self.measures:
                    out[m] = values[kind]
        for (tid, m_axes), acc in self._quantiles.items():
            if acc.estimates is None:
                continue
            for q, v in zip(acc.qs, acc.estimates):
                m = Measure(tid, "quantile", m_axes, q, "dataset")
                if m in self.measures:
                    out[m] = v
        return out
