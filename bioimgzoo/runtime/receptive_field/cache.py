"""The cache of measured receptive fields: keyed by everything that decides the network, checked when read."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...descr.sizes import AxisSizes
from ...descr.tensors import TensorSpec
from .measure import FieldMeasure, Runner, measure_receptive_field, radius_of

log = logging.getLogger("bioimgzoo")

__all__ = ["cache_key", "read_cached", "write_cached", "cached_measure", "weights_sha256", "describe", "engine_shapes"]

#: 3: windows of a fixed size step by a divisor of their alignment (plan_axis), so verdicts of the shift check
#: taken on misaligned windows (a doubled radius, "not equivariant") are measured anew
_CACHE_VERSION = 3

# ----------------------------------------------------------------------------- cache
_MEMORY: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _cache_file(key: str) -> Path:
    from ...config import cache_dir

    return cache_dir() / "receptive-fields" / f"{key}.json"


def weights_sha256(package: Any, weights_format: str, *, fetch: bool = True) -> str | None:
    """The sha256 of the weights a model runs: declared, else (``fetch``) of the fetched file."""
    entry = getattr(package.descr.weights, weights_format, None)
    if entry is None:
        return None
    if getattr(entry, "sha256", None):
        return str(entry.sha256)
    if not fetch:
        return None
    from ..._files import sha256_file

    try:
        return sha256_file(package.file(entry))
    except Exception:  # not fetchable now: measure, but do not cache
        return None


def _architecture(package: Any, weights_format: str) -> dict | None:
    """What builds the network besides the weights: the architecture, its source's sha256 and its kwargs."""
    arch = getattr(getattr(package.descr.weights, weights_format, None), "architecture", None)
    if arch is None:
        return None
    kwargs = json.loads(json.dumps(dict(getattr(arch, "kwargs", None) or {}), sort_keys=True, default=str))
    out = {"callable": str(getattr(arch, "callable", "")), "kwargs": kwargs}
    if hasattr(arch, "import_from"):
        out["import_from"] = str(arch.import_from)
    else:
        out["source"] = str(getattr(arch, "source", ""))
        out["sha256"] = str(getattr(arch, "sha256", "") or "")
    return out


def _declared(primary: TensorSpec) -> dict:
    return {a.id: ([sz.min, sz.step] if isinstance(sz := primary.sizes.get(a.id), AxisSizes) else str(sz))
            for a in primary.axes}


def cache_key(package: Any, weights_format: str, primary: TensorSpec, axes: Sequence[str], *,
              fetch: bool = True) -> tuple[str, dict] | None:
    """``(sha256, what it hashes)``: everything that decides the measured network; None when not cacheable.

    The weights (sha256 and format), the architecture that builds them (callable, module or source file with
    its sha256, kwargs), the input and its declared sizes, the tiled axes.
    """
    weights = weights_sha256(package, weights_format, fetch=fetch)
    if not weights:
        return None
    content = {"version": _CACHE_VERSION, "weights": weights, "format": weights_format,
               "architecture": _architecture(package, weights_format), "input": primary.id,
               "sizes": _declared(primary), "axes": sorted(axes)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(), content


def engine_shapes(engine: Any) -> list | None:
    """The input shapes an engine declares (ONNX: fixed or named dimensions), part of what a measure holds for."""
    session = getattr(engine, "session", None)
    try:
        return [[d if isinstance(d, int) else str(d) for d in i.shape] for i in session.get_inputs()] \
            if session is not None else None
    except Exception:  # noqa: BLE001 -- an engine without that API: nothing to compare
        return None


def _mac(entry: Mapping) -> str:
    from ..._files import user_secret

    body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True).encode()
    return hmac.new(user_secret(), body, "sha256").hexdigest()


