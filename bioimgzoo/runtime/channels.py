"""Pick the channels of an image a model takes: by index (``channels=``, CLI ``--channel``) or RGB to one.

Pure array functions on an array and its layout (axis ids, as
:func:`bioimgzoo.descr.axes.parse_axes` gives them); nothing is copied
that need not be.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..descr.axes import parse_axes
from ..errors import InputError

__all__ = ["RGB_MODES", "parse_channels", "select_channels", "rgb_to_one_channel", "with_channels"]

#: ``luminance``: ITU-R BT.601 weights (0.299 R + 0.587 G + 0.114 B, Fiji's "weighted" conversion)
RGB_MODES = ("luminance", "red", "green", "blue")
_LUMINANCE = np.array([0.299, 0.587, 0.114])


def parse_channels(value: object, *, option: str = "channels=") -> tuple[int, ...] | None:
    """``0``, ``"1,2"`` or ``[1, 2]`` -> a tuple of channel indices (0-based); None stays None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else ([value] if isinstance(value, (int, np.integer))
                                                              else value)
    try:
        out = tuple(int(str(v).strip()) for v in items)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        out = ()
    if not out or any(i < 0 for i in out) or len(set(out)) != len(out):
        raise InputError(f"{option}{value!r} is not valid: give channel numbers counted from 0, each once, "
                         "e.g. 0 or 1,2")
    return out


def _channel_axis(axes: Sequence[str], what: str, option: str) -> int:
    if "channel" not in axes:
        raise InputError(f"{what} has no channel axis (axes {''.join(a[0] for a in axes)}): {option} picks "
                         "channels of an image that has several; pass the layout if it was read wrong")
    return list(axes).index("channel")


def select_channels(array: np.ndarray, axes: Sequence[str], channels: Sequence[int], *, what: str = "the image",
                    option: str = "channels=") -> np.ndarray:
    """The channels ``channels`` of ``array`` (in that order), its channel axis kept."""
    axis = _channel_axis(axes, what, option)
    n = array.shape[axis]
    bad = [c for c in channels if c >= n]
    if bad:
        raise InputError(f"{what} has {n} channel{'s' if n != 1 else ''} (0 to {n - 1}); {option} asks for "
                         f"{', '.join(map(str, bad))}: count channels from 0")
    return np.take(array, list(channels), axis=axis)


def rgb_to_one_channel(array: np.ndarray, axes: Sequence[str], mode: str, *, what: str = "the image",
                       option: str = "--rgb") -> tuple[np.ndarray, tuple[str, ...]]:
    """One channel from an RGB(A) image: its luminance or one colour; returns the array and its axes.

    The channel axis is removed (the model's single channel is added back
    by the axis mapping).  Alpha, when present, is ignored.
    """
    if mode not in RGB_MODES:
        raise InputError(f"{option} {mode!r} is not valid: use one of {', '.join(RGB_MODES)}")
    axis = _channel_axis(axes, what, option)
    n = array.shape[axis]
    if n not in (3, 4):
        raise InputError(f"{what} has {n} channel{'s' if n != 1 else ''}, not RGB: {option} turns a 3-channel "
                         "(RGB) image into one channel; pick channels by number instead")
    rest = tuple(a for i, a in enumerate(axes) if i != axis)
    if mode == "luminance":
        rgb = np.take(array, [0, 1, 2], axis=axis).astype(np.float32)
        return np.tensordot(rgb, _LUMINANCE.astype(np.float32), axes=([axis], [0])), rest
    return np.take(array, RGB_MODES.index(mode) - 1, axis=axis), rest


class _Picked:
    """``images`` with ``channels`` picked from each, re-iterable when ``images`` is (statistics take two passes)."""

    def __init__(self, images: Iterable[Any], channels: Any, axes: Any, names: Any, labelled: bool):
        self.images, self.channels, self.axes, self.names, self.labelled = images, channels, axes, names, labelled

    def __iter__(self) -> Iterator[Any]:
        for index, image in enumerate(self.images):
            label = None
            if self.labelled:
                try:
                    label = str(self.names[index]) if self.names is not None else f"image {index + 1}"
                except (IndexError, KeyError, TypeError):
                    label = f"image {index + 1}"
            try:
                yield _pick(image, self.channels, self.axes)
            except InputError as e:
                if label is None:
                    raise
                raise InputError(f"{label}: {e}") from e


def _pick(image: Any, channels: Any, axes: Any) -> Any:
    if isinstance(image, Mapping):
        return {k: _pick_one(v, channels.get(k) if isinstance(channels, Mapping) else channels,
                             axes.get(k) if isinstance(axes, Mapping) else axes, what=f"input '{k}'")
                for k, v in image.items()}
    if isinstance(channels, Mapping):
        if len(channels) != 1:
            raise InputError("channels= names several inputs but one image was given: pass a dict {input_id: image}")
        channels = next(iter(channels.values()))
    return _pick_one(image, channels, axes if not isinstance(axes, Mapping) else next(iter(axes.values()), None),
                     what="the image")


def _pick_one(image: Any, channels: Any, axes: Any, *, what: str) -> Any:
    picks = parse_channels(channels)
    if picks is None:
        return image
    if hasattr(image, "dims") and hasattr(image, "values"):  # xarray.DataArray: its dims are its layout
        ids = parse_axes(axes or tuple(str(d) for d in image.dims), ndim=image.ndim, what=what)
        axis = _channel_axis(ids, what, "channels=")
        n = image.shape[axis]
        if any(c >= n for c in picks):
            raise InputError(f"{what} has {n} channel{'s' if n != 1 else ''} (0 to {n - 1}); channels= asks for "
                             f"{', '.join(str(c) for c in picks if c >= n)}: count channels from 0")
        return image.isel({image.dims[axis]: list(picks)})
    array = np.asarray(image)
    if axes is None:
        raise InputError(f"channels= needs to know which axis of {what} holds the channels: pass axes= too "
                         "(e.g. axes='cyx')")
    ids = parse_axes(axes, ndim=array.ndim, what=what)
    return select_channels(array, ids, picks, what=what)


def with_channels(images: Iterable[Any], channels: Any, *, axes: Any = None, names: Any = None,
                  labelled: bool = True) -> Iterable[Any]:
    """``images`` with the channels ``channels`` (int, sequence, ``"1,2"`` or dict by input id) picked from each.

    ``None`` returns ``images`` as they are.  Errors name the image
    (``names[i]``, else ``image i``) unless ``labelled`` is False.
    """
    if channels is None:
        return images
    if isinstance(channels, Mapping):
        for v in channels.values():
            parse_channels(v)
    else:
        parse_channels(channels)  # a bad option fails before any image is read
    picked = _Picked(images, channels, axes, names, labelled)
    return iter(picked) if iter(images) is images else picked
