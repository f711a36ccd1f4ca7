"""Axis names: the letters users type, the ids descriptions use, and one parser between them.

Letters: ``b`` batch, ``c`` channel, ``i`` index, ``t`` time, ``z``/``y``/``x``
space (``s`` is read as channel, as in some TIFF writers); sequences may use
full ids (``["channel", "y", "x"]``).  ``q`` stands for an unnamed size-1 axis
(what :func:`bioimgzoo.io.read_image` calls a TIFF axis it cannot name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import BioimgzooError, InputError

__all__ = ["STANDARD_AXES", "SPATIAL_LETTERS", "UNNAMED", "AxisInfo", "parse_axes", "parse_axis_letters",
           "axis_letter", "format_axes"]

_LETTERS = {"b": "batch", "c": "channel", "i": "index", "s": "channel"}
_ALIASES = {"batch": "batch", "channel": "channel", "channels": "channel", "index": "index",
            "n": "batch", "sample": "batch"}


#: letters of axes whose size may vary (time and space)
SPATIAL_LETTERS = "tzyx"
#: axis ids any layout may name, whatever the model: ``q`` is an unnamed size-1 axis
#: (what :func:`bioimgzoo.io.read_image` calls a TIFF axis it cannot name)
STANDARD_AXES = ("batch", "channel", "index", "x", "y", "z", "t")
UNNAMED = "q"


def parse_axes(axes: str | Sequence[str], *, ndim: int | None = None, what: str = "image",
               error: type[BioimgzooError] = InputError) -> tuple[str, ...]:
    """Normalise a layout (``"cyx"`` or ``["channel", "y", "x"]``) to axis ids.

    ``error`` is the error class raised (the caller's room: InputError for
    images, ExportError for the exporter).
    """
    if isinstance(axes, (bytes, bytearray)) or not isinstance(axes, (str, Sequence)):
        raise error(f"axes={axes!r} for the {what} is not a layout: pass a string of axis letters "
                    "such as 'yx', 'cyx' or 'zyx' (b, c, i, z, y, x, t), or a list of axis ids")
    if isinstance(axes, str):
        items = [_LETTERS.get(ch, ch) for ch in axes.lower() if not ch.isspace()]
    else:
        items = [_ALIASES.get(str(a).lower(), str(a).lower() if len(str(a)) == 1 else str(a)) for a in axes]
        items = [_LETTERS.get(a, a) if len(a) == 1 else a for a in items]
    if len(set(items)) != len(items):
        raise error(f"axes {axes!r} of the {what} repeat an axis: name each axis once, e.g. 'cyx'")
    if ndim is not None and len(items) != ndim:
        raise error(f"axes {axes!r} name {len(items)} axes but the {what} has {ndim} dimensions: "
                    f"pass one letter per dimension (b, c, z, y, x, t)")
    return tuple(items)


@dataclass(frozen=True)
class AxisInfo:
    """What the runtime needs to know about one model axis."""

    id: str
    kind: str  # "batch" | "channel" | "index" | "space" | "time"
    #: fixed size, or None when variable (batch, parametrized, referenced, data dependent)
    size: int | None = None


def parse_axis_letters(axes: str, ndim: int, *, what: str, allowed: str = "btczyx",
                       error: type[BioimgzooError] = InputError) -> str:
    """A strict layout of letters only (``"bcyx"``), each in ``allowed``, one per dimension.

    For callers that describe a new tensor (the exporter) rather than read a user's image.
    """
    if not isinstance(axes, str) or not axes:
        raise error(f"{what}: axes must be a string of axis letters such as 'bcyx', got {axes!r}")
    axes = axes.lower()
    bad = sorted(set(axes) - set(allowed))
    if bad:
        raise error(f"{what}: unknown axis letter(s) {bad} in {axes!r}; use b (batch), c (channel), "
                    "t (time), z, y, x (space)")
    try:
        ids = parse_axes(axes, ndim=ndim, what="array", error=error)
    except error as e:
        raise error(f"{what}: {e}") from None
    return "".join(axis_letter(a) for a in ids)


def axis_letter(axis_id: str) -> str:
    """``"batch"`` -> ``"b"``, ``"channel"`` -> ``"c"``, ``"index"`` -> ``"i"``; space/time ids as they are."""
    return {"batch": "b", "channel": "c", "index": "i"}.get(axis_id, axis_id)


def format_axes(ids: Sequence[str]) -> str:
    """Axis ids as a quoted layout string: ``('channel', 'y', 'x')`` -> ``"'cyx'"``."""
    return "'" + "".join(axis_letter(a) if len(axis_letter(a)) == 1 else f"[{a}]" for a in ids) + "'"
