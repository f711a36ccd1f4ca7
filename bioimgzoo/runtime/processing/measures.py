"""Measures: the statistics processing steps need, and the array reductions that compute them.

:class:`Measure` names one statistic (tensor, kind, reduced axes, quantile,
sample or dataset scope); the helpers reduce arrays the way
bioimageio.core 0.11 does (see :mod:`bioimgzoo.runtime.processing` for the
numerics).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from ...errors import InputError

__all__ = ["Measure", "MeasureKind", "Scope", "QuantileMethod", "BATCH", "sample_or_dataset", "reduced_axes",
           "as_stat", "has_nan", "quantiles_of", "einsum_reduce_sq"]

MeasureKind = Literal["mean", "std", "var", "quantile"]
Scope = Literal["sample", "dataset"]
QuantileMethod = Literal["linear", "inverted_cdf"]

#: the batch axis id: a measure reducing it is a dataset measure
BATCH = "batch"


# --------------------------------------------------------------------------- measures
@dataclass(frozen=True)
class Measure:
    """One statistic a processing step needs.

    Parameters
    ----------
    tensor_id : str
        Tensor the statistic is computed on (may be another tensor than the
        one processed: ``reference_tensor``).
    kind : {"mean", "std", "var", "quantile"}
    axes : tuple of str or None
        Reduced axes; None reduces all axes of a sample.  Values keep the
        reduced axes with length 1 (keepdims), in the measured tensor's
        axis order.
    q : float or None
        Quantile in [0, 1] (``kind == "quantile"`` only).
    scope : {"sample", "dataset"}
        ``"sample"``: computed on each sample; ``"dataset"``: accumulated over
        samples (:class:`DatasetStatistics`).  Dataset measures have axes None
        or containing ``"batch"``; sample measures never contain ``"batch"``.
    method : {"linear", "inverted_cdf"} or None
        Quantile method; None means ``"linear"`` for quantiles and is the only
        value for other kinds.  Dataset quantiles are always ``"linear"``.
    """

    tensor_id: str
    kind: MeasureKind
    axes: tuple[str, ...] | None = None
    q: float | None = None
    scope: Scope = "sample"
    method: QuantileMethod | None = None

    def __post_init__(self) -> None:
        # normalise so that equal statistics compare (and hash) equal
        object.__setattr__(self, "tensor_id", str(self.tensor_id))
        if self.axes is not None:
            object.__setattr__(self, "axes", tuple(str(a) for a in self.axes))
        if self.kind not in ("mean", "std", "var", "quantile"):
            raise ValueError(f"unknown measure kind {self.kind!r}: use mean, std, var or quantile")
        if self.scope not in ("sample", "dataset"):
            raise ValueError(f"unknown measure scope {self.scope!r}: use 'sample' or 'dataset'")
        if self.kind == "quantile":
            if self.q is None or not 0.0 <= float(self.q) <= 1.0:
                raise ValueError(f"a quantile measure needs q in [0, 1], got {self.q!r}")
            object.__setattr__(self, "q", float(self.q))
            method = self.method or "linear"
            if method not in ("linear", "inverted_cdf"):
                raise ValueError(f"unknown quantile method {method!r}: use 'linear' or 'inverted_cdf'")
            if self.scope == "dataset" and method != "linear":
                raise ValueError("dataset quantiles are always estimated with method 'linear' (as core does)")
            object.__setattr__(self, "method", method)
        elif self.q is not None or self.method is not None:
            raise ValueError(f"q and method are only for quantile measures, not {self.kind!r}")
        if self.scope == "sample" and self.axes is not None and BATCH in self.axes:
            raise ValueError("a sample measure cannot reduce over 'batch' (that makes it a dataset measure)")
        if self.scope == "dataset" and self.axes is not None and BATCH not in self.axes:
            raise ValueError("a dataset measure reduces over 'batch': give axes None or including 'batch'")

    def describe(self) -> str:
        """Human-readable name, e.g. ``sample std of 'raw' over (y, x)``."""
        what = f"{self.kind}" if self.kind != "quantile" else f"{self.q:g}-quantile ({self.method})"
        over = "all axes" if self.axes is None else "(" + ", ".join(self.axes) + ")"
        return f"{self.scope} {what} of tensor {self.tensor_id!r} over {over}"


def sample_or_dataset(axes: tuple[str, ...] | None, *, none_is_dataset: bool) -> Scope:
    if axes is None:
        return "dataset" if none_is_dataset else "sample"
    return "dataset" if BATCH in axes else "sample"


# ---------------------------------------------------------------------- array helpers
def reduced_axes(measure: Measure, tensor_axes: Sequence[str], *, where: str) -> tuple[int, ...]:
    """Indices of the axes ``measure`` reduces in an array laid out as ``tensor_axes``."""
    if measure.axes is None:
        return tuple(range(len(tensor_axes)))
    idx = []
    for a in measure.axes:
        if a in tensor_axes:
            idx.append(list(tensor_axes).index(a))
        elif a == BATCH and measure.scope == "dataset":
            continue  # samples without a batch axis: each sample is one batch element
        else:
            raise InputError(
                f"{where}: the {measure.describe()} reduces axis {a!r}, but tensor "
                f"{measure.tensor_id!r} has axes ({', '.join(tensor_axes)}); "
                "fix the description's `axes` to name axes of that tensor"
            )
    return tuple(sorted(set(idx)))


def as_stat(value: Any) -> np.ndarray:
    # a python float becomes a 0-d float64 array: core's statistics are float64
    # tensors (not weak python scalars), which matters for numpy's type promotion
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def has_nan(x: np.ndarray) -> bool:
    return x.dtype.kind in "fc" and bool(np.isnan(x).any())


def quantiles_of(x: np.ndarray, qs: Sequence[float], red: tuple[int, ...], method: str) -> np.ndarray:
    """Quantiles ``qs`` of ``x`` over axes ``red`` (kept), stacked on a new axis 0.

    As xarray's ``DataArray.quantile``: q as float64 array, NaNs skipped.
    """
    q = np.asarray(qs, dtype=np.float64)
    if not red:  # nothing reduced: each value is its own quantile
        x = x[np.newaxis]
        red = (0,)
        squeeze = True
    else:
        squeeze = False
    if has_nan(x):
        with warnings.catch_warnings():  # an all-NaN reduction is NaN, which is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.nanquantile(x, q, axis=red, method=method, keepdims=True)
    elif x.size and np.all((q == 0.0) | (q == 1.0)):
        # the 0- and 1-quantiles are exactly min and max for both methods: skip the partition
        dtype = np.quantile(x.reshape(-1)[:1], q[:1], method=method).dtype
        out = np.stack([(np.min if v == 0.0 else np.max)(x, axis=red, keepdims=True).astype(dtype, copy=False)
                        for v in q])
    else:
        out = np.quantile(x, q, axis=red, method=method, keepdims=True)
    return out[:, 0] if squeeze else out


def einsum_reduce_sq(c: np.ndarray, red: tuple[int, ...]) -> np.ndarray:
    """Sum of ``c * c`` over axes ``red`` with keepdims (core uses ``xr.dot(c, c)``)."""
    letters = "abcdefghijklmnopqrstuvwxyz"[: c.ndim]
    kept = "".join(ch for i, ch in enumerate(letters) if i not in red)
    s = np.einsum(f"{letters},{letters}->{kept}", c, c)
    return np.reshape(s, [1 if i in red else n for i, n in enumerate(c.shape)])

