"""Compilation: a tensor's list of processing descriptions into one callable :class:`Chain`."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...errors import InputError, InvalidDescriptionError
from .measures import Measure, as_stat
from .ops import OPS, EnsureDtype, OpContext, Step

__all__ = ["Chain", "StatsLookup", "compile_processing"]


# ------------------------------------------------------------------------- the steps
class StatsLookup:
    """Statistics lookup for one chain call: checks presence, shapes and layouts."""

    def __init__(self, chain: "Chain", stats: Mapping[Measure, Any], x: np.ndarray):
        self.chain, self.stats, self.x = chain, stats, x

    def __call__(self, step: "Step", m: Measure) -> np.ndarray:
        try:
            value = self.stats[m]
        except KeyError:
            how = ("compute_sample_measures()" if m.scope == "sample"
                   else "DatasetStatistics (update it with raw samples, then finalize())")
            raise InputError(
                f"{step.where} needs the {m.describe()}, which was not given; "
                f"compute it on the raw tensor with {how} and pass it in `stats`"
            ) from None
        v = as_stat(value)
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

    def __init__(self, tensor_id: str, tensor_axes: Sequence[str], steps: Sequence[Step],
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
        stat = StatsLookup(self, stats or {}, x)
        owned = False
        i, n = 0, len(self._steps)
        while i < n:
            step = self._steps[i]
            final = None
            nxt = self._steps[i + 1] if i + 1 < n else None
            if step.fusable and isinstance(nxt, EnsureDtype):
                final = nxt.dtype
            try:
                y = step.apply(x, stat, owned=owned, final_dtype=final)
            except InputError:  # already one message naming the step (an InputError is a ValueError too)
                raise
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
    steps: list[Step] = []
    for index, descr in enumerate(descrs, start=1):
        op = _descr_id(descr)
        where = f"processing step {index} ({op!r}) of tensor {tensor_id!r}"
        cls = OPS.get(op)
        # the id alone is not enough: a 0.4 object (or a look-alike) has other kwargs
        if cls is None or not isinstance(descr, getattr(v0_5, cls.descr_class)):
            hint = ("upgrade the description to format 0.5 first (bioimgzoo.package.open_package does)"
                    if "v0_4" in type(descr).__module__ else
                    f"only {', '.join(sorted(OPS))} are supported; run the model without this step or "
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

    def relayout(v: np.ndarray, m: Measure, step: Step) -> np.ndarray:
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
