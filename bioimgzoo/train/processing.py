"""The package pre/post-processing steps training needs, on single numpy images.

A trainer must feed the network exactly what a zoo consumer's runtime will
feed it, so the tasks normalise their training images with the very steps
they declare for the package.  This module applies those steps (as dicts
``{"id": ..., "kwargs": {...}}`` or bioimageio.spec v0_5 descrs) to one
sample of shape ``(channel, y, x)``, following the spec's formulas
(``eps`` = 1e-6 defaults, population standard deviation).

Supported: ``ensure_dtype``, ``zero_mean_unit_variance``,
``fixed_zero_mean_unit_variance``, ``scale_linear``, ``scale_range``,
``scale_mean_variance`` (reference = the input image), ``clip``, ``sigmoid``,
``binarize``.  Anything else raises :class:`~bioimgzoo.errors.TrainingError`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import TrainingError

__all__ = ["as_step_dict", "apply_processing", "SUPPORTED"]

SUPPORTED = ("ensure_dtype", "zero_mean_unit_variance", "fixed_zero_mean_unit_variance", "scale_linear",
             "scale_range", "scale_mean_variance", "clip", "sigmoid", "binarize")
_DIMS = ("channel", "y", "x")


def as_step_dict(step: Any) -> dict:
    """A processing step as a plain ``{"id": str, "kwargs": dict}`` (JSON-able)."""
    if isinstance(step, Mapping):
        return {"id": str(step["id"]), "kwargs": dict(step.get("kwargs") or {})}
    kwargs = getattr(step, "kwargs", None)
    if kwargs is None:
        kw: dict = {}
    elif hasattr(kwargs, "model_dump"):
        kw = kwargs.model_dump(mode="json", exclude_none=True)
    else:
        kw = dict(kwargs)
    return {"id": str(step.id), "kwargs": kw}


def _reduce_axes(kwargs: Mapping, ndim: int) -> tuple[int, ...]:
    """Indices of the axes of a (channel, y, x) sample that the step reduces over."""
    axes = kwargs.get("axes")
    if axes is None:
        return tuple(range(ndim))
    idx = []
    for a in axes:
        a = str(a)
        if a == "batch":  # one sample at a time: reducing over batch is a no-op here
            continue
        if a not in _DIMS:
            raise TrainingError(f"processing over axis {a!r} is not supported for training "
                                "(2D images with axes channel, y, x only)")
        idx.append(_DIMS.index(a))
    return tuple(sorted(idx))


def _along(value: Any, kwargs: Mapping, ndim: int) -> np.ndarray | float:
    """Broadcast a per-channel list (``axis: channel``) to a (c, 1, 1) array."""
    if isinstance(value, (list, tuple)):
        axis = str(kwargs.get("axis", "channel"))
        if axis != "channel":
            raise TrainingError(f"processing along axis {axis!r} is not supported for training (channel only)")
        return np.asarray(value, np.float32).reshape(-1, *([1] * (ndim - 1)))
    return float(value)


def apply_processing(steps: Iterable[Any], image: np.ndarray, *, reference: np.ndarray | None = None) -> np.ndarray:
    """Apply processing ``steps`` to one sample ``image`` of shape (channel, y, x).

    ``reference`` is the unprocessed input image, for steps with a
    ``reference_tensor`` (postprocessing that rescales to the input).
    """
    x = np.asarray(image, np.float32)
    for raw in steps:
        step = as_step_dict(raw)
        sid, kw = step["id"], step["kwargs"]
        eps = float(kw.get("eps", 1e-6))
        if sid == "ensure_dtype":
            x = x.astype(np.float32)  # training works in float32 throughout
        elif sid == "zero_mean_unit_variance":
            axes = _reduce_axes(kw, x.ndim)
            x = (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + eps)
        elif sid == "fixed_zero_mean_unit_variance":
            x = (x - _along(kw["mean"], kw, x.ndim)) / (_along(kw["std"], kw, x.ndim) + eps)
        elif sid == "scale_linear":
            x = x * _along(kw.get("gain", 1.0), kw, x.ndim) + _along(kw.get("offset", 0.0), kw, x.ndim)
        elif sid == "scale_range":
            src = x if kw.get("reference_tensor") is None or reference is None else np.asarray(reference, np.float32)
            axes = _reduce_axes(kw, x.ndim)
            lo = np.percentile(src, float(kw.get("min_percentile", 0.0)), axis=axes, keepdims=True)
            hi = np.percentile(src, float(kw.get("max_percentile", 100.0)), axis=axes, keepdims=True)
            x = (x - lo) / (hi - lo + eps)
        elif sid == "scale_mean_variance":
            if reference is None:
                raise TrainingError("scale_mean_variance needs the reference (input) image")
            ref = np.asarray(reference, np.float32)
            axes = _reduce_axes(kw, x.ndim)
            x = ((x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + eps)
                 * (ref.std(axis=axes, keepdims=True) + eps) + ref.mean(axis=axes, keepdims=True))
        elif sid == "clip":
            axes = _reduce_axes(kw, x.ndim)
            lo = kw.get("min")
            hi = kw.get("max")
            if kw.get("min_percentile") is not None:
                lo = np.percentile(x, float(kw["min_percentile"]), axis=axes, keepdims=True)
            if kw.get("max_percentile") is not None:
                hi = np.percentile(x, float(kw["max_percentile"]), axis=axes, keepdims=True)
            x = np.clip(x, lo, hi)
        elif sid == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        elif sid == "binarize":
            x = (x > _along(kw["threshold"], kw, x.ndim)).astype(np.float32)
        else:
            raise TrainingError(f"the processing step {sid!r} is not supported for training "
                                f"(supported: {', '.join(SUPPORTED)})")
        x = x.astype(np.float32, copy=False)
    return x
