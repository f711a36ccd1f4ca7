"""The processing ops: one step class per op id, each building itself from its description.

:data:`OPS` maps an op id to its step class; :func:`register_op` is the one
way to add one (the arithmetic ops here, the whole-sample ops in
:mod:`.whole_sample`).  ``Step.from_descr(descr, ctx)`` checks the kwargs
against the tensor (:class:`OpContext`) and returns the step;
``step.apply(x, stat, owned=, final_dtype=)`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ...errors import InputError, InvalidDescriptionError
from .measures import BATCH, Measure, sample_or_dataset

__all__ = ["OPS", "OpContext", "Step", "EnsureDtype", "register_op", "FOLLOW_CORE_EPS", "Stat"]

#: how a step gets a statistic: ``stat(step, measure)`` (a :class:`.compile.StatsLookup` checks and lays it out)
Stat = Callable[[Any, Measure], np.ndarray]

_FIXED_EPS = 1e-6  # core's FixedZeroMeanUnitVariance.eps (not part of the description)

#: bioimageio.core 0.11 never passes ``kwargs.eps`` of ``zero_mean_unit_variance`` and
#: ``scale_range`` to its ops, which then use their default 1e-6.  True reproduces that
#: (the numbers of core, hence of zoo test outputs made with it); False uses the
#: described eps as the spec intends.  ``scale_mean_variance`` always uses its eps.
FOLLOW_CORE_EPS = True
_CORE_DEFAULT_EPS = 1e-6


def _described_or_core_eps(eps: float) -> float:
    return _CORE_DEFAULT_EPS if FOLLOW_CORE_EPS else float(eps)


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
        missing = [x for x in a if x not in known and not (x == BATCH)]
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
OPS: dict[str, type] = {}


def register_op(op_id: str, descr_class: str) -> Callable[[type], type]:
    """Register a step class for ``op_id``, built from ``bioimageio.spec.model.v0_5.<descr_class>``.

    Format 0.4 op names (``binarize``, ``clip``, ``scale_linear``,
    ``sigmoid``, ``zero_mean_unit_variance``, ``scale_range``,
    ``scale_mean_variance``) are 0.5 ids too, so one key serves both; a 0.4
    ``zero_mean_unit_variance`` with ``mode: fixed`` is upgraded to
    ``fixed_zero_mean_unit_variance`` by bioimageio.spec.  0.4 description
    *objects* have other kwargs and are refused (upgrade them first).
    """

    def register(cls: type) -> type:
        if op_id in OPS:
            raise RuntimeError(f"processing op {op_id!r} is registered twice ({OPS[op_id].__name__}, {cls.__name__})")
        cls.op_id = op_id
        cls.descr_class = descr_class
        OPS[op_id] = cls
        return cls

    return register


@dataclass
class Step:
    """One processing op, ready to apply; each subclass builds itself with :meth:`from_descr`."""

    op: str
    where: str
    measures: tuple[Measure, ...] = ()
    fusable: bool = False  # can write its result straight into a following ensure_dtype's dtype

    #: the op id and the name of its bioimageio.spec.model.v0_5 description class (set by @register_op)
    op_id: ClassVar[str] = ""
    descr_class: ClassVar[str] = ""

    @classmethod
    def from_descr(cls, descr: Any, ctx: OpContext) -> "Step":
        """The step for ``descr`` (an instance of ``v0_5.<descr_class>``) of the tensor in ``ctx``."""
        raise NotImplementedError

    def apply(self, x: np.ndarray, stat: Stat, *, owned: bool, final_dtype: np.dtype | None) -> np.ndarray:
        raise NotImplementedError


@register_op("ensure_dtype", "EnsureDtypeDescr")
@dataclass
class EnsureDtype(Step):
    dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))

    @classmethod
    def from_descr(cls, descr, ctx):
        return cls(ctx.op, ctx.where, dtype=np.dtype(str(descr.kwargs.dtype)))

    def apply(self, x, stat, *, owned, final_dtype):
        return x.astype(self.dtype, copy=False)


@register_op("binarize", "BinarizeDescr")
@dataclass
class _Binarize(Step):
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


@register_op("clip", "ClipDescr")
@dataclass
class _Clip(Step):
    min: float | None = None
    max: float | None = None
    min_measure: Measure | None = None
    max_measure: Measure | None = None

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        m_axes = ctx.measure_axes(kw.axes, ctx.tensor_id)
        scope = sample_or_dataset(m_axes, none_is_dataset=True)
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


@register_op("scale_linear", "ScaleLinearDescr")
@dataclass
class _ScaleLinear(Step):
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


@register_op("fixed_zero_mean_unit_variance", "FixedZeroMeanUnitVarianceDescr")
@dataclass
class _FixedZeroMeanUnitVariance(Step):
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


@register_op("zero_mean_unit_variance", "ZeroMeanUnitVarianceDescr")
@dataclass
class _ZeroMeanUnitVariance(Step):
    mean: Measure | None = None
    std: Measure | None = None
    eps: float = 1e-6
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        m_axes = ctx.measure_axes(kw.axes, ctx.tensor_id)
        scope = sample_or_dataset(m_axes, none_is_dataset=True)
        mean = Measure(ctx.tensor_id, "mean", m_axes, None, scope)
        std = Measure(ctx.tensor_id, "std", m_axes, None, scope)
        return cls(ctx.op, ctx.where, (mean, std), mean=mean, std=std, eps=_described_or_core_eps(kw.eps))

    def apply(self, x, stat, *, owned, final_dtype):
        mean = stat(self, self.mean)
        denom = stat(self, self.std) + self.eps
        t = _binary(np.subtract, x, mean, reuse=x if owned else None)
        return _binary(np.divide, t, denom, reuse=t, final_dtype=final_dtype)


@register_op("scale_mean_variance", "ScaleMeanVarianceDescr")
@dataclass
class _ScaleMeanVariance(Step):
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
        scope = sample_or_dataset(m_axes, none_is_dataset=False)
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


@register_op("scale_range", "ScaleRangeDescr")
@dataclass
class _ScaleRange(Step):
    lower: Measure | None = None
    upper: Measure | None = None
    eps: float = 1e-6
    fusable: bool = True

    @classmethod
    def from_descr(cls, descr, ctx):
        kw = descr.kwargs
        ref = ctx.ref_id(kw.reference_tensor)
        m_axes = ctx.measure_axes(kw.axes, ref)
        scope = sample_or_dataset(m_axes, none_is_dataset=True)
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


@register_op("sigmoid", "SigmoidDescr")
@dataclass
class _Sigmoid(Step):
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


@register_op("softmax", "SoftmaxDescr")
@dataclass
class _Softmax(Step):
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


def _check_along_axis(step: Step, x: np.ndarray, axis_index: int, n: int, what: str) -> None:
    if x.shape[axis_index] != n:
        raise InputError(
            f"{step.where} has {n} {what} along its axis, but the tensor is {x.shape[axis_index]} long "
            "there; give the model data with that many entries along that axis (e.g. channels)"
        )



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


