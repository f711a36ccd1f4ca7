"""Measuring a network's receptive field by perturbation, and checking tiles reproduce the whole image."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...descr.sizes import AxisSizes, valid_size_at_least
from ...descr.tensors import TensorSpec

log = logging.getLogger("bioimgzoo")

__all__ = ["perturbation_change", "FieldMeasure", "measure_receptive_field", "translation_check", "Runner",
           "radius_of", "GLOBAL_REASON", "TOLERANCE"]

#: relative difference (of the output's range) above which tiles do not reproduce the whole-image prediction;
#: float32 arithmetic on other window sizes stays orders of magnitude below
TOLERANCE = 1e-3
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


class Runner:
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


def _accepted_sizes(runner: Runner, declared: Mapping[str, AxisSizes]) -> dict[str, tuple[int, int] | None]:
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


def radius_of(runner: Runner, sizes: Mapping[str, int], positions: int) -> tuple[dict[str, int], set[str]]:
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
    runner = Runner(run, primary, outputs, links, axes)
    accepted = _accepted_sizes(runner, declared)
    n = len(axes)
    steps = [s for a in axes if (s := (accepted[a] or (0, 0))[1])]
    positions = max(1, min(max(steps or [1]), 4))
    target = _START.get(n, 32)
    while True:
        sizes = {a: (valid_size_at_least(AxisSizes(*accepted[a]), max(target, declared[a].min))
                     if accepted[a] else declared[a].min) for a in axes}
        radius, touched = radius_of(runner, sizes, positions)
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


def translation_check(runner: "Runner", declared: Mapping[str, AxisSizes], m: FieldMeasure) -> FieldMeasure:
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
    if err <= TOLERANCE:
        return m
    wider = {a: 2 * r + 1 for a, r in m.radius.items()}
    err2 = check(wider)
    if err2 is not None and err2 <= TOLERANCE:
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


def _tiled_vs_whole(runner: "Runner", declared: Mapping[str, AxisSizes], m: FieldMeasure,
                    radius: Mapping[str, int]) -> float | None:
    """Relative difference of a tiled and a whole prediction of a random image of a few windows (None: too big)."""
    from ..plan import plan_sample

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


def _shifted_windows(runner: "Runner", declared: Mapping[str, AxisSizes], m: FieldMeasure,
                     radius: Mapping[str, int]) -> float | None:
    """Relative difference of two windows of one image shifted along each tiled axis in turn (None: no overlap)."""
    from ..plan import grid_period, plan_axis, pow2_divisor

    base = {a: (m.measured_on or {}).get(a) or declared[a].min for a in radius}
    worst: float | None = None
    for a in radius:
        w, r = base[a], radius[a]
        if 2 * r >= w:  # no window of this size keeps a pixel with full context: no verdict along this axis
            continue
        step = (m.accepted[a] or (0, 0))[1]
        wins = plan_axis(3 * w, w, halo=r, align=step or grid_period(w, r, pow2_divisor(w, 64)))  # as tiles step
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




