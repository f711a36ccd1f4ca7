"""The network's real receptive field, measured by perturbation, and the tile plan it calls for.

A package declares a halo (input pixels whose output lacks context at a
window edge).  Exports with fixed window sizes often declare none (CAREamics:
fixed 64x64, halo 0), so tiles by the declared sizes leave seams.  When the
declared halo on every tiled axis is 0 and a tiled axis has a fixed size (a
package that declares a halo, or windows of ``min + k * step``, made a
statement about its network, and is trusted), :func:`fitted_plan`:

1. checks whether the network accepts larger windows than declared
   (fully-convolutional networks do): sizes ``fixed + k * step`` on which it
   runs and its output follows the input;
2. measures the receptive field as the exporter does
   (:func:`perturbation_change`: one input pixel changed by a large amount,
   the extent of the output change measured, at a few positions);
3. overlaps tiles by it, and uses the larger windows when one of them
   computes a trusted pixel faster than a declared-size window.

The result is cached by the weights' sha256 in the bioimgzoo cache
(``receptive-fields/``), so each package is measured once per machine.
``strict_sizes=True`` skips all of this and keeps to the declared sizes.
"""

from __future__ import annotations

import json
import logging
import math
import time
import weakref
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..descr.sizes import AxisSizes, valid_size_at_least
from ..descr.tensors import TensorSpec

log = logging.getLogger("bioimgzoo")

__all__ = ["perturbation_change", "FieldMeasure", "measure_receptive_field", "cached_measure", "fitted_plan"]

_CACHE_VERSION = 1
#: window edge the receptive field is first measured on, and the largest tried, by number of tiled axes
_START = {1: 256, 2: 128, 3: 48}
_CAP = {1: 4096, 2: 512, 3: 128}
#: size steps tried when checking that a fixed-size network accepts larger windows
_STEPS = (8, 16, 32, 64)


def perturbation_change(run: Callable[[Sequence[np.ndarray]], list[np.ndarray]], inputs: Sequence[np.ndarray],
                        indices: Sequence[tuple | None], ref: np.ndarray, *, out_index: int,
                        sign: float = 1.0) -> np.ndarray:
    """Where output ``out_index`` changes when each input is perturbed at ``indices[i]``.

    Parameters
    ----------
    run : callable
        The network: a list of arrays in, a list of arrays out.
    inputs : sequence of ndarray
        The unperturbed inputs (random normal values serve).
    indices : sequence of tuple or None
        Per input, the index (ints and slices) of the pixel to perturb;
        None leaves that input as it is.
    ref : ndarray
        ``run(inputs)[out_index]`` as float64.
    sign : float
        Direction of the perturbation (+1 or -1).

    Returns
    -------
    ndarray of bool
        The output elements that changed by more than float32 rounding.
    """
    # any change above float32 rounding noise counts: far contributions are small but real, and a
    # halo cut at a relative threshold would let tiles differ from whole-image prediction
    noise_floor = 1e-9 * max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-12)
    perturbed = []
    for arr, index in zip(inputs, indices):
        arr = arr.copy()
        if index is not None:
            arr[index] += sign * (10.0 + 10.0 * float(np.abs(arr).max()))
        perturbed.append(arr)
    diff = np.abs(run(perturbed)[out_index].astype(np.float64) - ref)
    return diff > max(noise_floor, 1e-9 * float(diff.max()) if diff.size else 0.0)


