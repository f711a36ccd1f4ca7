"""Probe a PyTorch module for what a model description needs.

What the bioimage.io format wants to know about a network, and how it is
found here by running the network on small inputs (eval mode, no grad):

* valid input sizes per spatial axis as ``min + n * step`` -- by trying sizes
  1, 2, 3, ... and keeping the first regular grid (smallest step, then
  smallest min) on which the network runs and the output size is an affine
  function of the input size;
* how each output axis follows from the input: same size, scaled, offset,
  fixed, or absent (a classifier), read off that affine function;
* the halo -- the receptive field measured by perturbation: one input pixel
  is changed and the extent of the output change is measured, at a few
  positions (pooling makes it position dependent) and rounded up to a
  multiple of the output step;
* channel counts and output dtypes.

Anything found here may be overridden by the caller; :class:`ProbeResult`
records what was probed and what was given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..descr.axes import SPATIAL_LETTERS, parse_axis_letters
from ..descr.sizes import AxisSizes
from ..errors import ExportError
from ..runtime.receptive_field import perturbation_change

__all__ = ["ProbedSizes", "OutputAxisInfo", "TensorInfo", "ProbeResult", "ModuleRunner", "probe_module"]

@dataclass(frozen=True)
class ProbedSizes(AxisSizes):
    """Valid sizes of one input axis (:class:`~bioimgzoo.descr.sizes.AxisSizes`: ``min + n * step``, step 0:
    fixed) plus where they came from."""

    #: "probed", "override", "fixed-by-probe" (only one size works), "reference"
    source: str = "probed"
    #: for an input axis sized by another input's axis: (tensor id, axis letter)
    reference: tuple[str, str] | None = None

    @property
    def fixed(self) -> bool:
        return self.step == 0 and self.reference is None

    def describe(self) -> str:
        if self.reference is not None:
            return f"= {self.reference[0]}.{self.reference[1]}"
        if self.step == 0:
            return f"fixed {self.min}"
        return f"min {self.min}, step {self.step}"


@dataclass
class OutputAxisInfo:
    """How one output axis' size follows from the inputs."""

    letter: str
    #: "batch", "channel", "same", "scale", "offset", "scale+offset", "fixed"
    kind: str
    size: int | None = None  # channel count or fixed size
    reference: tuple[str, str] | None = None  # (input id, axis letter)
    scale: Fraction = Fraction(1)  # output size = scale * input size + offset
    offset: int = 0
    halo: int = 0
    #: receptive-field radius measured in output pixels (None: not measured / global)
    receptive_field: int | None = None
    source: str = "probed"

    def describe(self) -> str:
        if self.kind in ("batch",):
            return "batch"
        if self.kind == "channel":
            return f"{self.size} channel(s)"
        if self.kind == "fixed":
            return f"fixed {self.size}"
        ref = f"{self.reference[0]}.{self.reference[1]}" if self.reference else "?"
        parts = [ref if self.scale == 1 else f"{self.scale} * {ref}"]
        if self.offset:
            parts.append(f"{self.offset:+d}")
        text = " ".join(parts)
        if self.halo:
            text += f", halo {self.halo}"
        return text


@dataclass
class TensorInfo:
    id: str
    axes: str
    dtype: str
    channels: int | None
    #: inputs: letter -> ProbedSizes for t/z/y/x; outputs: letter -> OutputAxisInfo for every axis
    sizes: dict = field(default_factory=dict)
    example_shape: tuple[int, ...] = ()


