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
3. checks, once, that tiles overlapped by it reproduce the network's
   whole-image prediction (:func:`translation_check`); a network whose
   output depends on the whole window (global pooling, a normalisation over
   the window) or on where a pixel sits in it (a positional term, coordinate
   channels) is *not translation-equivariant*, and says so: it then runs as
   one window when the image fits one, and tiling it is refused with the
   reason otherwise (``strict_sizes=True`` tiles by the declared sizes,
   seams and all);
4. overlaps tiles by it, and uses the larger windows when one of them
   computes a trusted pixel faster than a declared-size window.

The result is cached in the bioimgzoo cache (``receptive-fields/``), so each
package is measured once per machine, under a key of everything that decides
the network (:func:`cache_key`: the weights' sha256 and format, the
architecture with its kwargs, the input's declared sizes).  An entry is
trusted only as far as it can be checked when read (:func:`read_cached`):
its digest (keyed by this user's secret), the key it was written under, the
engine's input shapes, radii within what a network can have on the windows
it was measured on, and one perturbation showing the network reaches no
farther than the stored radius; anything else is a miss, measured again.
``strict_sizes=True`` skips all of this and keeps to the declared sizes.
"""

from __future__ import annotations

import hashlib
import hmac
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

__all__ = ["perturbation_change", "FieldMeasure", "measure_receptive_field", "cached_measure", "fitted_plan",
           "translation_check", "cache_key", "read_cached"]

_CACHE_VERSION = 2
#: relative difference (of the output's range) above which tiles do not reproduce the whole-image prediction;
#: float32 arithmetic on other window sizes stays orders of magnitude below
_TOLERANCE = 1e-3
#: why a network whose perturbation reaches the window border cannot be tiled exactly
GLOBAL_REASON = ("its output at a pixel depends on the whole window (global pooling, or a normalisation over the "
                 "window)")
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
    ``equivariant``: tiles overlapped by ``radius`` reproduce the whole-image
    prediction (:func:`translation_check`); ``reason`` says why not.
    """

    input_id: str
    radius: Mapping[str, int]
    accepted: Mapping[str, tuple[int, int] | None]
    faster: bool = False
    measured_on: Mapping[str, int] | None = None
    equivariant: bool = True
    reason: str = ""

    def to_json(self) -> dict:
        return {"input_id": self.input_id, "radius": dict(self.radius), "accepted": dict(self.accepted),
                "faster": self.faster, "measured_on": dict(self.measured_on or {}), "equivariant": self.equivariant,
                "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict) -> "FieldMeasure":
        """Read back strictly: any value of another type or shape is a ValueError (a miss, never a guess)."""

        def integer(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{v!r} is not an integer")
            return v

        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        radius, accepted, on = data["radius"], data["accepted"], data.get("measured_on") or {}
        if not (isinstance(radius, dict) and isinstance(accepted, dict) and isinstance(on, dict)):
            raise ValueError("radius, accepted and measured_on must be mappings")
        acc = {}
        for k, v in accepted.items():
            if v is not None and not (isinstance(v, list) and len(v) == 2):
                raise ValueError(f"accepted[{k!r}] is not (min, step)")
            acc[str(k)] = None if v is None else (integer(v[0]), integer(v[1]))
        reason = data.get("reason", "")
        if not isinstance(data.get("equivariant", True), bool) or not isinstance(reason, str) or len(reason) > 1000:
            raise ValueError("equivariant/reason of the wrong type")
        return cls(str(data["input_id"]), {str(k): integer(v) for k, v in radius.items()}, acc,
                   bool(data.get("faster")), {str(k): integer(v) for k, v in on.items()},
                   data.get("equivariant", True), reason)

    def plausible(self, declared: Mapping[str, AxisSizes], axes: Sequence[str]) -> bool:
        """Whether a network could have given this on ``declared`` sizes (a cache entry read back)."""
        if set(self.radius) != set(axes) or set(self.accepted) != set(axes) or set(self.measured_on or {}) != set(axes):
            return False
        for a in axes:
            d, acc, on, r = declared[a], self.accepted[a], self.measured_on[a], self.radius[a]
            if acc is not None:
                if acc[0] != d.min or acc[1] < 1 or (d.step and acc != (d.min, d.step)):
                    return False
                if not AxisSizes(*acc).is_valid(on):
                    return False
            elif on != d.min or d.step:
                return False
            # the perturbation can show no more than the window it ran on; -1 says it reached the border
            if not -1 <= r <= on or (r < 0 and self.equivariant):
                return False
        return True


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
    return translation_check(runner, declared, FieldMeasure(primary.id, radius, accepted, faster, dict(sizes)))


def translation_check(runner: "_Runner", declared: Mapping[str, AxisSizes], m: FieldMeasure) -> FieldMeasure:
    """``m`` checked against the network: do tiles overlapped by its radius reproduce a whole-image prediction?

    * global context (a radius of -1): not equivariant, :data:`GLOBAL_REASON`;
    * the network takes larger windows on every tiled axis: an image of a few
      windows is predicted whole and tiled by the plan the runtime would use
      (:func:`~.plan.plan_sample`, the measured halo); they must agree;
    * else (windows of one size, or no whole-image plan): two windows of one
      random image, shifted by a divisor of the stride the plan would use,
      must agree where both have full context.

    A disagreement is first taken for a radius measured too small (far
    contributions below the perturbation's threshold): checked again with
    twice the radius, kept if that agrees; otherwise the network is not
    translation-equivariant (a positional term, coordinate channels, a
    normalisation over the window) and ``reason`` says so, with the size of
    the difference.
    """
    axes = list(m.radius)
    if any(r < 0 for r in m.radius.values()):
        return replace(m, equivariant=False, reason=GLOBAL_REASON)
    def check(radius: Mapping[str, int]) -> float | None:
        err = _tiled_vs_whole(runner, declared, m, radius) if all(m.accepted[a] for a in axes) else None
        return _shifted_windows(runner, declared, m, radius) if err is None else err

    err = check(dict(m.radius))
    if err is None:
        log.info("the receptive field %s could not be checked against a whole-image prediction", dict(m.radius))
        return m
    if err <= _TOLERANCE:
        return m
    wider = {a: 2 * r + 1 for a, r in m.radius.items()}
    err2 = check(wider)
    if err2 is not None and err2 <= _TOLERANCE:
        log.info("tiles overlapped by the measured receptive field (%s) did not reproduce the whole image; "
                 "with %s they do: keeping that", m.radius, wider)
        return replace(m, radius=wider)
    err = max(err, err2 or 0.0)
    return replace(m, equivariant=False,
                   reason=(f"its output depends on where a pixel sits in the window (a positional term, coordinate "
                           f"channels, or a normalisation over the window): tiles differ from the whole-image "
                           f"prediction by {err:.2g} of its range"))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-12)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nan_to_num(diff, nan=np.inf).max() if diff.size else 0.0) / scale


def _tiled_vs_whole(runner: "_Runner", declared: Mapping[str, AxisSizes], m: FieldMeasure,
                    radius: Mapping[str, int]) -> float | None:
    """Relative difference of a tiled and a whole prediction of a random image of a few windows (None: too big)."""
    from .plan import plan_sample

    sizes = {a: AxisSizes(*m.accepted[a]) for a in radius}
    window = {a: valid_size_at_least(sizes[a], max(sizes[a].min, 4 * radius[a] + 1 + sizes[a].step)) for a in radius}
    length = {a: valid_size_at_least(sizes[a], 2 * window[a] + sizes[a].step) for a in radius}
    budget = 16 * math.prod((m.measured_on or {}).get(a, window[a]) for a in radius)
    if math.prod(length.values()) > max(budget, 1 << 20):
        log.info("the tiling check of the receptive field %s would need a %s image: skipped", dict(radius),
                 "x".join(map(str, length.values())))
        return None
    x = runner.inputs(length)[0]
    try:
        whole = runner.run([x])
        wider = replace(runner.primary, sizes={**runner.primary.sizes, **sizes})
        plan = plan_sample([wider], list(runner.outputs), {wider.id: x.shape}, tile=window, halo=dict(radius))
        tiled = {o.id: np.zeros(plan.out_shapes[o.id], np.float64) for o in runner.outputs}
        for t in plan.tiles:
            read = t.reads[wider.id]
            piece = x[read.region]
            if read.pad is not None:
                piece = np.pad(piece, read.pad, mode="reflect")
            for spec, arr in zip(runner.outputs, runner.run([piece])):
                write = t.writes[spec.id]
                tiled[spec.id][write.target] = arr[write.source]
    except Exception as e:  # noqa: BLE001 -- a size the network refuses after all: no verdict
        log.debug("the tiling check could not run: %s", e)
        return None
    return max(_relative(tiled[o.id], w) for o, w in zip(runner.outputs, whole) if tiled[o.id].shape == w.shape)


def _shifted_windows(runner: "_Runner", declared: Mapping[str, AxisSizes], m: FieldMeasure,
                     radius: Mapping[str, int]) -> float | None:
    """Relative difference of two windows of one image shifted along each tiled axis in turn (None: no overlap)."""
    from .plan import plan_axis, pow2_divisor

    base = {a: (m.measured_on or {}).get(a) or declared[a].min for a in radius}
    worst: float | None = None
    for a in radius:
        w, r = base[a], radius[a]
        step = (m.accepted[a] or (0, 0))[1]
        wins = plan_axis(3 * w, w, halo=r, align=step or pow2_divisor(w, 64))
        stride = wins[1].start - wins[0].start if len(wins) > 1 else w
        shift = next((d for d in range(min(stride, w - 2 * r - 1), 0, -1) if stride % d == 0), None)
        if shift is None:
            continue
        big = runner.inputs({**base, a: w + shift})[0]
        d = runner.primary.axis_ids.index(a)
        first = big[tuple(slice(0, w) if i == d else slice(None) for i in range(big.ndim))]
        second = big[tuple(slice(shift, shift + w) if i == d else slice(None) for i in range(big.ndim))]
        try:
            outs = list(zip(runner.run([np.ascontiguousarray(first)]), runner.run([np.ascontiguousarray(second)])))
        except Exception as e:  # noqa: BLE001
            log.debug("the shift check could not run: %s", e)
            return None
        for spec, (o1, o2) in zip(runner.outputs, outs):
            link = runner.links[spec.id]
            od = next((i for i, oa in enumerate(spec.axis_ids) if link.get(oa) and link[oa][0] == a), None)
            if od is None:
                continue
            f = float(link[spec.axis_ids[od]][1])
            if (shift * f) % 1:
                continue
            lo, hi, s_out = int(math.ceil((shift + r) * f)), int((w - r) * f), int(shift * f)
            if hi <= lo:
                continue
            p1 = o1[tuple(slice(lo, hi) if i == od else slice(None) for i in range(o1.ndim))]
            p2 = o2[tuple(slice(lo - s_out, hi - s_out) if i == od else slice(None) for i in range(o2.ndim))]
            err = _relative(p1, p2)
            worst = err if worst is None else max(worst, err)
    return worst




# ----------------------------------------------------------------------------- cache
_MEMORY: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _cache_file(key: str) -> Path:
    from ..config import cache_dir

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
    from .._files import sha256_file

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


def _engine_shapes(engine: Any) -> list | None:
    """The input shapes an engine declares (ONNX: fixed or named dimensions), part of what a measure holds for."""
    session = getattr(engine, "session", None)
    try:
        return [[d if isinstance(d, int) else str(d) for d in i.shape] for i in session.get_inputs()] \
            if session is not None else None
    except Exception:  # noqa: BLE001 -- an engine without that API: nothing to compare
        return None


def _mac(entry: Mapping) -> str:
    from .._files import user_secret

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


def _write_cached(key: tuple[str, dict], measure: FieldMeasure, engine_shapes: list | None) -> None:
    from .._files import atomic_path

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
    runner = _Runner(run, primary, outputs, links, axes)
    try:
        found, touched = _radius(runner, dict(measure.measured_on or {}), 1)
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
    shapes = _engine_shapes(model.engine)
    measure = read_cached(key, primary, axes, engine_shapes=shapes)
    if measure is not None and not _reaches_no_farther(model.engine.run, primary, outputs, links, measure):
        log.warning("the cached receptive field of %r (%s) is smaller than the network's: measured again", model.name,
                    _describe(measure))
        measure = None
    if measure is None:
        t = time.perf_counter()
        measure = measure_receptive_field(model.engine.run, primary, outputs, links, axes)
        log.info("measured the receptive field of %r (%s weights) in %.1f s: %s", model.name,
                 model.weights_format, time.perf_counter() - t, _describe(measure))
        if key is not None:
            _write_cached(key, measure, shapes)
    memo[mkey] = measure
    return measure


def _describe(m: FieldMeasure) -> str:
    parts = []
    for a, r in m.radius.items():
        acc = m.accepted.get(a)
        parts.append(f"{a}: {'global' if r < 0 else f'{r} px'}"
                     + (f", windows {acc[0]}+k*{acc[1]}" if acc and acc[1] else ", declared windows only"))
    text = "; ".join(parts)
    return text if m.equivariant else f"{text}; not translation-equivariant: {m.reason}"


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
    if not measure.equivariant:
        return _one_window(model, shapes, tile=tile, plan=plan, outputs=outputs, plan_sample=plan_sample,
                           measure=measure, tileable=tileable)
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


def _one_window(model: Any, shapes: Mapping[str, tuple[int, ...]], *, tile: Any, plan: Any,
                outputs: Sequence[TensorSpec], plan_sample: Callable, measure: FieldMeasure,
                tileable: Sequence[str]) -> Any:
    """A network that is not translation-equivariant: the whole image as one window, or a refusal naming why."""
    from ..errors import InputError

    primary = model.inputs[0]
    shape = shapes[primary.id]
    length = {a: shape[primary.axis_ids.index(a)] for a in tileable}
    sizes = dict(primary.sizes)
    fits = True
    for a in tileable:
        acc = measure.accepted.get(a)
        if acc is not None:
            sizes[a] = AxisSizes(*acc)
        elif primary.sizes[a].min < length[a]:
            fits = False
    asked = {a: (tile.get(a) if isinstance(tile, Mapping) else tile) for a in tileable} if tile is not None else {}
    if any(w is not None and int(w) < length[a] for a, w in asked.items()):
        fits = False
    why = (f"the network of {model.name!r} is not translation-equivariant: {measure.reason}. Tiles of it cannot "
           "equal its whole-image prediction")
    if fits:
        whole = {a: valid_size_at_least(sizes[a], length[a]) for a in tileable}
        try:
            new = plan_sample([replace(primary, sizes=sizes)], outputs, shapes, tile=whole, halo=0)
        except InputError as e:  # too large for one window (memory), or a size it refuses
            raise InputError(f"{why}, and the image does not fit in one window ({e}): crop the image, or pass "
                             "strict_sizes=True (CLI --strict-sizes) to tile by the declared sizes, accepting "
                             "seams") from e
        if not new.tiled:
            log.info("%s: the image runs as one %s window", why, "x".join(map(str, whole.values())))
            return new
    raise InputError(f"{why}: predict the image in one window (tile= at least its size, when the network takes "
                     "it), crop it, or pass strict_sizes=True (CLI --strict-sizes) to tile by the declared sizes, "
                     "accepting seams")


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
        found = read_cached(cache_key(package, fmt, primary, tileable, fetch=False), primary, tileable)
        if found is not None:
            break
    how = (f"measured receptive field {_describe(found)}" if found is not None
           else "the network's receptive field, measured once at the first tiled prediction and cached")
    return (f"the package declares no halo: tiles of larger images overlap by {how} "
            "(predict --strict-sizes keeps to the declared sizes and halo)")