@dataclass(frozen=True)
class FieldMeasure:
    """What measuring found for one input: receptive-field radius and accepted sizes per tiled axis.

    ``radius[a]``: input pixels of context a window edge needs (-1: the
    change reached the border of the largest window tried: global context).
    ``accepted[a]``: ``(min, step)`` window sizes the network takes, or
    None when it takes only the declared ones.  ``faster``: the accepted
    larger windows compute a trusted pixel faster than declared-size ones.
    """

    input_id: str
    radius: Mapping[str, int]
    accepted: Mapping[str, tuple[int, int] | None]
    faster: bool = False
    measured_on: Mapping[str, int] | None = None

    def to_json(self) -> dict:
        return {"input_id": self.input_id, "radius": dict(self.radius), "accepted": dict(self.accepted),
                "faster": self.faster, "measured_on": dict(self.measured_on or {})}

    @classmethod
    def from_json(cls, data: dict) -> "FieldMeasure":
        acc = {str(k): (tuple(int(x) for x in v) if v else None) for k, v in data["accepted"].items()}
        return cls(str(data["input_id"]), {str(k): int(v) for k, v in data["radius"].items()}, acc,
                   bool(data.get("faster")), {str(k): int(v) for k, v in (data.get("measured_on") or {}).items()})


class _Runner:
    """Runs the network on random windows of given sizes along the tiled axes of the (single) input."""

    def __init__(self, run: Callable, primary: TensorSpec, outputs: Sequence[TensorSpec],
                 links: Mapping[str, Mapping[str, tuple[str, Fraction, int]]], axes: Sequence[str]):
        self.run, self.primary, self.outputs, self.links, self.axes = run, primary, outputs, links, list(axes)
        self.rng = np.random.default_rng(0)

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        shape = []
        for a in self.primary.axes:
            sz = self.primary.sizes.get(a.id)
            if a.id in sizes:
                shape.append(int(sizes[a.id]))
            elif a.kind == "batch":
                shape.append(1)
            elif isinstance(sz, AxisSizes):
                shape.append(sz.min)
            else:
                shape.append(1)
        return tuple(shape)

    def inputs(self, sizes: Mapping[str, int]) -> list[np.ndarray]:
        dtype = np.float64 if self.primary.dtype == "float64" else np.float32
        return [self.rng.standard_normal(self.shape(sizes)).astype(dtype)]

    def follows(self, sizes: Mapping[str, int], outs: Sequence[np.ndarray]) -> bool:
        """The outputs have the sizes the links say for these window sizes."""
        for spec, o in zip(self.outputs, outs):
            for d, a in enumerate(spec.axis_ids):
                link = self.links[spec.id].get(a)
                if link is not None and link[0] in sizes and d < o.ndim:
                    ia, f, off = link
                    if o.shape[d] != int(sizes[ia] * f) + off:
                        return False
        return True

    def works(self, sizes: Mapping[str, int]) -> bool:
        try:
            return self.follows(sizes, self.run(self.inputs(sizes)))
        except Exception:  # any failure means: not a size the network takes
            return False

    def timed(self, sizes: Mapping[str, int]) -> float:
        x = self.inputs(sizes)
        self.run(x)  # warm up (first calls allocate)
        t = time.perf_counter()
        self.run(x)
        return time.perf_counter() - t


def _accepted_sizes(runner: _Runner, declared: Mapping[str, AxisSizes]) -> dict[str, tuple[int, int] | None]:
    """Per tiled axis, (min, step) sizes the network takes beyond the declared fixed size (None: none)."""
    fixed = [a for a in runner.axes if declared[a].step == 0]
    accepted: dict[str, tuple[int, int] | None] = {a: (declared[a].min, declared[a].step) for a in runner.axes
                                                     if declared[a].step}
    if not fixed:
        return accepted
    base = {a: declared[a].min for a in runner.axes}
    cap = _CAP.get(len(runner.axes), 64)
    for step in _STEPS:
        if any(base[a] + 3 * step > max(cap, 2 * base[a]) for a in fixed):
            break  # windows this large cost more to try than they can save (3D)
        if all(runner.works({**base, **{a: base[a] + k * step for a in fixed}}) for k in (1, 2, 3)):
            accepted.update({a: (base[a], step) for a in fixed})
            return accepted
    accepted.update({a: None for a in fixed})
    return accepted


