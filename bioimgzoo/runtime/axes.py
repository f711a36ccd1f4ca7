"""Map arrays in the user's layout onto a model tensor's axes, and back.

Users pass images in their own layout (``"yx"``, ``"cyx"``, ``"zyx"``,
``"tczyx"`` from a TIFF, ...) or an :class:`xarray.DataArray` with named
dims.  A model tensor declares its axes (``batch``, ``channel``, ``z``,
``y``, ``x``, ``t``, index axes).  :func:`to_model_layout` reorders the
array into the model's order, inserting the axes the model has and the
image lacks when that is unambiguous (batch, a single channel, size-1
axes) and squeezing size-1 axes the model does not have.

Axes the image has and the model does not (a ``z`` stack or a ``t`` series
through a 2D model) are *folded into the batch axis*: every slice is
predicted as its own sample, and :func:`from_model_layout` unfolds them
again.  Output layout (documented for users):

    (folded axes in the image's order ...,) + the model output's axes,
    with ``batch`` dropped unless the image had a batch axis.

Letters in layout strings: ``b`` batch, ``c`` channel, ``i`` index,
``x``/``y``/``z``/``t`` as themselves; full ids (``"channel"``) work in
sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..descr.axes import STANDARD_AXES, UNNAMED, AxisInfo, axis_letter, format_axes, parse_axes
from ..errors import InputError

@dataclass(frozen=True)
class Folding:
    """How an image was mapped into the model layout (to undo it for outputs)."""

    folded_axes: tuple[str, ...]  # image axes folded into batch, in the image's order
    folded_shape: tuple[int, ...]
    had_batch: bool  # the image had a batch axis of its own


def default_layout(ndim: int, model_axes: Sequence[AxisInfo], what: str) -> tuple[str, ...]:
    ids = [a.id for a in model_axes]
    candidates = [ids]
    no_batch = [a.id for a in model_axes if a.kind != "batch"]
    candidates.append(no_batch)
    single = [a.id for a in model_axes if a.kind not in ("batch",) and not (a.kind in ("channel", "index") and a.size == 1)]
    candidates.append(single)
    for cand in candidates:
        if len(cand) == ndim:
            return tuple(cand)
    raise InputError(
        f"cannot tell the layout of the {ndim}-dimensional {what}: the model expects axes "
        f"{format_axes(ids)}; pass axes= (e.g. axes='{''.join(axis_letter(a) for a in no_batch)}')")


def to_model_layout(
    array: np.ndarray,
    axes: Sequence[str] | str | None,
    model_axes: Sequence[AxisInfo],
    *,
    tensor_id: str,
) -> tuple[np.ndarray, Folding]:
    """Reorder ``array`` (laid out as ``axes``) into the model tensor's axes.

    Returns
    -------
    array : ndarray
        In model axis order; the batch axis (if the model has one) holds
        the image's batch times every folded axis.
    folding : Folding
        What :func:`from_model_layout` needs to undo the mapping.
    """
    what = f"image for input '{tensor_id}'"
    model_ids = [a.id for a in model_axes]
    if axes is None:
        ids = default_layout(array.ndim, model_axes, what)
    else:
        ids = parse_axes(axes, what=what)
        # an unknown letter is a typo, not an axis to fold into the batch: say so before counting
        unknown = [a for a in ids if a not in model_ids and a not in STANDARD_AXES and a != UNNAMED]
        if unknown:
            extra = [a for a in model_ids if a not in STANDARD_AXES]
            raise InputError(
                f"axes {axes!r} of the {what} name unknown axis {', '.join(map(repr, unknown))}: use the "
                "letters b (batch), c (channel), i (index), z, y, x, t" +
                (f" or the model's axis ids {', '.join(extra)}" if extra else "") + ", one per dimension")
        if len(ids) != array.ndim:
            parse_axes(axes, ndim=array.ndim, what=what)  # raises: one letter per dimension
        for i, a in enumerate(ids):
            if a == UNNAMED and array.shape[i] != 1:
                raise InputError(f"axis 'q' (unnamed) of the {what} has {array.shape[i]} entries: only an axis "
                                 "of size 1 may stay unnamed; name it (z, t, c, ...) in axes=")
    by_id = {a.id: a for a in model_axes}
    has_batch = any(a.kind == "batch" for a in model_axes)

    # image axes the model lacks: squeeze size 1, fold the rest into batch
    squeeze, fold = [], []
    for i, a in enumerate(ids):
        if a in by_id:
            continue
        if array.shape[i] == 1:
            squeeze.append(i)
        elif a == "batch":
            continue  # handled below: the model has no batch axis
        else:
            fold.append(i)
    if "batch" in ids and not has_batch and array.shape[ids.index("batch")] > 1:
        raise InputError(f"input '{tensor_id}': the model has no batch axis, but the image has "
                         f"{array.shape[ids.index('batch')]} samples on axis 'b': pass one sample at a time")
    if fold and not has_batch:
        names = ", ".join(f"'{ids[i]}' (size {array.shape[i]})" for i in fold)
        raise InputError(f"input '{tensor_id}': the model takes axes {format_axes(model_ids)} and has no axis "
                         f"{names} of the image; pass an image with axes {format_axes(model_ids)} or select one slice")

    folded_axes = tuple(ids[i] for i in fold)
    folded_shape = tuple(array.shape[i] for i in fold)
    had_batch = "batch" in ids and "batch" in by_id

    # bring folded axes (then the image's batch) to the front, others in model order
    kept = [i for i in range(len(ids)) if i not in squeeze and i not in fold and ids[i] != "batch"]
    batch_pos = [ids.index("batch")] if "batch" in ids and ids.index("batch") not in squeeze else []
    order = fold + batch_pos + sorted(kept, key=lambda i: model_ids.index(ids[i]))
    arr = np.squeeze(array, axis=tuple(squeeze)) if squeeze else array
    # indices shift after squeeze: recompute on the squeezed id list
    sq_ids = [a for i, a in enumerate(ids) if i not in squeeze]
    order_ids = [ids[i] for i in order]
    arr = np.transpose(arr, [sq_ids.index(a) for a in order_ids])
    n_lead = len(fold) + len(batch_pos)
    batch_n = int(np.prod(arr.shape[:n_lead])) if n_lead else 1
    rest_ids = order_ids[n_lead:]
    arr = arr.reshape((batch_n,) + arr.shape[n_lead:]) if has_batch else arr
    present = (["batch"] if has_batch else []) + rest_ids

    # insert missing model axes of size 1 (batch is present already when the model has one)
    for pos, ax in enumerate(model_axes):
        if ax.id in present:
            continue
        if ax.kind == "channel" or ax.kind == "index" or ax.size == 1:
            if ax.size not in (1, None) or (ax.size is None and ax.kind != "batch"):
                need = f"{ax.size} entries" if ax.size else "entries"
                raise InputError(f"input '{tensor_id}' needs axis '{ax.id}' ({need}), which the image "
                                 f"(axes {format_axes(ids)}, shape {tuple(array.shape)}) lacks: pass axes= with it")
            arr = np.expand_dims(arr, pos)
            present.insert(pos, ax.id)
        else:
            raise InputError(f"input '{tensor_id}' needs axis '{ax.id}' ({ax.kind}), which the image "
                             f"(axes {format_axes(ids)}, shape {tuple(array.shape)}) lacks: the model expects "
                             f"{format_axes(model_ids)}; pass an image with that axis or the right axes=")
    assert present == model_ids, (present, model_ids)
    check_sizes(arr, model_axes, tensor_id=tensor_id, user_axes=ids)
    return arr, Folding(folded_axes, folded_shape, had_batch)


def check_sizes(arr: np.ndarray, model_axes: Sequence[AxisInfo], *, tensor_id: str,
                user_axes: Sequence[str] = ()) -> None:
    """Raise InputError where a fixed-size non-spatial axis does not match."""
    for ax, n in zip(model_axes, arr.shape):
        if ax.kind in ("channel", "index") and ax.size is not None and n != ax.size:
            noun = "channel" if ax.kind == "channel" else "entry"
            raise InputError(
                f"input '{tensor_id}' expects {ax.size} {noun}{'s' if ax.size != 1 else ''} on axis "
                f"'{ax.id}', the image has {n} (image axes {format_axes(user_axes) if user_axes else '?'}): "
                "select the right channel(s) with channels=[N, ...] (counted from 0), or pass axes= if the layout "
                "was guessed wrong")


def from_model_layout(array: np.ndarray, folding: Folding, model_axes: Sequence[AxisInfo]) -> np.ndarray:
    """Undo :func:`to_model_layout` for an output tensor in model order."""
    has_batch = bool(model_axes) and model_axes[0].kind == "batch"
    if not has_batch:
        return array
    if folding.folded_axes:
        shape = folding.folded_shape + ((array.shape[0] // int(np.prod(folding.folded_shape)),)
                                        if folding.had_batch else ()) + array.shape[1:]
        return array.reshape(shape)
    return array if folding.had_batch else array[0]


def output_axes_ids(folding: Folding, model_axes: Sequence[AxisInfo]) -> tuple[str, ...]:
    """Axis ids of what :func:`from_model_layout` returns."""
    ids = [a.id for a in model_axes]
    if ids and ids[0] == "batch" and not folding.had_batch:
        ids = ids[1:]
    return tuple(folding.folded_axes) + tuple(ids)