def read_cached(key: tuple[str, dict] | None, primary: TensorSpec, axes: Sequence[str], *,
                engine_shapes: list | None = None) -> FieldMeasure | None:
    """The measure stored under ``key`` (:func:`cache_key`), when every check of it holds; else None.

    Checked: the file's digest (this user's secret), the key it was written
    under, the engine's input shapes (when given), and that its values are
    ones a network could have (:meth:`FieldMeasure.plausible`).
    """
    if key is None:
        return None
    path = _cache_file(key[0])
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or data.get("key") != key[1]:
            return None
        if not hmac.compare_digest(str(data.get("mac", "")), _mac(data)):
            log.warning("the receptive-field cache entry %s was changed after it was written: measured again", path)
            return None
        entry = data["inputs"][primary.id]
        if engine_shapes is not None and entry.get("engine") not in (None, engine_shapes):
            return None
        measure = FieldMeasure.from_json(entry["measure"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent or damaged: measure again
    declared = {a: primary.sizes[a] for a in axes if isinstance(primary.sizes.get(a), AxisSizes)}
    if measure.input_id != primary.id or set(declared) != set(axes) or not measure.plausible(declared, axes):
        log.warning("the receptive-field cache entry %s holds values no network has on these windows: measured "
                    "again", path)
        return None
    return measure


def write_cached(key: tuple[str, dict], measure: FieldMeasure, engine_shapes: list | None) -> None:
    from ..._files import atomic_path

    path = _cache_file(key[0])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": _CACHE_VERSION, "key": key[1],
                "inputs": {measure.input_id: {"measure": measure.to_json(), "engine": engine_shapes}}}
        data["mac"] = _mac(data)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1), encoding="utf-8")
    except OSError as e:  # a read-only cache must not stop a prediction
        log.warning("cannot store the measured receptive field in %s (%s): it will be measured again", path, e)


def _reaches_no_farther(run: Callable, primary: TensorSpec, outputs: Sequence[TensorSpec],
                        links: Mapping[str, Mapping], measure: FieldMeasure) -> bool:
    """One perturbation, on a window the entry was measured on: the change stays within the stored radius."""
    axes = list(measure.radius)
    if all(r < 0 for r in measure.radius.values()):
        return True
    runner = Runner(run, primary, outputs, links, axes)
    try:
        found, touched = radius_of(runner, dict(measure.measured_on or {}), 1)
    except Exception as e:  # noqa: BLE001 -- a window it was measured on fails now: not this network
        log.debug("re-checking the receptive field failed: %s", e)
        return False
    return all(measure.radius[a] < 0 or (found[a] <= measure.radius[a] and a not in touched) for a in axes)


def cached_measure(model: Any, axes: Sequence[str], links: Mapping[str, Mapping],
                   outputs: Sequence[TensorSpec]) -> FieldMeasure:
    """The measure for ``model``'s first input: from memory, the disk cache (checked), or measured now (and stored)."""
    primary = model.inputs[0]
    memo = _MEMORY.setdefault(model, {})
    mkey = (model.engine, primary.id)
    if mkey in memo:
        return memo[mkey]
    key = cache_key(model.package, model.weights_format, primary, axes)
    shapes = engine_shapes(model.engine)
    measure = read_cached(key, primary, axes, engine_shapes=shapes)
    if measure is not None and not _reaches_no_farther(model.engine.run, primary, outputs, links, measure):
        log.warning("the cached receptive field of %r (%s) is smaller than the network's: measured again", model.name,
                    describe(measure))
        measure = None
    if measure is None:
        t = time.perf_counter()
        measure = measure_receptive_field(model.engine.run, primary, outputs, links, axes)
        log.info("measured the receptive field of %r (%s weights) in %.1f s: %s", model.name,
                 model.weights_format, time.perf_counter() - t, describe(measure))
        if key is not None:
            write_cached(key, measure, shapes)
    memo[mkey] = measure
    return measure


def describe(m: FieldMeasure) -> str:
    parts = []
    for a, r in m.radius.items():
        acc = m.accepted.get(a)
        parts.append(f"{a}: {'global' if r < 0 else f'{r} px'}"
                     + (f", windows {acc[0]}+k*{acc[1]}" if acc and acc[1] else ", declared windows only"))
    text = "; ".join(parts)
    return text if m.equivariant else f"{text}; not translation-equivariant: {m.reason}"