def _radius(runner: _Runner, sizes: Mapping[str, int], positions: int) -> tuple[dict[str, int], set[str]]:
    """Receptive-field radius in input pixels per tiled axis on windows of ``sizes``, and the axes where
    the change reached the window border."""
    x = runner.inputs(sizes)
    refs = [o.astype(np.float64) for o in runner.run(x)]
    radius = {a: 0 for a in runner.axes}
    touched: set[str] = set()
    spec_axes = runner.primary.axis_ids
    for k in range(positions):
        centers = {a: min(sizes[a] // 2 + k, sizes[a] - 1) for a in runner.axes}
        index = tuple(centers[a] if a in centers else slice(None) for a in spec_axes)
        for sign in (1.0, -1.0):
            for oi, spec in enumerate(runner.outputs):
                changed = perturbation_change(runner.run, x, [index], refs[oi], out_index=oi, sign=sign)
                if not changed.any():
                    continue
                for d, a in enumerate(spec.axis_ids):
                    link = runner.links[spec.id].get(a)
                    if link is None or link[0] not in centers:
                        continue
                    ia, f, off = link
                    hit = np.nonzero(changed.any(axis=tuple(i for i in range(changed.ndim) if i != d)))[0]
                    # an output pixel j sits over input (j - offset/2) / scale (offsets crop both sides)
                    c_out = float(f) * (centers[ia] + 0.5) + off / 2 - 0.5
                    r_out = max(abs(float(hit.min()) - c_out), abs(float(hit.max()) - c_out))
                    radius[ia] = max(radius[ia], int(math.ceil(r_out / float(f) - 1e-9)))
                    if hit.min() == 0 or hit.max() == changed.shape[d] - 1:
                        touched.add(ia)
    return radius, touched


def measure_receptive_field(run: Callable, primary: TensorSpec, outputs: Sequence[TensorSpec],
                            links: Mapping[str, Mapping[str, tuple[str, Fraction, int]]],
                            axes: Sequence[str]) -> FieldMeasure:
    """Measure, on the network ``run``, the receptive field along ``axes`` of input ``primary``."""
    declared = {a: primary.sizes[a] for a in axes}
    runner = _Runner(run, primary, outputs, links, axes)
    accepted = _accepted_sizes(runner, declared)
    n = len(axes)
    steps = [s for a in axes if (s := (accepted[a] or (0, 0))[1])]
    positions = max(1, min(max(steps or [1]), 4))
    target = _START.get(n, 32)
    while True:
        sizes = {a: (valid_size_at_least(AxisSizes(*accepted[a]), max(target, declared[a].min))
                     if accepted[a] else declared[a].min) for a in axes}
        radius, touched = _radius(runner, sizes, positions)
        growable = [a for a in touched if accepted[a]]
        if not touched or not growable or target * 2 > _CAP.get(n, 64):
            for a in touched:
                radius[a] = -1
            break
        target *= 2
    faster = False
    if any(accepted[a] and declared[a].step == 0 for a in axes):
        # one trusted pixel per unit time, on declared-size windows and on the larger measuring ones
        def rate(sz: Mapping[str, int]) -> float:
            trusted = math.prod(max(1, sz[a] - 2 * max(radius[a], 0)) if sz[a] > 2 * max(radius[a], 0) else 0
                                for a in axes)
            return trusted / max(runner.timed(sz), 1e-9)

        small = {a: declared[a].min for a in axes}
        faster = rate(sizes) > rate(small)
    return FieldMeasure(primary.id, radius, accepted, faster, dict(sizes))


# ----------------------------------------------------------------------------- cache
_MEMORY: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _cache_file(sha256: str) -> Path:
    from ..config import cache_dir

    return cache_dir() / "receptive-fields" / f"{sha256}.json"


def weights_sha256(package: Any, weights_format: str) -> str | None:
    """The sha256 of the weights a model runs: declared, else of the fetched file."""
    entry = getattr(package.descr.weights, weights_format, None)
    if entry is None:
        return None
    if getattr(entry, "sha256", None):
        return str(entry.sha256)
    from .._files import sha256_file

    try:
        return sha256_file(package.file(entry))
    except Exception:  # not fetchable now: measure, but do not cache
        return None


def read_cached(sha256: str | None, input_id: str) -> FieldMeasure | None:
    """A measure stored for these weights and input, or None."""
    if not sha256:
        return None
    try:
        data = json.loads(_cache_file(sha256).read_text(encoding="utf-8"))
        if data.get("version") == _CACHE_VERSION and input_id in data.get("inputs", {}):
            return FieldMeasure.from_json(data["inputs"][input_id])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: measure again
    return None


def _write_cached(sha256: str, measure: FieldMeasure) -> None:
    from .._files import atomic_path

    path = _cache_file(sha256)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": _CACHE_VERSION, "inputs": {}}
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("version") == _CACHE_VERSION:
                data = old
        except (OSError, ValueError):
            pass
        data["inputs"][measure.input_id] = measure.to_json()
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1), encoding="utf-8")
    except OSError as e:  # a read-only cache must not stop a prediction
        log.warning("cannot store the measured receptive field in %s (%s): it will be measured again", path, e)


