"""Pre- and postprocessing of the bioimage.io model format, in plain numpy.

Every standard op of format 0.5 (``binarize``, ``clip``, ``ensure_dtype``,
``fixed_zero_mean_unit_variance``, ``scale_linear``, ``scale_mean_variance``,
``scale_range``, ``sigmoid``, ``softmax``, ``zero_mean_unit_variance``, and the
whole-sample ops of :mod:`.instance_ops`: ``stardist_postprocessing``,
``cellpose_flow_dynamics``, ``custom``) is compiled once per tensor into a
:class:`Chain` of vectorized steps.  As in bioimageio.core, each op builds
itself from its description: :data:`OPS` maps an op id to its step class, whose ``from_descr(descr, ctx)`` checks the
kwargs against the tensor (:class:`OpContext`) and returns the step.  Format
0.4 descriptions reach this module upgraded to 0.5 by bioimageio.spec (which
is what :func:`bioimgzoo.package.open_package` returns), so the 0.5 classes
cover both generations.

The numbers match bioimageio.core 0.11 (``proc_ops.py``, ``proc_setup.py``,
``stat_calculators.py``, ``stat_measures.py``, ``_prediction_pipeline.py``)
within float rounding, *including the dtypes of intermediate results*: every
parameter and statistic carries the dtype core gives it, so numpy's type
promotion makes the same choice of float32 or float64 arithmetic as core's
xarray code.

Usage
-----
::

    chain = compile_processing(tensor_descr.preprocessing, tensor_id="raw",
                               tensor_axes=["batch", "channel", "y", "x"])
    stats = compute_sample_measures(chain.required_measures, {"raw": raw}, axes)
    stats |= dataset_stats            # from DatasetStatistics, if any measure has scope "dataset"
    ready = chain(raw, stats)

Which data a statistic is computed on
------------------------------------
bioimageio.core computes *all* statistics in one ``UpdateStats`` step that
``setup_pre_and_postprocessing`` inserts at position 0 of the
preprocessing, i.e. on the **raw input sample, before any op of any chain**.
So ``zero_mean_unit_variance`` placed after ``scale_linear`` (or after an
``ensure_dtype``) still uses the mean/std of the unscaled raw input; the
statistics of a ``reference_tensor`` are those of the raw input too.  This
module follows that rule: pass the raw tensors to
:func:`compute_sample_measures` / :meth:`DatasetStatistics.update`.

For measures of *output* tensors (``zero_mean_unit_variance``,
``scale_range``, ``clip`` percentiles or ``scale_mean_variance`` in
postprocessing) core 0.11 fails (``KeyError``: its stats step runs before the
model, when outputs do not exist yet).  The analogous rule is implemented
here: an output's measures are computed on the **raw model output, before any
postprocessing op**, and reference tensors (inputs) on the raw inputs.

Core computes the statistics on the whole sample, then applies the (blockwise)
ops to each block with those statistics.  :meth:`Chain.__call__` is pure
broadcasting arithmetic, so applying it per tile with whole-sample statistics
gives exactly the whole-image result (``softmax`` along an axis that is tiled
would be the exception; core treats it as blockwise as well).  Note that
core's *non-blockwise* ``predict`` pads the input by the halo before the
statistics step, so there the statistics include the padded border.

Sample vs. dataset scope (core's ``_get_axes`` and the op classes)
-----------------------------------------------------------------
* ``zero_mean_unit_variance``, ``scale_range`` and ``clip`` (percentiles):
  dataset scope when ``axes`` is None **or** contains ``"batch"``, else
  sample scope.  So the 0.5 default "``axes`` not given" means *dataset*
  statistics over all axes.  A 0.4 ``mode: per_dataset`` becomes
  ``axes: [batch, ...]`` in the upgrade, i.e. dataset scope.
* ``scale_mean_variance``: dataset scope only when ``axes`` contains
  ``"batch"``; ``axes`` None means sample statistics over all axes.
* Sample measures never reduce over ``batch`` explicitly (arrays hold one
  sample); dataset measures with ``batch`` in their axes reduce each sample
  over the other listed axes and combine samples.  A dataset measure may name
  ``batch`` for a tensor without a batch axis (each sample is one element).

Numerics (as core)
------------------
* mean/var/std of one sample (``MeanVarStdCalculator.compute``): mean in the
  data's own float dtype (float64 for integer data), ``var = sum((x-mean)**2)
  / n`` (population variance, ddof 0) in that dtype, ``std = sqrt(var)``.
  A mean requested *without* var/std of the same tensor and axes is computed
  in float64 (core's ``MeanCalculator``).
* eps is added to the std (``(x - mean) / (std + eps)``), never inside the
  square root; ``scale_mean_variance`` is ``(x - mean) / (std + eps) *
  (ref_std + eps) + ref_mean``; ``scale_range`` is ``(x - lower) / (upper -
  lower + eps)``.  Core 0.11 ignores the described ``eps`` of
  ``zero_mean_unit_variance`` and ``scale_range`` and always uses 1e-6 (as
  does ``fixed_zero_mean_unit_variance``); see :data:`FOLLOW_CORE_EPS`.
* sample quantiles: ``numpy.quantile`` with ``method="linear"`` for
  ``scale_range`` and ``method="inverted_cdf"`` for ``clip`` percentiles, with
  q given as a float64 array (so linear quantiles of float32 data are
  float64); NaNs are skipped like xarray's ``nanquantile``.
* dataset mean/var/std: float64, per-sample mean and sum of squared
  deviations combined exactly with Chan's parallel formula (core's
  ``MeanVarStdCalculator.update``); std = sqrt(var), ddof 0.
* NaN in the data: quantiles skip it (as above); mean/var/std skip it only
  with ``ignore_nan=True`` (the runtime sets non-finite input values to NaN
  for its statistics, see :meth:`bioimgzoo.runtime.model.Model.predict`),
  else a NaN makes them NaN, as in core.
* dataset quantiles: core (without the optional ``crick`` package, which is
  not a dependency) averages the per-sample ``linear`` quantiles weighted by
  the number of reduced values (``MeanQuantilesCalculator``) -- an estimate,
  not the true dataset quantile.  Reproduced here.
* ``binarize`` along an axis compares with the thresholds laid out along that
  axis.  (Core 0.11 broadcasts the threshold list against the *last* axis
  instead, which fails or is wrong unless the axis is the last one.)
* ``clip`` with percentiles replaces values below/above the quantile by it
  (NaNs become the bound, like core's ``where``); fixed bounds use
  ``numpy.clip`` (NaN stays NaN).

Dataset statistics in core
--------------------------
``create_prediction_pipeline(dataset_for_initial_statistics=...,
keep_updating_initial_dataset_statistics=False, fixed_dataset_statistics=...)``:

1. measures found in ``fixed_dataset_statistics`` are taken as given;
2. the others are computed once from ``dataset_for_initial_statistics`` (raw
   samples) and then frozen -- unless that dataset is empty (the default), or
   ``keep_updating_initial_dataset_statistics`` is True: then *each sample
   processed updates the running dataset statistics before it is processed*,
   so sample k is normalized with statistics over samples 1..k.
3. ``bioimageio.core.predict`` builds a fresh pipeline per call, so a single
   prediction uses the dataset statistics of that one sample;
   ``predict_many`` shares one pipeline, giving the running statistics.

:class:`DatasetStatistics` implements the accumulation; a runtime matching
core calls ``update(raw_sample)`` then ``finalize()`` before processing each
sample when no dataset was given, or ``update`` over a dataset once and
reuses ``finalize()`` for every sample when one was.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, Sequence

import numpy as np

from ..errors import InputError, InvalidDescriptionError
from . import instance_ops

__all__ = [
    "Measure",
    "Chain",
    "compile_processing",
    "OPS",
    "OpContext",
    "compute_sample_measures",
    "nan_for_nonfinite",
    "DatasetStatistics",
    "SUPPORTED_OPS",
    "FOLLOW_CORE_EPS",
]

MeasureKind = Literal["mean", "std", "var", "quantile"]
Scope = Literal["sample", "dataset"]
QuantileMethod = Literal["linear", "inverted_cdf"]


_BATCH = "batch"
_FIXED_EPS = 1e-6  # core's FixedZeroMeanUnitVariance.eps (not part of the description)

#: bioimageio.core 0.11 never passes ``kwargs.eps`` of ``zero_mean_unit_variance`` and
#: ``scale_range`` to its ops, which then use their default 1e-6.  True reproduces that
#: (the numbers of core, hence of zoo test outputs made with it); False uses the
#: described eps as the spec intends.  ``scale_mean_variance`` always uses its eps.
FOLLOW_CORE_EPS = True
_CORE_DEFAULT_EPS = 1e-6


def _described_or_core_eps(eps: float) -> float:
    return _CORE_DEFAULT_EPS if FOLLOW_CORE_EPS else float(eps)


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
        if self.scope == "sample" and self.axes is not None and _BATCH in self.axes:
            raise ValueError("a sample measure cannot reduce over 'batch' (that makes it a dataset measure)")
        if self.scope == "dataset" and self.axes is not None and _BATCH not in self.axes:
            raise ValueError("a dataset measure reduces over 'batch': give axes None or including 'batch'")

    def describe(self) -> str:
        """Human-readable name, e.g. ``sample std of 'raw' over (y, x)``."""
        what = f"{self.kind}" if self.kind != "quantile" else f"{self.q:g}-quantile ({self.method})"
        over = "all axes" if self.axes is None else "(" + ", ".join(self.axes) + ")"
        return f"{self.scope} {what} of tensor {self.tensor_id!r} over {over}"


def _sample_or_dataset(axes: tuple[str, ...] | None, *, none_is_dataset: bool) -> Scope:
    if axes is None:
        return "dataset" if none_is_dataset else "sample"
    return "dataset" if _BATCH in axes else "sample"


# ---------------------------------------------------------------------- array helpers
def _reduced_axes(measure: Measure, tensor_axes: Sequence[str], *, where: str) -> tuple[int, ...]:
    """Indices of the axes ``measure`` reduces in an array laid out as ``tensor_axes``."""
    if measure.axes is None:
        return tuple(range(len(tensor_axes)))
    idx = []
    for a in measure.axes:
        if a in tensor_axes:
            idx.append(list(tensor_axes).index(a))
        elif a == _BATCH and measure.scope == "dataset":
            continue  # samples without a batch axis: each sample is one batch element
        else:
            raise InputError(
                f"{where}: the {measure.describe()} reduces axis {a!r}, but tensor "
                f"{measure.tensor_id!r} has axes ({', '.join(tensor_axes)}); "
                "fix the description's `axes` to name axes of that tensor"
            )
    return tuple(sorted(set(idx)))


def _binary(f: np.ufunc, a: Any, b: Any, *, reuse: np.ndarray | None = None,
            final_dtype: np.dtype | None = None) -> np.ndarray:
    """``f(a, b)`` with numpy's own promotion, writing into ``reuse`` when that fits.

    ``reuse`` is a temporary this chain owns (never the caller's array); it is
    written in place when it has the result's shape and dtype.  With
    ``final_dtype`` the result is cast to it exactly as ``.astype`` would
    (the loop still runs in the promoted dtype), which fuses an op with a
    following ``ensure_dtype``.
    """
    dtype = np.result_type(a, b)
    target = dtype if final_dtype is None else np.dtype(final_dtype)
    shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    if reuse is not None and reuse.dtype == target and reuse.shape == shape:
        return f(a, b, out=reuse, casting="unsafe")
    if target == dtype:
        return f(a, b)
    return f(a, b, out=np.empty(shape, dtype=target), casting="unsafe")


def _as_stat(value: Any) -> np.ndarray:
    # a python float becomes a 0-d float64 array: core's statistics are float64
    # tensors (not weak python scalars), which matters for numpy's type promotion
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _has_nan(x: np.ndarray) -> bool:
    return x.dtype.kind in "fc" and bool(np.isnan(x).any())


def _quantiles(x: np.ndarray, qs: Sequence[float], red: tuple[int, ...], method: str) -> np.ndarray:
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
    if _has_nan(x):
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


def _einsum_reduce_sq(c: np.ndarray, red: tuple[int, ...]) -> np.ndarray:
    """Sum of ``c * c`` over axes ``red`` with keepdims (core uses ``xr.dot(c, c)``)."""
    letters = "abcdefghijklmnopqrstuvwxyz"[: c.ndim]
    kept = "".join(ch for i, ch in enumerate(letters) if i not in red)
    s = np.einsum(f"{letters},{letters}->{kept}", c, c)
    return np.reshape(s, [1 if i in red else n for i, n in enumerate(c.shape)])


# --------------------------------------------------------------- building steps
@dataclass(frozen=True)
class OpContext:
    """What an op needs, besides its description, to build itself for one tensor.

    Passed to every ``from_descr``; its helpers check the description
    against the tensor and raise :class:`InvalidDescriptionError` naming
    the step (``where``).
    """

    op: str  # the op id, e.g. "scale_range"
    where: str  # "processing step 2 ('scale_range') of tensor 'raw'", for messages
    tensor_id: str
    axes: tuple[str, ...]  # the processed tensor's axis ids
    other_axes: Mapping[str, tuple[str, ...]]  # axis ids of reference tensors, by tensor id
    references_given: bool  # reference_axes was passed: a reference tensor must be among them
    #: loads the callable a ``custom`` op names, after the trust check (None: custom ops are refused)
    load_code: Callable[[Any], Callable[..., Any]] | None = None

    def bad(self, msg: str) -> InvalidDescriptionError:
        return InvalidDescriptionError(f"{self.where}: {msg}")

    def axis_index(self, axis: Any) -> int:
        a = str(axis)
        if a not in self.axes:
            raise self.bad(f"names axis {a!r}, but tensor {self.tensor_id!r} has axes ({', '.join(self.axes)}); "
                           "fix `axis` in the description to one of those")
        return self.axes.index(a)

    def along(self, values: Any, axis: Any) -> np.ndarray:
        """``values`` as float64, laid out along ``axis`` (length 1 on every other axis)."""
        i = self.axis_index(axis)
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        shape = [1] * len(self.axes)
        shape[i] = arr.size
        return arr.reshape(shape)

    def measure_axes(self, kw_axes: Any, of: str) -> tuple[str, ...] | None:
        if kw_axes is None:
            return None
        a = tuple(str(x) for x in kw_axes)
        known = self.other_axes.get(of, self.axes)
        missing = [x for x in a if x not in known and not (x == _BATCH)]
        if missing:
            raise self.bad(f"reduces over axes {missing}, but tensor {of!r} has axes ({', '.join(known)}); "
                           "fix `axes` in the description to name only axes of that tensor")
        # "batch" is always allowed: it makes the statistic a dataset one, and a dataset
        # statistic treats each sample as one batch element even without a batch axis
        return a

    def ref_id(self, ref: Any) -> str:
        r = self.tensor_id if ref is None else str(ref)
        if r != self.tensor_id and r not in self.other_axes and self.references_given:
            raise self.bad(f"references tensor {r!r}, whose axes were not given in reference_axes; "
                           "pass its axis ids, or fix `reference_tensor` to an existing tensor id")
        return r


#: op id -> the step class that builds itself from that op's description (``from_descr``)
OPS: dict[str, type["_Step"]] = {}


def _op(op_id: str, descr_class: str) -> Callable[[type], type]:
    """Register a step class for ``op_id``, built from ``bioimageio.spec.model.v0_5.<descr_class>``.

    Format 0.4 op names (``binarize``, ``clip``, ``scale_linear``,
    ``sigmoid``, ``zero_mean_unit_variance``, ``scale_range``,
    ``scale_mean_variance``) are 0.5 ids too, so one key serves both; a 0.4
    ``zero_mean_unit_variance`` with ``mode: fixed`` is upgraded to
    ``fixed_zero_mean_unit_variance`` by bioimageio.spec.  0.4 description
    *objects* have other kwargs and are refused (upgrade them first).
    """

    def register(cls: type) -> type:
        cls.descr_class = descr_class
        OPS[op_id] = cls
        return cls

    return register


# ------------------------------------------------------------------------- the steps
class _Stats:
    """Statistics lookup for one chain call: checks presence, shapes and layouts."""

    def __init__(self, chain: "Chain", stats: Mapping[Measure, Any], x: np.ndarray):
        self.chain, self.stats, self.x = chain, stats, x

    def __call__(self, step: "_Step", m: Measure) -> np.ndarray:
        try:
            value = self.stats[m]
        except KeyError:
            how = ("compute_sample_measures()" if m.scope == "sample"
                   else "DatasetStatistics (update it with raw samples, then finalize())")
            raise InputError(
                f"{step.where} needs the {m.describe()}, which was not given; "
                f"compute it on the raw tensor with {how} and pass it in `stats`"
            ) from None
        v = _as_stat(value)
        relayout = self.chain._relayout.get(m.tensor_id)
        if relayout is not None and v.ndim > 0:
            v = relayout(v, m, step)
        if v.ndim > self.x.ndim or (v.ndim == self.x.ndim and any(
                s not in (1, n) for s, n in zip(v.shape, self.x.shape))):
            raise InputError(
                f"{step.where}: the {m.describe()} has shape {v.shape}, which does not fit tensor "
                f"{self.chain.tensor_id!r} of shape {self.x.shape} (axes {', '.join(self.chain.tensor_axes)}); "
                "compute it with compute_sample_measures()/DatasetStatistics on that tensor, or pass "
                "reference_axes= to compile_processing() when it belongs to another tensor"
            )
        return v


@dataclass
class _Step:
    """One processing op, ready to apply; each subclass builds itself with :meth:`from_descr`."""

    op: str
    where: str
    measures: tuple[Measure, ...] = ()
    fusable: bool = False  # can write its result straight into a following ensure_dtype's dtype

    #: name of the bioimageio.spec.model.v0_5 description class (set by @_op)
    descr_class: ClassVar[str] = ""

    @classmethod
    def from_descr(cls, descr: Any, ctx: OpContext) -> "_Step":
        """The step for ``descr`` (an instance of ``v0_5.<descr_class>``) of the tensor in ``ctx``."""
        raise NotImplementedError

    def apply(self, x: np.ndarray, stat: _Stats, *, owned: bool, final_dtype: np.dtype | None) -> np.ndarray:
        raise NotImplementedError


@_op("ensure_dtype", "EnsureDtypeDescr")
@dataclass
class _EnsureDtype(_Step):
    dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))

    @classmethod
    def from_descr(cls, descr, ctx):
        return cls(ctx.op, ctx.where, dtype=np.dtype(str(descr.kwargs.dtype)))

    def apply(self, x, stat, *, owned, final_dtype):
        return x.astype(self.dtype, copy=False)


@_op("binarize", "BinarizeDescr")
@dataclass
class _Binarize(_Step):
    threshold: Any = 0.0  # python float, or float64 array laid out along `axis`
    axis_index: int | None = None
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        from bioimageio.spec.model import v0_5

        kw = descr.kwargs
        if isinstance(kw, v0_5.BinarizeAlongAxisKwargs):
            return cls(ctx.op, ctx.where, threshold=ctx.along(kw.threshold, kw.axis),
                       axis_index=ctx.axis_index(kw.axis))
        return cls(ctx.op, ctx.where, threshold=float(kw.threshold))

    def apply(self, x, stat, *, owned, final_dtype):
        if self.axis_index is not None:
            _check_along_axis(self, x, self.axis_index, self.threshold.size, "thresholds")
        return _binary(np.greater, x, self.threshold, final_dtype=final_dtype)


@_op("clip", "ClipDescr")
@dataclass
class _Clip(_Step):
    min: float | None = None
    max: float | None = None
    min_measure: Measure | None = None
    max_measure: Measure | None = None

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        m_axes = ctx.measure_axes(kw.axes, ctx.tensor_id)
        scope = _sample_or_dataset(m_axes, none_is_dataset=True)
        method = "inverted_cdf" if scope == "sample" else None

        def quantile(p: float) -> Measure:
            return Measure(ctx.tensor_id, "quantile", m_axes, p / 100, scope, method)

        lo = None if kw.min is not None or kw.min_percentile is None else quantile(kw.min_percentile)
        hi = None if kw.max is not None or kw.max_percentile is None else quantile(kw.max_percentile)
        mn = None if kw.min is None else float(kw.min)
        mx = None if kw.max is None else float(kw.max)
        if mn is None and mx is None and lo is None and hi is None:
            raise ctx.bad("has neither min/max nor min_percentile/max_percentile; set at least one")
        if mn is not None and mx is not None and mn >= mx:
            raise ctx.bad(f"has min {mn} >= max {mx}; fix the description so that min < max")
        if lo is not None and hi is not None and lo.q >= hi.q:
            raise ctx.bad(f"has min_percentile {kw.min_percentile} >= max_percentile {kw.max_percentile}; "
                          "fix the description so that min_percentile < max_percentile")
        return cls(ctx.op, ctx.where, tuple(m for m in (lo, hi) if m is not None),
                   min=mn, max=mx, min_measure=lo, max_measure=hi)

    def apply(self, x, stat, *, owned, final_dtype):
        reuse = x if owned else None
        # core: quantile bounds via `where` (min first, then max), then numpy clip for fixed bounds
        if self.min_measure is not None:
            lo = stat(self, self.min_measure)
            x = _binary(np.fmax, x, lo, reuse=reuse)  # == where(x >= lo, x, lo), NaN -> lo
            reuse = x
        if self.max_measure is not None:
            hi = stat(self, self.max_measure)
            x = _binary(np.fmin, x, hi, reuse=reuse)  # == where(x <= hi, x, hi), NaN -> hi
            reuse = x
        if self.min is not None or self.max is not None:
            if reuse is not None and np.result_type(x, *(v for v in (self.min, self.max) if v is not None)) == x.dtype:
                return np.clip(x, self.min, self.max, out=reuse)
            return np.clip(x, self.min, self.max)
        return x


@_op("scale_linear", "ScaleLinearDescr")
@dataclass
class _ScaleLinear(_Step):
    gain: Any = 1.0
    offset: Any = 0.0
    axis_index: int | None = None
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        from bioimageio.spec.model import v0_5

        kw = descr.kwargs
        if not isinstance(kw, v0_5.ScaleLinearAlongAxisKwargs):
            return cls(ctx.op, ctx.where, gain=float(kw.gain), offset=float(kw.offset))
        gain, offset = kw.gain, kw.offset
        n = max(len(v) if isinstance(v, list) else 1 for v in (gain, offset))
        gain = gain if isinstance(gain, list) else [gain] * n
        offset = offset if isinstance(offset, list) else [offset] * n
        if len(gain) != len(offset):
            raise ctx.bad(f"has {len(gain)} gain but {len(offset)} offset values; give as many of each")
        return cls(ctx.op, ctx.where, gain=ctx.along(gain, kw.axis), offset=ctx.along(offset, kw.axis),
                   axis_index=ctx.axis_index(kw.axis))

    def apply(self, x, stat, *, owned, final_dtype):
        if self.axis_index is not None:
            _check_along_axis(self, x, self.axis_index, np.size(self.gain), "gain/offset values")
        t = _binary(np.multiply, x, self.gain, reuse=x if owned else None)
        return _binary(np.add, t, self.offset, reuse=t, final_dtype=final_dtype)


@_op("fixed_zero_mean_unit_variance", "FixedZeroMeanUnitVarianceDescr")
@dataclass
class _FixedZeroMeanUnitVariance(_Step):
    mean: Any = 0.0
    std_eps: Any = 1.0  # std + eps, float64 like core's DataArray parameters
    axis_index: int | None = None
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        from bioimageio.spec.model import v0_5

        kw = descr.kwargs
        if isinstance(kw, v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs):
            if len(kw.mean) != len(kw.std):
                raise ctx.bad(f"has {len(kw.mean)} mean but {len(kw.std)} std values; give as many of each")
            return cls(ctx.op, ctx.where, mean=ctx.along(kw.mean, kw.axis),
                       std_eps=ctx.along(kw.std, kw.axis) + _FIXED_EPS, axis_index=ctx.axis_index(kw.axis))
        # core wraps the scalars in 0-d float64 DataArrays: strong float64 for numpy promotion
        return cls(ctx.op, ctx.where, mean=np.float64(kw.mean), std_eps=np.float64(kw.std) + _FIXED_EPS)

    def apply(self, x, stat, *, owned, final_dtype):
        if self.axis_index is not None:
            _check_along_axis(self, x, self.axis_index, np.size(self.mean), "mean/std values")
        t = _binary(np.subtract, x, self.mean, reuse=x if owned else None)
        return _binary(np.divide, t, self.std_eps, reuse=t, final_dtype=final_dtype)


@_op("zero_mean_unit_variance", "ZeroMeanUnitVarianceDescr")
@dataclass
class _ZeroMeanUnitVariance(_Step):
    mean: Measure | None = None
    std: Measure | None = None
    eps: float = 1e-6
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        m_axes = ctx.measure_axes(kw.axes, ctx.tensor_id)
        scope = _sample_or_dataset(m_axes, none_is_dataset=True)
        mean = Measure(ctx.tensor_id, "mean", m_axes, None, scope)
        std = Measure(ctx.tensor_id, "std", m_axes, None, scope)
        return cls(ctx.op, ctx.where, (mean, std), mean=mean, std=std, eps=_described_or_core_eps(kw.eps))

    def apply(self, x, stat, *, owned, final_dtype):
        mean = stat(self, self.mean)
        denom = stat(self, self.std) + self.eps
        t = _binary(np.subtract, x, mean, reuse=x if owned else None)
        return _binary(np.divide, t, denom, reuse=t, final_dtype=final_dtype)


@_op("scale_mean_variance", "ScaleMeanVarianceDescr")
@dataclass
class _ScaleMeanVariance(_Step):
    mean: Measure | None = None
    std: Measure | None = None
    ref_mean: Measure | None = None
    ref_std: Measure | None = None
    eps: float = 1e-6
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        tid = ctx.tensor_id
        ref = ctx.ref_id(kw.reference_tensor)
        m_axes = ctx.measure_axes(kw.axes, tid)
        if ref != tid:
            ctx.measure_axes(kw.axes, ref)
        # unlike the other ops, axes None means *sample* statistics here (core's ScaleMeanVariance)
        scope = _sample_or_dataset(m_axes, none_is_dataset=False)
        ms = (Measure(tid, "mean", m_axes, None, scope), Measure(tid, "std", m_axes, None, scope),
              Measure(ref, "mean", m_axes, None, scope), Measure(ref, "std", m_axes, None, scope))
        return cls(ctx.op, ctx.where, ms, mean=ms[0], std=ms[1], ref_mean=ms[2], ref_std=ms[3], eps=float(kw.eps))

    def apply(self, x, stat, *, owned, final_dtype):
        mean = stat(self, self.mean)
        std = stat(self, self.std) + self.eps
        ref_mean = stat(self, self.ref_mean)
        ref_std = stat(self, self.ref_std) + self.eps
        # core: (x - mean) / std * ref_std + ref_mean, in this order
        t = _binary(np.subtract, x, mean, reuse=x if owned else None)
        t = _binary(np.divide, t, std, reuse=t)
        t = _binary(np.multiply, t, ref_std, reuse=t)
        return _binary(np.add, t, ref_mean, reuse=t, final_dtype=final_dtype)


@_op("scale_range", "ScaleRangeDescr")
@dataclass
class _ScaleRange(_Step):
    lower: Measure | None = None
    upper: Measure | None = None
    eps: float = 1e-6
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        ref = ctx.ref_id(kw.reference_tensor)
        m_axes = ctx.measure_axes(kw.axes, ref)
        scope = _sample_or_dataset(m_axes, none_is_dataset=True)
        method = "linear" if scope == "sample" else None
        if kw.min_percentile >= kw.max_percentile:
            raise ctx.bad(f"has min_percentile {kw.min_percentile} >= max_percentile {kw.max_percentile}; "
                          "fix the description so that min_percentile < max_percentile")
        lower = Measure(ref, "quantile", m_axes, kw.min_percentile / 100, scope, method)
        upper = Measure(ref, "quantile", m_axes, kw.max_percentile / 100, scope, method)
        return cls(ctx.op, ctx.where, (lower, upper), lower=lower, upper=upper, eps=_described_or_core_eps(kw.eps))

    def apply(self, x, stat, *, owned, final_dtype):
        lower = stat(self, self.lower)
        upper = stat(self, self.upper)
        denom = upper - lower + self.eps
        t = _binary(np.subtract, x, lower, reuse=x if owned else None)
        return _binary(np.divide, t, denom, reuse=t, final_dtype=final_dtype)


@_op("sigmoid", "SigmoidDescr")
@dataclass
class _Sigmoid(_Step):
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        return cls(ctx.op, ctx.where)

    def apply(self, x, stat, *, owned, final_dtype):
        # core: 1.0 / (1.0 + np.exp(-x))
        t = np.negative(x, out=x) if owned else np.negative(x)
        # exp overflows to inf for x < -88 (float32), and 1 / (1 + inf) = 0 is the right value: no warning
        with np.errstate(over="ignore"):
            t = np.exp(t, out=t) if t.dtype.kind in "fc" else np.exp(t)  # exp of ints gives floats
        t = _binary(np.add, 1.0, t, reuse=t)
        return _binary(np.divide, 1.0, t, reuse=t, final_dtype=final_dtype)


@_op("softmax", "SoftmaxDescr")
@dataclass
class _Softmax(_Step):
    axis_index: int = 0
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        return cls(ctx.op, ctx.where, axis_index=ctx.axis_index(descr.kwargs.axis))

    def apply(self, x, stat, *, owned, final_dtype):
        # scipy.special.softmax: e = exp(x - max(x)); e / sum(e)
        x_max = np.max(x, axis=self.axis_index, keepdims=True)
        t = _binary(np.subtract, x, x_max, reuse=x if owned else None)
        t = np.exp(t, out=t) if t.dtype.kind in "fc" else np.exp(t)
        s = np.sum(t, axis=self.axis_index, keepdims=True)
        return _binary(np.divide, t, s, reuse=t, final_dtype=final_dtype)


def _check_along_axis(step: _Step, x: np.ndarray, axis_index: int, n: int, what: str) -> None:
    if x.shape[axis_index] != n:
        raise InputError(
            f"{step.where} has {n} {what} along its axis, but the tensor is {x.shape[axis_index]} long "
            "there; give the model data with that many entries along that axis (e.g. channels)"
        )


# ------------------------------------------------------------------------------ chain
class Chain:
    """The compiled processing of one tensor: call it on an array and its statistics.

    Attributes
    ----------
    tensor_id : str
    tensor_axes : tuple of str
        Axis ids of the arrays this chain takes, in order.
    required_measures : frozenset of Measure
        Statistics :meth:`__call__` needs (possibly of other tensors).
    needs_sample_stats : bool
        True if any required measure has sample scope.
    steps : tuple of str
        The op ids, in order (for messages and debugging).
    """

    def __init__(self, tensor_id: str, tensor_axes: Sequence[str], steps: Sequence[_Step],
                 relayout: Mapping[str, Callable[..., np.ndarray]]):
        self.tensor_id = tensor_id
        self.tensor_axes = tuple(tensor_axes)
        self._steps = tuple(steps)
        self._relayout = dict(relayout)
        self.required_measures = frozenset(m for s in self._steps for m in s.measures)
        self.needs_sample_stats = any(m.scope == "sample" for m in self.required_measures)
        #: a step looks across the whole sample (stardist, cellpose, custom): apply to stitched outputs only
        self.whole_sample = any(getattr(s, "whole_sample", False) for s in self._steps)

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(s.op for s in self._steps)

    def __repr__(self) -> str:
        return f"<Chain {self.tensor_id!r}: {' -> '.join(self.steps) or 'identity'}>"

    def __call__(self, array: np.ndarray, stats: Mapping[Measure, np.ndarray | float] | None = None) -> np.ndarray:
        """Apply the processing to ``array`` (one sample, laid out as ``tensor_axes``).

        ``array`` is never modified; temporaries are reused in place.
        ``stats`` must hold every measure in :attr:`required_measures`.
        """
        x = np.asarray(array)
        if x.ndim != len(self.tensor_axes):
            raise InputError(
                f"processing of tensor {self.tensor_id!r} expects {len(self.tensor_axes)} axes "
                f"({', '.join(self.tensor_axes)}), got an array of shape {x.shape}; "
                "lay the data out in the model's axis order first"
            )
        stat = _Stats(self, stats or {}, x)
        owned = False
        i, n = 0, len(self._steps)
        while i < n:
            step = self._steps[i]
            final = None
            nxt = self._steps[i + 1] if i + 1 < n else None
            if step.fusable and isinstance(nxt, _EnsureDtype):
                final = nxt.dtype
            try:
                y = step.apply(x, stat, owned=owned, final_dtype=final)
            except (TypeError, ValueError, FloatingPointError) as e:
                raise InputError(f"{step.where} failed on data of dtype {x.dtype} and shape {x.shape}: {e}") from e
            owned = owned or y is not x
            x = y
            i += 2 if final is not None else 1
        return x


def _descr_id(descr: Any) -> str:
    return str(getattr(descr, "id", None) or getattr(descr, "name", None) or type(descr).__name__)


def compile_processing(descrs: Sequence[Any], *, tensor_id: str, tensor_axes: Sequence[str],
                       reference_axes: Mapping[str, Sequence[str]] | None = None,
                       load_code: Callable[[Any], Callable[..., Any]] | None = None) -> Chain:
    """Compile a tensor's ``preprocessing`` or ``postprocessing`` list into a :class:`Chain`.

    Each description is built by the step class :data:`OPS` registers for
    its op id (``from_descr``).

    Parameters
    ----------
    descrs : sequence of bioimageio.spec.model.v0_5 processing descriptions
        E.g. ``input_descr.preprocessing``; 0.4 descriptions must be upgraded
        first (``open_package`` does that).
    tensor_id : str
        Id of the tensor processed.
    tensor_axes : sequence of str
        Its axis ids, in the order of the arrays the chain will get.
    reference_axes : mapping, optional
        Axis ids of other tensors named as ``reference_tensor``.  Without it a
        reference tensor is assumed to have the same axes as this tensor.
    load_code : callable, optional
        ``load_code(custom_op_descr)`` returns the factory a ``custom`` op
        names, after the trust check (:func:`bioimgzoo.trust.load_custom_op`);
        without it a ``custom`` op raises :class:`UntrustedCodeError`.

    Raises
    ------
    InvalidDescriptionError
        For an unsupported op or kwargs that do not fit the tensor (an axis it
        lacks, ``min >= max``, ...).
    """
    from bioimageio.spec.model import v0_5

    tensor_id = str(tensor_id)
    axes = tuple(str(a) for a in tensor_axes)
    other_axes = {str(k): tuple(str(a) for a in v) for k, v in (reference_axes or {}).items()}
    steps: list[_Step] = []
    for index, descr in enumerate(descrs, start=1):
        op = _descr_id(descr)
        where = f"processing step {index} ({op!r}) of tensor {tensor_id!r}"
        cls = OPS.get(op)
        # the id alone is not enough: a 0.4 object (or a look-alike) has other kwargs
        if cls is None or not isinstance(descr, getattr(v0_5, cls.descr_class)):
            hint = ("upgrade the description to format 0.5 first (bioimgzoo.package.open_package does)"
                    if "v0_4" in type(descr).__module__ else
                    f"only {', '.join(SUPPORTED_OPS)} are supported; run the model without this step or "
                    "apply it yourself")
            raise InvalidDescriptionError(f"{where} is not supported here ({type(descr).__name__}); {hint}")
        ctx = OpContext(op, where, tensor_id, axes, other_axes, references_given=reference_axes is not None,
                        load_code=load_code)
        steps.append(cls.from_descr(descr, ctx))
    relayout = {ref: _make_relayout(ref, ref_axes, axes, tensor_id)
                for ref, ref_axes in other_axes.items() if ref != tensor_id and ref_axes != axes}
    return Chain(tensor_id, axes, steps, relayout)


def _make_relayout(ref: str, ref_axes: tuple[str, ...], axes: tuple[str, ...], tensor_id: str):
    """Map a keepdims statistic of tensor ``ref`` onto the layout of the processed tensor."""

    def relayout(v: np.ndarray, m: Measure, step: _Step) -> np.ndarray:
        if v.ndim != len(ref_axes):
            raise InputError(f"{step.where}: the {m.describe()} has {v.ndim} dims, but tensor {ref!r} "
                             f"has axes ({', '.join(ref_axes)}); compute it with compute_sample_measures()")
        for a, n in zip(ref_axes, v.shape):
            if n != 1 and a not in axes:
                raise InputError(f"{step.where}: the {m.describe()} varies along axis {a!r}, which tensor "
                                 f"{tensor_id!r} lacks; fix `axes` in the description to reduce that axis")
        drop = tuple(i for i, a in enumerate(ref_axes) if a not in axes)
        w = np.squeeze(v, axis=drop) if drop else v
        remaining = [a for a in ref_axes if a in axes]
        w = np.transpose(w, [remaining.index(a) for a in axes if a in remaining])
        return w.reshape([v.shape[ref_axes.index(a)] if a in ref_axes else 1 for a in axes])

    return relayout


# the whole-sample ops (stardist_postprocessing, cellpose_flow_dynamics, custom) live in their own module
for _cls in instance_ops.STEPS:
    OPS[_cls.op_id] = _cls

#: the op ids compile_processing builds (the keys of OPS)
SUPPORTED_OPS = tuple(sorted(OPS))


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
        red = _reduced_axes(probe, t_axes, where=where)
        if ignore_nan and _has_nan(x):
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
        var = _einsum_reduce_sq(c, red) / n
        del c
        values = {"mean": mean, "var": var, "std": np.sqrt(var)}
        for k in kinds:
            out[Measure(tid, k, m_axes)] = values[k]
    for (tid, m_axes, method), qs in quantiles.items():
        probe = Measure(tid, "quantile", m_axes, 0.5, "sample", method)
        x, t_axes = _tensor_for(probe, tensors, axes, where)
        red = _reduced_axes(probe, t_axes, where=where)
        q_sorted = sorted(qs)
        values = _quantiles(x, q_sorted, red, method)
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
        if ignore_nan and _has_nan(x):
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
        est = _quantiles(x, self.qs, red, "linear").astype(np.float64, copy=False)
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
            _reduced_axes(m, self.axes[m.tensor_id], where="dataset statistics")  # validate early
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
            acc.update(x, _reduced_axes(probe, t_axes, where=where), ignore_nan=ignore_nan)
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
