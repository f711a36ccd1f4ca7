"""Checks of what a prediction is given: its options, its images, their non-finite values and sizes.

Pure functions :class:`~bioimgzoo.runtime.model.Model` calls before (and while) it reads
images, so that a hostile or odd input ends in one :class:`~bioimgzoo.errors.InputError`
naming the argument, never in numpy's ValueError or MemoryError.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from typing import Any, Callable, Mapping

import numpy as np

from ..descr.sizes import AxisSizes, SizeRef
from ..descr.tensors import TensorSpec
from ..errors import InputError, LimitExceededError
from .plan import MAX_WINDOW_ELEMENTS, SamplePlan

log = logging.getLogger("bioimgzoo")

__all__ = ["PAD_MODES", "NAN_POLICIES", "check_options", "check_choice", "image_label", "as_array", "check_dtype",
           "all_finite", "screen_nonfinite", "warn_if_padded", "memory_error", "memory_guard",
           "check_declared_sizes", "is_xarray"]

#: numpy.pad modes that need no extra arguments (the others would fail on the first padded window)
PAD_MODES = ("reflect", "symmetric", "edge", "constant", "wrap", "linear_ramp", "maximum", "mean",
             "median", "minimum")
NAN_POLICIES = ("warn", "fail", "zero")


def is_whole(value: Any) -> bool:
    """An integer (not a bool), or a float with an integral value (512.0, from a config file)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer()


def check_size_option(name: str, value: Any, *, minimum: int, meaning: str, example: str) -> None:
    def bad(what: Any) -> InputError:
        return InputError(f"{name}={what!r} is not valid: pass a whole number of at least {minimum} ({meaning}), "
                          f"a dict by axis such as {example}, or None for the default")

    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not is_whole(v) or v < minimum:
                raise bad({k: v})
        return
    if not is_whole(value) or value < minimum:
        raise bad(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name}={value!r} is not valid: use one of {', '.join(map(repr, choices))}")


def check_options(*, tile: Any, halo: Any, batch_size: Any, pad_mode: Any, nan_policy: Any, axes: Any) -> None:
    """Refuse bad predict() options before any image is read, each with one message naming it."""
    check_size_option("tile", tile, minimum=1, meaning="pixels per tiled axis", example="{'y': 256, 'x': 512}")
    check_size_option("halo", halo, minimum=0, meaning="input pixels dropped at inner window edges",
                       example="{'y': 16, 'x': 16}")
    if batch_size is not None and (not is_whole(batch_size) or batch_size < 1):
        raise InputError(f"batch_size={batch_size!r} is not valid: pass a whole number of at least 1 (windows "
                         "per engine call), or None for automatic")
    check_choice("pad_mode", pad_mode, PAD_MODES)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)
    if axes is not None and not isinstance(axes, (str, Mapping, list, tuple)):
        raise InputError(f"axes={axes!r} is not valid: pass a layout such as 'yx', 'cyx' or 'zyx', a list of "
                         "axis ids, or a dict of those by input id")


def image_label(names: Any, index: int) -> str:
    if names is not None:
        try:
            return str(names[index])
        except (IndexError, KeyError, TypeError):
            pass
    return f"image {index + 1}"


def as_array(value: Any, spec: TensorSpec) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes, os.PathLike)):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        got = "None" if value is None else f"a {type(value).__name__} ({shown})"
        raise InputError(f"input '{spec.id}' got {got}, not an image: pass a numpy array "
                         "(bioimgzoo.io.read_image reads image files)")
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists, objects numpy cannot convert
        raise InputError(f"input '{spec.id}' got a {type(value).__name__} that is not an array ({e}): pass a "
                         "numpy array of numbers") from None