def cached_measure(model: Any, axes: Sequence[str], links: Mapping[str, Mapping],
                   outputs: Sequence[TensorSpec]) -> FieldMeasure:
    """The measure for ``model``'s first input: from memory, the disk cache, or measured now (and stored)."""
    primary = model.inputs[0]
    memo = _MEMORY.setdefault(model, {})
    key = (model.engine, primary.id)
    if key in memo:
        return memo[key]
    sha = weights_sha256(model.package, model.weights_format)
    measure = read_cached(sha, primary.id)
    if measure is None or set(measure.radius) != set(axes):
        t = time.perf_counter()
        measure = measure_receptive_field(model.engine.run, primary, outputs, links, axes)
        log.info("measured the receptive field of %r (%s weights) in %.1f s: %s", model.name,
                 model.weights_format, time.perf_counter() - t, _describe(measure))
        if sha:
            _write_cached(sha, measure)
    memo[key] = measure
    return measure


def _describe(m: FieldMeasure) -> str:
    parts = []
    for a, r in m.radius.items():
        acc = m.accepted.get(a)
        parts.append(f"{a}: {'global' if r < 0 else f'{r} px'}"
                     + (f", windows {acc[0]}+k*{acc[1]}" if acc and acc[1] else ", declared windows only"))
    return "; ".join(parts)