@dataclass
class ProbeResult:
    """What probing (plus overrides) found; see :meth:`summary`."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A few human-readable lines: valid sizes, output relations, halo, channels."""
        lines = []
        for t in self.inputs.values():
            sizes = ", ".join(f"{a}: {s.describe()}" + ("" if s.source == "probed" else f" ({s.source})")
                              for a, s in t.sizes.items())
            lines.append(f"input  {t.id!r} axes {t.axes}, {t.channels or '-'} channel(s), {t.dtype}; {sizes}")
        for t in self.outputs.values():
            rel = ", ".join(f"{a}: {i.describe()}" + ("" if i.source == "probed" else f" ({i.source})")
                            for a, i in t.sizes.items() if i.kind not in ("batch", "channel"))
            lines.append(f"output {t.id!r} axes {t.axes}, {t.channels or '-'} channel(s), {t.dtype}"
                         + (f"; {rel}" if rel else "; no spatial axes"))
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def out_axis(i: OutputAxisInfo) -> dict:
            d = {"kind": i.kind}
            if i.size is not None:
                d["size"] = i.size
            if i.reference:
                d.update(reference=list(i.reference), scale=str(i.scale), offset=i.offset, halo=i.halo,
                         receptive_field=i.receptive_field)
            d["source"] = i.source
            return d

        return {
            "inputs": {t.id: {"axes": t.axes, "dtype": t.dtype, "channels": t.channels,
                              "sizes": {a: {"min": s.min, "step": s.step, "source": s.source,
                                            **({"reference": list(s.reference)} if s.reference else {})}
                                        for a, s in t.sizes.items()}}
                       for t in self.inputs.values()},
            "outputs": {t.id: {"axes": t.axes, "dtype": t.dtype, "channels": t.channels,
                               "axes_info": {a: out_axis(i) for a, i in t.sizes.items()}}
                        for t in self.outputs.values()},
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


class ModuleRunner:
    """Call a module on numpy arrays (in input order) and get numpy outputs back."""

    def __init__(self, module: Any, input_ids: Sequence[str]):
        import torch

        self.module = module
        self.input_ids = list(input_ids)
        self._torch = torch

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        with torch.no_grad():
            out = self.module(*tensors)
        return outputs_to_numpy(out)


def outputs_to_numpy(out: Any) -> list[np.ndarray]:
    """Normalise a module's return value (tensor, tuple or list of tensors) to numpy arrays."""
    import torch

    if isinstance(out, torch.Tensor):
        out = [out]
    elif isinstance(out, dict):
        raise ExportError("the module returns a dict; the bioimage.io format binds outputs by position: "
                          "wrap it so forward() returns a tensor or a tuple of tensors")
    elif not isinstance(out, (tuple, list)):
        raise ExportError(f"the module returns a {type(out).__name__}; forward() must return a tensor or "
                          "a tuple of tensors")
    arrays = []
    for i, o in enumerate(out):
        if not isinstance(o, torch.Tensor):
            raise ExportError(f"output {i} of the module is a {type(o).__name__}, not a tensor")
        arrays.append(o.detach().cpu().numpy())
    return arrays


# ----------------------------------------------------------------------------------------------
# size probing


@dataclass
class _Group:
    """Input axes that must share a size: the same letter in several inputs with equal example size."""

    members: list[tuple[str, str]]  # (input id, letter)
    example: int
    override: ProbedSizes | None = None

    @property
    def name(self) -> str:
        return "/".join(f"{t}.{a}" for t, a in self.members)


class _Prober:
    def __init__(self, run: Callable[[Sequence[np.ndarray]], list[np.ndarray]], inputs: Mapping[str, np.ndarray],
                 axes: Mapping[str, str], groups: list[_Group]):
        self.run = run
        self.inputs = inputs
        self.axes = axes
        self.groups = groups
        self.ids = list(inputs)
        self.cache: dict[tuple[int, ...], list[tuple[int, ...]] | None] = {}
        self.rng = np.random.default_rng(0)

    def shapes_for(self, sizes: Sequence[int], batch: int = 1) -> list[tuple[int, ...]]:
        where = {m: g_i for g_i, g in enumerate(self.groups) for m in g.members}
        shapes = []
        for tid in self.ids:
            shape = []
            for d, a in enumerate(self.axes[tid]):
                if a == "b":
                    shape.append(batch)
                elif (tid, a) in where:
                    shape.append(int(sizes[where[(tid, a)]]))
                else:
                    shape.append(self.inputs[tid].shape[d])
            shapes.append(tuple(shape))
        return shapes

    def random_inputs(self, sizes: Sequence[int], batch: int = 1) -> list[np.ndarray]:
        return [self.rng.standard_normal(s).astype(np.float32) for s in self.shapes_for(sizes, batch)]

    def output_shapes(self, sizes: Sequence[int]) -> list[tuple[int, ...]] | None:
        key = tuple(int(s) for s in sizes)
        if key not in self.cache:
            if any(s < 1 for s in key):
                self.cache[key] = None
            else:
                try:
                    outs = self.run(self.random_inputs(key))
                    self.cache[key] = [o.shape for o in outs]
                except Exception:  # any failure means: not a valid size
                    self.cache[key] = None
        return self.cache[key]


def _find_grid(results: Mapping[int, list[tuple[int, ...]] | None], upto: int, *,
               min_points: int = 4) -> tuple[int, int] | None:
    """Smallest step, then smallest min, such that every grid size up to ``upto`` works affinely."""
    working = sorted(s for s, r in results.items() if r is not None and s <= upto)
    if not working:
        return None
    for step in range(1, upto // (min_points - 1) + 1):
        for m in working:
            grid = list(range(m, upto + 1, step))
            if len(grid) < min_points:
                break
            if any(results.get(s) is None for s in grid):
                continue
            if not _affine(grid, [results[s] for s in grid]):
                continue
            return m, step
    return None


def _affine(sizes: Sequence[int], shapes: Sequence[list[tuple[int, ...]]]) -> bool:
    """True if every output dimension is an affine function of the input size over ``sizes``."""
    n_out = len(shapes[0])
    if any(len(s) != n_out for s in shapes):
        return False
    for o in range(n_out):
        ndim = len(shapes[0][o])
        if any(len(s[o]) != ndim for s in shapes):
            return False
        for d in range(ndim):
            vals = [s[o][d] for s in shapes]
            diffs = {(vals[i + 1] - vals[i]) * (sizes[1] - sizes[0]) - (vals[1] - vals[0]) * (sizes[i + 1] - sizes[i])
                     for i in range(len(vals) - 1)}
            if diffs != {0}:
                return False
    return True


def _scan(prober: _Prober, make_sizes: Callable[[int], list[int]], *,
          limit: int) -> tuple[tuple[int, int] | None, dict[int, Any]]:
    """Try sizes 1, 2, ... until a grid of >= 4 working sizes appears (or ``limit``)."""
    results: dict[int, Any] = {}
    grid = None
    for s in range(1, limit + 1):
        if s not in results:
            results[s] = prober.output_shapes(make_sizes(s))
        if results[s] is not None:
            grid = _find_grid(results, s)
            if grid is not None:
                # confirm one more step beyond (cheap insurance against accidental grids)
                m, step = grid
                nxt = s + step
                results[nxt] = prober.output_shapes(make_sizes(nxt))
                if results[nxt] is None or not _affine(list(range(m, nxt + 1, step)),
                                                       [results[k] for k in range(m, nxt + 1, step)]):
                    grid = None
                    continue
                return grid, results
    return None, results


def _scan_limit(n_spatial: int, example: int) -> int:
    base = {0: 64, 1: 256, 2: 160, 3: 72}.get(n_spatial, 48)
    return max(base, min(example, 2 * base))


# ----------------------------------------------------------------------------------------------
# receptive field


def _receptive_field(prober: _Prober, sizes: list[int], out_index: int, out_axes: str,
                     relations: Mapping[str, OutputAxisInfo], group_of: Mapping[str, int],
                     positions: int) -> tuple[dict[str, int], set[str]]:
    """Radius (output pixels) of the change one perturbed input pixel causes, per output axis.

    Returns (radius per letter, letters where the change reached the output border).
    """
    base_inputs = prober.random_inputs(sizes)
    ref = prober.run(base_inputs)[out_index].astype(np.float64)
    radius: dict[str, int] = {}
    touched: set[str] = set()
    member_group = {m: g_i for g_i, g in enumerate(prober.groups) for m in g.members}
    for k in range(positions):
        centers = [min(sizes[g] // 2 + k, sizes[g] - 1) for g in range(len(sizes))]
        indices = [tuple(centers[member_group[(tid, a)]] if (tid, a) in member_group else slice(None)
                         for a in prober.axes[tid]) for tid in prober.ids]
        for sign in (1.0, -1.0):
            changed = perturbation_change(prober.run, base_inputs, indices, ref, out_index=out_index, sign=sign)
            if not changed.any():
                continue
            for d, letter in enumerate(out_axes):
                rel = relations.get(letter)
                if rel is None or rel.reference is None:
                    continue
                other = tuple(i for i in range(changed.ndim) if i != d)
                hit = np.nonzero(changed.any(axis=other))[0]
                n = changed.shape[d]
                c_in = centers[group_of[letter]]
                # an output pixel j sits over input (j - offset/2) / scale (offsets crop both sides)
                c_out = float(rel.scale) * (c_in + 0.5) + rel.offset / 2 - 0.5
                r = int(math.ceil(max(abs(float(hit.min()) - c_out), abs(float(hit.max()) - c_out)) - 1e-9))
                radius[letter] = max(radius.get(letter, 0), r)
                if hit.min() == 0 or hit.max() == n - 1:
                    touched.add(letter)
    return radius, touched


# ----------------------------------------------------------------------------------------------
# probing, step by step


def probe_module(run: Callable[[Sequence[np.ndarray]], list[np.ndarray]], inputs: Mapping[str, np.ndarray],
                 axes: Mapping[str, str], example_outputs: Sequence[np.ndarray], output_ids: Sequence[str], *,
                 output_axes: Mapping[str, str] | None = None, sizes: Mapping[str, Any] | None = None,
                 halo: Any = None) -> ProbeResult:
    """Probe ``run`` (numpy in, numpy out) for valid sizes, output relations and halo.

    Parameters
    ----------
    run : callable
        Runs the network on a list of float32 arrays (input order) and returns output arrays.
    inputs, axes : mapping
        Example input arrays and their axes strings, by input id.
    example_outputs : sequence of ndarray
        The network's outputs for the example (their shapes and dtypes are reported).
    output_ids : sequence of str
    output_axes : mapping, optional
        Axes strings of outputs that cannot be inferred (by output id).
    sizes : mapping, optional
        Overrides: ``{letter: spec}`` for all inputs, or ``{input_id: {letter: spec}}``;
        ``spec`` is an int (fixed) or ``{"min": m, "step": s}``.
    halo : int or mapping, optional
        Override: an int for every spatial output axis, ``{letter: int}``, or
        ``{output_id: {letter: int}}``.

    The steps: group the input axes that share a size, find each group's valid
    sizes (:func:`_find_sizes`), read off each output axis' relation to the inputs
    (:func:`_output_info`), measure the halo (:func:`_set_halos`) and raise a
    minimum that is too small for it (:func:`_fit_min_to_halo`).
    """
    import time

    t0 = time.perf_counter()
    notes: list[str] = []
    ids = list(inputs)
    groups = _size_groups(inputs, axes, _normalise_size_overrides(sizes, ids, axes))
    prober = _Prober(run, inputs, axes, groups)
    found = _find_sizes(prober, notes)
    input_infos = {tid: _input_info(tid, inputs[tid], axes[tid], groups, found) for tid in ids}
    # output axes follow the first input's axes of the same letter
    group_of = {g.members[0][1]: i for i, g in enumerate(groups) if g.members[0][0] == ids[0]}
    output_axes = dict(output_axes or {})
    output_infos = {oid: _output_info(prober, found, k, oid, out, axes[ids[0]], output_axes.get(oid), group_of)
                    for k, (oid, out) in enumerate(zip(output_ids, example_outputs))}
    _set_halos(prober, found, output_infos, group_of, _normalise_halo_override(halo, output_infos), notes)
    _fit_min_to_halo(groups, found, input_infos, output_infos, notes)
    return ProbeResult(inputs=input_infos, outputs=output_infos, notes=notes, seconds=time.perf_counter() - t0)


def _size_groups(inputs: Mapping[str, np.ndarray], axes: Mapping[str, str],
                 overrides: Mapping[tuple[str, str], ProbedSizes]) -> list[_Group]:
    """Groups of input axes that share one size: same letter, same example size."""
    groups: list[_Group] = []
    for tid in inputs:
        for d, a in enumerate(axes[tid]):
            if a not in SPATIAL_LETTERS:
                continue
            size = inputs[tid].shape[d]
            for g in groups:
                if g.members[0][1] == a and g.example == size:
                    g.members.append((tid, a))
                    break
            else:
                groups.append(_Group(members=[(tid, a)], example=size, override=overrides.get((tid, a))))
    return groups


@dataclass
class _Found:
    """Valid sizes found per size group: ``(min, step)`` and one small working size each."""

    grids: list[tuple[int, int]]
    #: a working size per group (the others' sizes while one group is varied)
    base: list[int]

    def with_size(self, group: int, size: int) -> list[int]:
        sizes = list(self.base)
        sizes[group] = size
        return sizes


def _fixed_note(g: _Group) -> str:
    return (f"{g.name}: only the example size {g.example} works (fixed size); "
            "pass sizes={'<axis>': {'min': m, 'step': s}} if other sizes are valid")


def _find_sizes(prober: _Prober, notes: list[str]) -> _Found:
    """Valid sizes of every group: the override, else fixed (nothing near the example runs), else scanned."""
    groups = prober.groups
    examples = [g.example for g in groups]
    n_sp = len({g.members[0][1] for g in groups})
    grids: list[tuple[int, int] | None] = [None if g.override is None else (g.override.min, g.override.step)
                                           for g in groups]
    todo = [i for i, gr in enumerate(grids) if gr is None]
    base = [examples[i] if gr is None else gr[0] for i, gr in enumerate(grids)]
    # cheap test first: an axis on which no size near the example works is fixed (saves scanning a
    # fixed-size network, e.g. flatten + linear, over hundreds of sizes)
    for i in list(todo):
        near = sorted({examples[i] + d for d in (1, 2, 4, 8, 16, 32, 64)}
                      | {examples[i] - d for d in (1, 2, 4, 8, 16, 32, 64)}
                      | {examples[i] // 2, examples[i] * 2})
        if not any(prober.output_shapes([n if j == i else base[j] for j in range(len(groups))]) is not None
                   for n in near if n >= 1 and n != examples[i]):
            grids[i] = (examples[i], 0)
            todo.remove(i)
            notes.append(_fixed_note(groups[i]))
    if len(todo) > 1:
        # phase 1: all free axes together (cheap: small isotropic inputs) to find small valid sizes
        def joint(s: int) -> list[int]:
            return [s if i in todo else base[i] for i in range(len(groups))]

        grid, _ = _scan(prober, joint, limit=_scan_limit(n_sp, max(examples)))
        if grid is not None:
            for i in todo:
                base[i] = grid[0]
        else:
            notes.append("no common valid size for all spatial axes at once; probing each axis at the example size")
    # phase 2: each free axis alone, the others at a small valid size
    for i in todo:
        def one(s: int, i: int = i) -> list[int]:
            sz = list(base)
            sz[i] = s
            return sz

        grid, _ = _scan(prober, one, limit=_scan_limit(n_sp, groups[i].example))
        if grid is None:
            grids[i] = (groups[i].example, 0)
            notes.append(_fixed_note(groups[i]))
        else:
            grids[i] = grid
        base[i] = grids[i][0]
    found = _Found(grids=grids, base=base)
    _check_overrides(prober, found)
    return found


def _check_overrides(prober: _Prober, found: _Found) -> None:
    """Every given size must run (min, and two steps above it)."""
    for i, g in enumerate(prober.groups):
        if g.override is None:
            continue
        m, st = found.grids[i]
        for n in ((0, 1, 2) if st else (0,)):
            if prober.output_shapes(found.with_size(i, m + n * st)) is None:
                raise ExportError(f"sizes override for {g.name} ({g.override.describe()}) is wrong: the module "
                                  f"rejects size {m + n * st}")


def _input_info(tid: str, arr: np.ndarray, ax: str, groups: Sequence[_Group], found: _Found) -> TensorInfo:
    info = TensorInfo(id=tid, axes=ax, dtype=str(arr.dtype),
                      channels=arr.shape[ax.index("c")] if "c" in ax else None, example_shape=arr.shape)
    for a in ax:
        if a not in SPATIAL_LETTERS:
            continue
        gi = next(i for i, g in enumerate(groups) if (tid, a) in g.members)
        g = groups[gi]
        m, st = found.grids[gi]
        if g.members[0][0] != tid:
            info.sizes[a] = ProbedSizes(m, st, source="reference", reference=g.members[0])
        else:
            src = "override" if g.override is not None else ("probed" if st else "fixed-by-probe")
            info.sizes[a] = ProbedSizes(m, st, source=src)
    return info


# ----------------------------------------------------------------------------------------------
# output relations


def _output_letters(oid: str, out: np.ndarray, ref_axes: str, given: str | None) -> tuple[str, str]:
    """(axes, source) of one output: given, else inferred from the first input's axes."""
    if given is not None:
        return parse_axis_letters(given, out.ndim, what=f"output {oid!r}", error=ExportError), "override"
    if out.ndim == len(ref_axes):
        return ref_axes, "probed"
    if out.ndim == 2 and ref_axes.startswith("b"):
        return "bc", "probed"
    if out.ndim == 1 and "b" not in ref_axes:
        return "c", "probed"
    raise ExportError(f"cannot infer the axes of output {oid!r} (shape {out.shape}) from input axes {ref_axes!r}: "
                      f"pass output_axes={{{oid!r}: '...'}} (letters b, c, t, z, y, x)")


def _output_info(prober: _Prober, found: _Found, k: int, oid: str, out: np.ndarray, ref_axes: str,
                 given_axes: str | None, group_of: Mapping[str, int]) -> TensorInfo:
    """Output ``k``: its axes and how each axis' size follows from the inputs."""
    oax, src = _output_letters(oid, out, ref_axes, given_axes)
    info = TensorInfo(id=oid, axes=oax, dtype=str(out.dtype),
                      channels=out.shape[oax.index("c")] if "c" in oax else None, example_shape=out.shape)
    for d, a in enumerate(oax):
        if a == "b":
            info.sizes[a] = OutputAxisInfo(a, "batch", source=src)
        elif a == "c":
            info.sizes[a] = OutputAxisInfo(a, "channel", size=out.shape[d], source=src)
        elif a in group_of and found.grids[group_of[a]][1] != 0:
            info.sizes[a] = _axis_relation(prober, found, k, d, a, group_of[a], oid, src)
        else:
            info.sizes[a] = OutputAxisInfo(a, "fixed", size=out.shape[d], source=src)
    return info


def _axis_relation(prober: _Prober, found: _Found, k: int, d: int, a: str, gi: int, oid: str,
                   src: str) -> OutputAxisInfo:
    """Output ``k``'s axis ``d`` as ``scale * input + offset``, read off three valid sizes of group ``gi``."""
    m, st = found.grids[gi]
    pts = [m, m + st, m + 2 * st]
    shapes = []
    for p in pts:
        shp = prober.output_shapes(found.with_size(gi, p))
        if shp is None:
            raise ExportError(f"probing failed: size {p} along {prober.groups[gi].name} does not run")
        shapes.append(shp[k][d])
    scale = Fraction(shapes[1] - shapes[0], st)
    offset_f = shapes[0] - scale * m
    if scale == 0:
        return OutputAxisInfo(a, "fixed", size=shapes[0], source=src)
    if offset_f.denominator != 1:
        raise ExportError(f"output {oid!r} axis {a}: size {shapes} for input sizes {pts} is not "
                          "scale * input + integer offset; pass sizes= with a step that gives whole "
                          "output sizes")
    offset = int(offset_f)
    kind = "same" if (scale == 1 and offset == 0) else (
        "scale" if offset == 0 else ("offset" if scale == 1 else "scale+offset"))
    return OutputAxisInfo(a, kind, reference=prober.groups[gi].members[0], scale=scale, offset=offset, source=src)


# ----------------------------------------------------------------------------------------------
# halo


def _set_halos(prober: _Prober, found: _Found, outputs: Mapping[str, TensorInfo], group_of: Mapping[str, int],
               overrides: Mapping[tuple[str, str], int], notes: list[str]) -> None:
    """Set every referenced output axis' halo: the override, else the measured receptive field."""
    n_sp = len({g.members[0][1] for g in prober.groups})
    max_step = max([st for m, st in found.grids if st] or [1])
    positions = max(1, min(max_step, 4))
    for k, (oid, info) in enumerate(outputs.items()):
        spatial = {a: r for a, r in info.sizes.items() if r.reference is not None}
        if not spatial:
            continue
        need = {a for a in spatial if (oid, a) not in overrides}
        radius = _measure_radius(prober, found, k, oid, info.axes, spatial, need, group_of, n_sp, positions,
                                 notes) if need else {}
        for a, rel in spatial.items():
            if (oid, a) in overrides:
                rel.halo = overrides[(oid, a)]
                rel.source = "override" if rel.source == "probed" else rel.source
                continue
            r = radius.get(a, 0)
            rel.receptive_field = None if r < 0 else r
            rel.halo = 0 if r < 0 else _halo_for(rel, r, found.grids[group_of[a]][1] or 1)


def _measure_radius(prober: _Prober, found: _Found, k: int, oid: str, out_axes: str,
                    spatial: Mapping[str, OutputAxisInfo], need: set[str], group_of: Mapping[str, int], n_sp: int,
                    positions: int, notes: list[str]) -> dict[str, int]:
    """Receptive-field radius per letter of output ``k``, on inputs grown until the change stays inside
    (-1 where it reaches the border even on the largest input: global context)."""
    tgt = {1: 96, 2: 64, 3: 32}.get(n_sp, 32)
    cap = {1: 1024, 2: 256, 3: 96}.get(n_sp, 64)
    while True:
        sizes_rf = [m if st == 0 else m + st * max(0, math.ceil((tgt - m) / st)) for m, st in found.grids]
        radius, touched = _receptive_field(prober, sizes_rf, k, out_axes, spatial, group_of, positions)
        touched &= need
        if not touched:
            return radius
        growable = [a for a in touched if found.grids[group_of[a]][1]]
        if not growable or tgt * 2 > cap:
            for a in touched:
                notes.append(
                    f"output {oid!r} axis {a}: one input pixel changes the output up to the border of a "
                    f"{sizes_rf[group_of[a]]}-pixel input (global context, e.g. normalisation over the "
                    "image): tiled prediction will differ from whole-image prediction; halo not set "
                    "(pass halo= to set one)")
                radius[a] = -1
            return radius
        tgt *= 2


def _halo_for(rel: OutputAxisInfo, radius: int, step_in: int) -> int:
    """The halo for a receptive-field ``radius``: beyond what the network crops itself, rounded up to whole
    output steps (and whole input pixels)."""
    crop = max(0, -rel.offset) // 2  # part of the field the network already crops
    need_halo = max(0, radius - crop)
    if need_halo == 0:
        return 0
    q = _fraction_to_int(rel.scale * step_in) or 1
    q = math.lcm(q, rel.scale.numerator)  # halo / scale must be a whole number of input pixels
    return int(math.ceil(need_halo / q) * q)


def _fraction_to_int(f: Fraction) -> int | None:
    return int(f) if f.denominator == 1 else None


def _fit_min_to_halo(groups: Sequence[_Group], found: _Found, inputs: Mapping[str, TensorInfo],
                     outputs: Mapping[str, TensorInfo], notes: list[str]) -> None:
    """The smallest tile must hold more than twice the halo (spec and DeepImageJ rule 19): raise a group's min
    (or, for a fixed size, lower the halo)."""
    for gi, g in enumerate(groups):
        m, st = found.grids[gi]
        letter = g.members[0][1]
        rels = [t.sizes[letter] for t in outputs.values()
                if letter in t.sizes and t.sizes[letter].reference == g.members[0] and t.sizes[letter].halo]
        if not rels:
            continue

        def fits(size: int) -> bool:
            for r in rels:
                out = int(size * r.scale + r.offset)
                if out - 2 * r.halo < 1 or 2 * r.halo / r.scale >= size:
                    return False
            return True

        if st == 0:
            if not fits(m):
                for r in rels:
                    r.halo = max(0, (int(m * r.scale + r.offset) - 1) // 2)
                notes.append(f"{g.name}: fixed size {m} is too small for the measured halo; halo reduced")
            continue
        new_m = m
        while not fits(new_m):
            new_m += st
        if new_m != m:
            notes.append(f"{g.name}: min raised from {m} to {new_m} so the smallest tile holds more than "
                         "twice the halo")
            found.grids[gi] = (new_m, st)
            for tid, a in g.members:
                inputs[tid].sizes[a] = replace(inputs[tid].sizes[a], min=new_m)


def _size_spec(value: Any, what: str) -> ProbedSizes:
    if isinstance(value, AxisSizes):
        return ProbedSizes(value.min, value.step, source="override")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise ExportError(f"sizes override {what}: {value} is not a positive size")
        return ProbedSizes(int(value), 0, source="override")
    if isinstance(value, Mapping) and "min" in value:
        m, st = int(value["min"]), int(value.get("step", 0))
        if m < 1 or st < 0:
            raise ExportError(f"sizes override {what}: min must be >= 1 and step >= 0, got {dict(value)}")
        return ProbedSizes(m, st, source="override")
    raise ExportError(f"sizes override {what}: expected an int or {{'min': m, 'step': s}}, got {value!r}")


def _normalise_size_overrides(sizes: Mapping[str, Any] | None, ids: Sequence[str],
                              axes: Mapping[str, str]) -> dict[tuple[str, str], ProbedSizes]:
    out: dict[tuple[str, str], ProbedSizes] = {}
    if not sizes:
        return out
    for key, value in sizes.items():
        if key in ids and isinstance(value, Mapping) and "min" not in value:
            for a, v in value.items():
                if a not in axes[key] or a not in SPATIAL_LETTERS:
                    raise ExportError(f"sizes override: input {key!r} has no spatial axis {a!r}")
                out[(key, a)] = _size_spec(v, f"{key}.{a}")
        elif isinstance(key, str) and len(key) == 1 and key in SPATIAL_LETTERS:
            found = False
            for tid in ids:
                if key in axes[tid]:
                    out[(tid, key)] = _size_spec(value, key)
                    found = True
            if not found:
                raise ExportError(f"sizes override: no input has an axis {key!r}")
        else:
            raise ExportError(f"sizes override: {key!r} is neither an axis letter (t, z, y, x) nor an input id "
                              f"({', '.join(ids)})")
    return out


def _normalise_halo_override(halo: Any, outputs: Mapping[str, TensorInfo]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    if halo is None:
        return out

    def spatial(oid: str) -> list[str]:
        return [a for a, r in outputs[oid].sizes.items() if r.reference is not None]

    def as_int(v: Any, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ExportError(f"halo override {what}: expected a non-negative int, got {v!r}")
        return int(v)

    if isinstance(halo, (int, np.integer)) and not isinstance(halo, bool):
        for oid in outputs:
            for a in spatial(oid):
                out[(oid, a)] = as_int(halo, a)
        return out
    if not isinstance(halo, Mapping):
        raise ExportError(f"halo override: expected an int or a mapping, got {type(halo).__name__}")
    for key, value in halo.items():
        if key in outputs:
            if isinstance(value, Mapping):
                for a, v in value.items():
                    if a not in spatial(key):
                        raise ExportError(f"halo override: output {key!r} has no axis {a!r} sized from an input")
                    out[(key, a)] = as_int(v, f"{key}.{a}")
            else:
                for a in spatial(key):
                    out[(key, a)] = as_int(value, f"{key}.{a}")
        elif isinstance(key, str) and len(key) == 1 and key in SPATIAL_LETTERS:
            for oid in outputs:
                if key in spatial(oid):
                    out[(oid, key)] = as_int(value, key)
        else:
            raise ExportError(f"halo override: {key!r} is neither an axis letter nor an output id")
    return out