def all_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN or inf, in one pass over it."""
    if a.dtype.kind not in "fc":
        return True
    if a.size <= 1 << 20:  # small: the plain test is fastest (errstate alone costs as much)
        return bool(np.isfinite(a).all())
    # large: a sum is non-finite if any value is, and needs no temporary of the image's size
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None)
    # a finite sum proves it; an overflowing one (huge finite values) needs the exact check
    return bool(np.isfinite(total)) or bool(np.isfinite(a).all())


def screen_nonfinite(arrays: dict[str, np.ndarray], policy: str, label: str | None, *,
                      report: bool) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    """Apply ``nan_policy`` to one image's inputs; returns them and the ids that keep non-finite values."""
    bad = set()
    for tid, a in arrays.items():
        if all_finite(a):
            continue
        finite = np.isfinite(a)
        n_bad = a.size - int(np.count_nonzero(finite))
        n_nan = int(np.count_nonzero(np.isnan(a)))
        where = f"input '{tid}'" + (f" of {label}" if label else "")
        what = f"{n_bad:,} non-finite value{'s' if n_bad != 1 else ''} ({n_nan:,} NaN, {n_bad - n_nan:,} inf) " \
               f"among its {a.size:,}"
        if policy == "fail":
            raise InputError(f"{where} holds {what}: clean the image, or pass nan_policy='zero' (CLI: "
                             "--nan-policy zero) to replace them by 0, or nan_policy='warn' to go on")
        if policy == "zero":
            arrays = {**arrays, tid: np.where(finite, a, np.zeros((), a.dtype))}
            if report:  # asked for: no warning, but the count is worth a line in a verbose log
                log.info("%s holds %s: replaced by 0 (nan_policy='zero')", where, what)
            continue
        bad.add(tid)
        if report:
            log.warning("%s holds %s: the statistics of preprocessing skip them, but the output is not finite "
                        "where they reach; pass nan_policy='zero' (CLI: --nan-policy zero) to replace them by "
                        "0, or 'fail' to stop", where, what)
    return arrays, frozenset(bad)

def warn_if_padded(plan: SamplePlan, inputs: list[TensorSpec], label: str | None) -> None:
    """Warn when an image is smaller than the model's minimum, so its one window is mostly padding."""
    primary = next((t for t in inputs if t.id in plan.window_shapes and any(a in t.axis_ids for a in plan.image_len)),
                   None)
    if primary is None or plan.tiled:
        return
    window = dict(zip(primary.axis_ids, plan.window_shapes[primary.id]))
    short = {a: (n, window[a]) for a, n in plan.image_len.items()
             if isinstance(primary.sizes.get(a), AxisSizes) and n < primary.sizes[a].min and window.get(a, n) > n}
    if short:
        what = ", ".join(f"{a} {n} -> {w} (+{w - n})" for a, (n, w) in short.items())
        log.warning("%s is smaller than the model's minimum size: padded along %s pixels; predictions near "
                    "the padding are less reliable", label or "the image", what)


def memory_error(e: MemoryError) -> InputError:
    return InputError(f"not enough memory to predict this image ({e}): pass a smaller tile= or batch_size=, "
                      "or crop the image")


def memory_guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except MemoryError as e:
        raise memory_error(e) from e

def check_declared_sizes(inputs: list[TensorSpec], outputs: list[TensorSpec], name: str) -> None:
    """Refuse, at load, a description whose smallest window or fixed output is absurdly large."""
    for kind, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            sizes = {a: sz.min for a, sz in spec.sizes.items() if isinstance(sz, AxisSizes)}
            if kind == "output":  # only fixed output sizes are known before an image is seen
                sizes = {a: sz.min for a, sz in spec.sizes.items() if isinstance(sz, AxisSizes) and sz.step == 0}
            for a, sz in spec.sizes.items():
                if isinstance(sz, SizeRef) and abs(sz.offset) > MAX_WINDOW_ELEMENTS:
                    raise LimitExceededError(
                        f"model {name!r}: {kind} '{spec.id}' declares an offset of {sz.offset:,} on axis '{a}', "
                        f"beyond the limit of {MAX_WINDOW_ELEMENTS:,}: the description is broken or hostile; "
                        "fix its axis sizes")
            elements = math.prod(sizes.values())
            if elements > MAX_WINDOW_ELEMENTS:
                shown = ", ".join(f"{a}={n}" for a, n in sizes.items())
                raise LimitExceededError(
                    f"model {name!r}: {kind} '{spec.id}' declares a size of at least {elements:,} values "
                    f"({shown}), more than the limit of {MAX_WINDOW_ELEMENTS:,} per window: the description "
                    "is broken or hostile; fix its axis sizes")

def check_dtype(array: np.ndarray, spec: TensorSpec) -> None:
    kind = array.dtype.kind
    if kind not in "biuf":
        raise InputError(f"input '{spec.id}' got data of type {array.dtype}, which is not numeric: "
                         f"pass a numeric array ({spec.dtype} expected by the model)")
    if kind == "f" and spec.dtype.startswith(("int", "uint")) and not spec.preprocessing:
        raise InputError(f"input '{spec.id}' expects {spec.dtype} data and got {array.dtype}: converting would "
                         "lose the fractions; convert the image yourself if that is intended")

def is_xarray(x: Any) -> bool:
    return hasattr(x, "dims") and hasattr(x, "values") and not isinstance(x, Mapping)