# ----------------------------------------------------------------------------- plan
def fitted_plan(model: Any, shapes: Mapping[str, tuple[int, ...]], *, tile: Any, plan: Any,
                outputs: Sequence[TensorSpec], plan_sample: Callable) -> Any:
    """The plan for one sample, with tiles overlapped by the measured receptive field.

    ``plan`` is the plan by the declared sizes; it is returned unchanged
    when the sample fits one window, the package declares a halo on a
    tiled axis or no tiled axis of fixed size (trusted), or the model has
    several inputs.  ``plan`` may instead be the
    :class:`~bioimgzoo.errors.InputError` the declared sizes gave for the
    caller's ``tile``: raised again unless the network takes that size.
    """
    from .plan import _output_links

    failed = isinstance(plan, Exception)
    if len(model.inputs) != 1 or (not failed and not plan.tiled):
        if failed:
            raise plan
        return plan
    primary = model.inputs[0]
    links = {out.id: _output_links(primary, out) for out in outputs}
    tileable = [a.id for a in primary.axes if a.kind in ("space", "time") and isinstance(primary.sizes.get(a.id),
                                                                                         AxisSizes)]
    tiled = tileable if failed else plan.tiled
    if not any(primary.sizes[a].step == 0 for a in tiled):
        # sizes min + k*step: the author chose the windows and the halo together; tiles keep to them
        if failed:
            raise plan
        return plan
    if any(out.halo.get(oa, 0) for out in outputs for oa, (ia, _f, _o) in links[out.id].items() if ia in tiled):
        if failed:
            raise plan
        return plan  # a declared halo: the package's word on its network
    measure = cached_measure(model, tileable, links, outputs)
    if failed and not all(measure.accepted.get(a) and AxisSizes(*measure.accepted[a]).is_valid(int(w))
                          for a in tileable
                          if (w := (tile.get(a) if isinstance(tile, Mapping) else tile)) is not None):
        raise plan
    radius = {a: r for a, r in measure.radius.items() if a in tileable}
    sizes = dict(primary.sizes)
    if (tile is None and measure.faster) or failed:
        sizes.update({a: AxisSizes(*acc) for a, acc in measure.accepted.items() if acc and a in sizes})
    wider = replace(primary, sizes=sizes)
    halo = {}
    for a in tileable:
        r = radius.get(a, 0)
        if r < 0:  # global context: no overlap makes tiles exact; overlap as far as windows allow
            r = 1 << 30
        sz = sizes[a]
        longest = (valid_size_at_least(sz, shapes[primary.id][primary.axis_ids.index(a)]) if sz.step
                   else sz.min)
        if tile is not None:
            want = tile.get(a) if isinstance(tile, Mapping) else tile
            longest = int(want) if want is not None else longest
        # a halo near half the window leaves a stride of a few pixels: beyond that, overlap by a quarter
        halo[a] = r if 2 * r < longest else longest // 4
        if halo[a] < r:
            log.warning("the receptive field of %r on axis '%s' (%s) is wider than its windows allow: tiles "
                        "overlap by %d pixels and seams may remain; pass a larger tile= if the network takes it",
                        model.name, a, "global" if radius.get(a, 0) < 0 else f"{r} px", halo[a])
    new = plan_sample([wider], outputs, shapes, tile=tile, halo=halo)
    window = "x".join(str(new.window_shapes[primary.id][primary.axis_ids.index(a)]) for a in tileable)
    if new.tiled:
        log.info("%r declares no halo: tiles of %s overlap by the measured receptive field (%s) "
                 "(strict_sizes=True keeps to the declared sizes and halo)", model.name, window,
                 ", ".join(f"{a}={h}" for a, h in halo.items()))
    else:
        log.info("%r declares no halo and %s windows: the network takes larger ones, so the image runs as one "
                 "%s window (strict_sizes=True keeps to the declared sizes)", model.name,
                 "x".join(str(primary.sizes[a].min) for a in tileable), window)
    return new


def tiling_note(package: Any) -> str | None:
    """One line for ``info``: how tiles of this package overlap when it declares no halo (None: it declares one,
    or nothing tiles).  Reads the cache only: nothing is downloaded or run."""
    from ..descr.tensors import tensor_specs
    from ..descr.weights import runnable_formats
    from .plan import _output_links

    ins, outs = tensor_specs(package.descr)
    if len(ins) != 1:
        return None
    primary = ins[0]
    tileable = [a.id for a in primary.axes if a.kind in ("space", "time") and isinstance(primary.sizes.get(a.id),
                                                                                         AxisSizes)]
    links = {out.id: _output_links(primary, out) for out in outs}
    if not tileable or not any(links.values()):
        return None
    if any(out.halo.get(oa, 0) for out in outs for oa in links[out.id]) \
            or not any(primary.sizes[a].step == 0 for a in tileable):
        return None
    found = None
    for fmt in runnable_formats(package.descr):
        entry = getattr(package.descr.weights, fmt, None)
        if entry is not None and getattr(entry, "sha256", None):
            found = read_cached(str(entry.sha256), primary.id)
            if found is not None:
                break
    how = (f"measured receptive field {_describe(found)}" if found is not None
           else "the network's receptive field, measured once at the first tiled prediction and cached")
    return (f"the package declares no halo: tiles of larger images overlap by {how} "
            "(predict --strict-sizes keeps to the declared sizes and halo)")
