"""The package pre/post-processing steps training needs, on single numpy images: an adapter, no maths.

A trainer must feed the network exactly what a zoo consumer's runtime will
feed it, so the tasks normalise their training images with the very steps
they declare for the package.  This module only *adapts*: it turns steps
(dicts ``{"id": ..., "kwargs": {...}}`` or bioimageio.spec v0_5 descrs) into
the spec's descrs, compiles them with the runtime
(:func:`bioimgzoo.runtime.processing.compile_processing`), measures the
statistics they need with the runtime
(:func:`~bioimgzoo.runtime.processing.compute_sample_measures`,
:class:`~bioimgzoo.runtime.processing.DatasetStatistics`) and runs the
compiled chain on one sample of shape ``(channel, y, x)``.  No op is
implemented here: every formula is the runtime's (matched op by op with
bioimageio.core), so a new or fixed op reaches training with no change here.

Supported: the runtime's ops (:data:`SUPPORTED`, which is
``bioimgzoo.runtime.processing.SUPPORTED_OPS``); ``scale_mean_variance``'s
reference is the input image.  Anything else raises
:class:`~bioimgzoo.errors.TrainingError`.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import TrainingError

__all__ = ["as_step_dict", "apply_processing", "SUPPORTED"]

_DIMS = ("channel", "y", "x")


def __getattr__(name: str) -> Any:
    # SUPPORTED is the runtime's list, read lazily: importing the runtime is slow and train imports this early
    if name == "SUPPORTED":
        from ..runtime.processing import SUPPORTED_OPS

        return SUPPORTED_OPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


_SAMPLE = "sample"
_AXES = ("batch",) + _DIMS
_COMPILED: dict[str, tuple[Any, frozenset[str]]] = {}


def _compiled(steps: list[dict], *, post: bool):
    """The runtime's chain for ``steps`` on a (batch, channel, y, x) sample, cached by content."""
    key = json.dumps([post, steps], sort_keys=True, default=str)
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit
    from pydantic import TypeAdapter, ValidationError
    from bioimageio.spec.model import v0_5

    from ..errors import BioimgzooError
    from ..runtime.processing import SUPPORTED_OPS, compile_processing

    adapter = TypeAdapter(v0_5.PostprocessingDescr if post else v0_5.PreprocessingDescr)
    descrs = []
    for step in steps:
        try:
            # ops without options (sigmoid) take no kwargs field at all
            descrs.append(adapter.validate_python(step if step["kwargs"] else {"id": step["id"]}))
        except ValidationError as e:
            raise TrainingError(f"the processing step {step['id']!r} is not supported for training "
                                f"(supported: {', '.join(SUPPORTED_OPS)}): {str(e).splitlines()[0]}") from e
    refs = frozenset(str(d.kwargs.reference_tensor) for d in descrs
                     if getattr(getattr(d, "kwargs", None), "reference_tensor", None))
    try:
        chain = compile_processing(descrs, tensor_id=_SAMPLE, tensor_axes=_AXES,
                                   reference_axes={_SAMPLE: _AXES, **{r: _AXES for r in refs}})
    except BioimgzooError as e:
        raise TrainingError(f"processing cannot be used for training: {e}") from e
    _COMPILED[key] = (chain, refs)
    return chain, refs


def apply_processing(steps: Iterable[Any], image: np.ndarray, *, reference: np.ndarray | None = None,
                     post: bool = False) -> np.ndarray:
    """Apply processing ``steps`` to one sample ``image`` of shape (channel, y, x).

    The very implementation a zoo consumer runs (:mod:`bioimgzoo.runtime.processing`),
    so training sees exactly what the packaged model will be fed.  ``reference``
    is the unprocessed input image, for steps with a ``reference_tensor``;
    dataset statistics are those of this one sample.
    """
    from ..runtime.processing import DatasetStatistics, compute_sample_measures

    step_dicts = [as_step_dict(s) for s in steps]
    if not step_dicts:
        return np.asarray(image, np.float32)
    chain, refs = _compiled(step_dicts, post=post)
    x = np.asarray(image)[None]
    tensors = {_SAMPLE: x}
    if refs:
        if reference is None:
            raise TrainingError(f"processing refers to tensor(s) {', '.join(sorted(refs))}: pass the reference image")
        tensors.update({r: np.asarray(reference)[None] for r in refs})
    axes = {k: _AXES for k in tensors}
    stats = compute_sample_measures(chain.required_measures, tensors, axes)
    dataset = [m for m in chain.required_measures if m.scope == "dataset"]
    if dataset:
        acc = DatasetStatistics(dataset, axes)
        acc.update(tensors)
        stats.update(acc.finalize())
    return np.asarray(chain(x, stats)[0], np.float32)
