"""Agreement checks: what the test tensor alone does not show.

Through bioimgzoo's runtime, with the models :mod:`.reproduction` loaded:

- ``agreement.formats``: the weight formats agree with each other, on the test
  input and on a random input of another valid size;
- ``agreement.sizes``: parametrized sizes (``min + n*step``, n = 0, 1, 2; batch 1
  and 2) run and give the declared output shapes (the network itself, no
  stitching that would hide a wrong size); at the test input's size the
  network input is the test input as reproduction fed it (its output is
  shared, not run again), and in a batch of 2 beside another image it must
  give the same output as alone (batch-dependent networks: batch statistics,
  normalisation over the batch);
- ``agreement.determinism``: two runs on the test input are identical;
- ``agreement.tiling``: a prediction tiled with the smallest valid tile and the
  declared halo agrees with the whole-image prediction of an input several
  tiles large (for a fixed-size model, with a prediction whose halo is three
  times larger); a too-small halo, in-network normalisation or global
  operations show up as seams, reported with their size and magnitude and kept
  as a seam map for the reports.

Every comparison uses the tolerance the package declares (or the zoo's
default), as :mod:`.reproduction` does.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ._registry import FAILED, NOT_APPLICABLE, PASSED, STAGE_RUN, register_family
from .reproduction import compare_outputs, formats_to_run, fresh_runs, load_model, predict_outputs, \
    runtime_outputs, test_tensors, tolerance_for

__all__ = ["declared_output_shape", "seam_summary"]

FAMILY = register_family("agreement", "Agreement beyond the test tensor", order=35)

_REQUIRES = ("package", "files", "valid")


def _runnable(ctx: Any) -> list[str]:
    return formats_to_run(ctx)[0]


def _compare_all(ctx: Any, wf: str, got: dict, ref: dict) -> tuple[bool, dict]:
    figures, ok = {}, True
    for oid, r in ref.items():
        cmp = compare_outputs(np.asarray(got[oid]), np.asarray(r), tolerance_for(ctx.pkg, wf, oid))
        cmp.pop("difference")
        figures[oid] = cmp
        ok = ok and cmp["passed"]
    return ok, figures


def _figures_text(figures: dict) -> str:
    return "; ".join(f"{oid}: {c['mismatched_per_million']:.0f} mismatched per million, max abs "
                     f"{c['max_abs']:.3g}" for oid, c in figures.items())


def _fitted(image: np.ndarray, axes: list[str], sizes: dict[str, int]) -> np.ndarray:
    """``image`` reflected or cropped to ``sizes`` along the named axes (realistic content at another size)."""
    out = image
    for ax, n in sizes.items():
        i = axes.index(ax)
        have = out.shape[i]
        if n > have:
            pad = [(0, 0)] * out.ndim
            pad[i] = (0, n - have)
            out = np.pad(out, pad, mode="reflect" if n - have < have else "wrap")
        out = np.take(out, np.arange(n), axis=i)
    return np.ascontiguousarray(out)


def _space_axes(spec: Any) -> list[str]:
    return [a.id for a in spec.axes if a.kind in ("space", "time")]


# ------------------------------------------------------------------------------------------- formats

@FAMILY.check("formats", title="the weight formats agree with each other", stage=STAGE_RUN, requires=_REQUIRES,
              fix="Re-convert the weights from one source model (e.g. export ONNX and TorchScript from the same "
                  "PyTorch module) and check the conversion; formats that disagree give users different results.")
def _formats(ctx: Any) -> Iterator[tuple]:
    """Each format against the first, on the test input and on a random input of another valid size."""
    run = _runnable(ctx)
    if len(run) < 2:
        return
    first = run[0]
    inputs, _, axes = test_tensors(ctx)
    other = _other_size_inputs(ctx, first, inputs, axes)
    try:
        ref_test = runtime_outputs(ctx, first)
        ref_other = predict_outputs(load_model(ctx, first), other, axes)
    except Exception as e:
        yield FAILED, f"{first} could not predict: {type(e).__name__}: {e}"
        return
    shape = {k: list(v.shape) for k, v in other.items()}
    for wf in run[1:]:
        try:
            ok_test, fig_test = _compare_all(ctx, wf, runtime_outputs(ctx, wf), ref_test)
            ok_other, fig_other = _compare_all(ctx, wf, predict_outputs(load_model(ctx, wf), other, axes),
                                               ref_other)
        except Exception as e:
            yield FAILED, f"{wf} could not predict: {type(e).__name__}: {e}", {"weights_format": wf}
            continue
        details = {"weights_format": wf, "reference": first, "test_input": fig_test, "other_input": fig_other,
                   "other_input_shape": shape}
        if ok_test and ok_other:
            yield PASSED, f"{wf} agrees with {first} on the test input and on a random input {shape}", details
        else:
            where = [w for w, ok in (("the test input", ok_test), (f"a random input {shape}", ok_other)) if not ok]
            figs = _figures_text(fig_test if not ok_test else fig_other)
            yield FAILED, f"{wf} disagrees with {first} on {' and '.join(where)} ({figs})", details


def _other_size_inputs(ctx: Any, wf: str, inputs: dict, axes: dict) -> dict[str, np.ndarray]:
    """Random inputs of the next valid size (the same size for a fixed-size model), seeded."""
    model = load_model(ctx, wf)
    rng = np.random.default_rng(0)
    out = {}
    for spec in model.inputs:
        arr = inputs[spec.id]
        shape = list(arr.shape)
        for i, a in enumerate(spec.axes):
            sz = spec.sizes.get(a.id)
            if a.kind in ("space", "time") and getattr(sz, "step", 0):
                shape[i] = shape[i] + sz.step
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        out[spec.id] = (lo + (hi - lo) * rng.random(shape)).astype(arr.dtype if arr.dtype.kind == "f"
                                                                   else np.float32)
    return out


# ------------------------------------------------------------------------------------------- sizes

def declared_output_shape(model: Any, spec_out: Any, input_shapes: dict[str, dict[str, int]], batch: int
                          ) -> dict[str, int | None]:
    """The output size per axis the description declares for these input sizes (None: not declared)."""
    from ..descr.sizes import AxisSizes, SizeRef
    from ..descr.tensors import output_scale

    shape: dict[str, int | None] = {}
    specs_in = {t.id: t for t in model.inputs}
    for a in spec_out.axes:
        sz = spec_out.sizes.get(a.id)
        if a.kind == "batch":
            shape[a.id] = batch
        elif isinstance(sz, AxisSizes):
            shape[a.id] = sz.min
        elif isinstance(sz, SizeRef) and sz.tensor_id in specs_in:
            ref = output_scale(specs_in[sz.tensor_id], spec_out, a.id)
            n = input_shapes[sz.tensor_id][sz.axis_id]
            shape[a.id] = int(n * ref[2]) + ref[3] if ref is not None else None
        else:
            shape[a.id] = None
    return shape


@FAMILY.check("sizes", title="parametrized sizes run and give the declared output shapes", stage=STAGE_RUN,
              requires=_REQUIRES,
              fix="Declare the sizes the network really accepts (min and step of each parametrized axis) and "
                  "output sizes that follow them (size references with the right scale and offset).")
def _sizes(ctx: Any) -> Iterator[tuple]:
    """The raw network on min + n*step (n = 0, 1, 2) with batch 1 and 2; the shapes compared."""
    from ..descr.sizes import AxisSizes

    run = _runnable(ctx)
    if not run:
        return
    wf = run[0]
    model = load_model(ctx, wf)
    parametrized = any(isinstance(s, AxisSizes) and s.step for t in model.inputs for s in t.sizes.values())
    batches = [1] if any(t.batch_limit() == 1 for t in model.inputs) else [1, 2]
    steps = [0, 1, 2] if parametrized else [0]
    rng = np.random.default_rng(0)
    tried, bad = [], []
    # the test input as reproduction fed the network (its run is shared): used where its size is the one tried
    try:
        runtime_outputs(ctx, wf)
    except Exception:  # reproduction reported it; the sizes are still tried on random inputs
        pass
    fed = getattr(model.engine, "first_inputs", None) or []
    alone: list | None = None
    for n in steps:
        for b in batches:
            sizes: dict[str, dict[str, int]] = {}
            arrays = []
            for spec in model.inputs:
                shape = []
                for a in spec.axes:
                    sz = spec.sizes.get(a.id)
                    size = b if a.kind == "batch" else (sz.min + n * sz.step if isinstance(sz, AxisSizes) else None)
                    if size is None:  # an input sized by another: not generated here
                        return
                    shape.append(size)
                sizes[spec.id] = dict(zip(spec.axis_ids, shape))
                dt = np.float64 if spec.dtype == "float64" else np.float32
                arrays.append(rng.random(shape).astype(dt))
            real = len(fed) == len(arrays) and all(f.shape[1:] == a.shape[1:] and f.shape[0] == 1
                                                   for f, a in zip(fed, arrays))
            if real:  # the test image first: alone, it is reproduction's run; in a batch, beside a random one
                arrays = [np.concatenate([f.astype(a.dtype)] + [a[1:]]) for f, a in zip(fed, arrays)]
            label = ", ".join(f"{tid} {tuple(s.values())}" for tid, s in sizes.items())
            tried.append(label)
            try:
                outs = model.engine.run(arrays)
            except Exception as e:
                bad.append(f"{wf}: {label}: the network fails ({type(e).__name__}: {str(e)[:200]})")
                continue
            if real and b == 1:
                alone = [np.asarray(o) for o in outs]
            elif real and alone is not None:
                for spec_out, a, o in zip(model.outputs, alone, outs):
                    first = np.asarray(o)[:1]
                    if first.shape == a.shape and not compare_outputs(first, a, tolerance_for(ctx.pkg, wf,
                                                                                                spec_out.id))["passed"]:
                        diff = float(np.nanmax(np.abs(first.astype(np.float64) - a.astype(np.float64))))
                        bad.append(f"{wf}: output {spec_out.id} of the test image differs in a batch of {b} from "
                                   f"its output alone (up to {diff:.3g}): the network depends on the other images "
                                   "of its batch")
            for spec_out, out in zip(model.outputs, outs):
                want = declared_output_shape(model, spec_out, sizes, b)
                got = dict(zip(spec_out.axis_ids, np.shape(out)))
                wrong = {ax: (got.get(ax), w) for ax, w in want.items() if w is not None and got.get(ax) != w}
                if len(np.shape(out)) != len(spec_out.axes) or wrong:
                    bad.append(f"{wf}: {label}: output {spec_out.id} has shape {tuple(np.shape(out))}, declared "
                               f"{tuple(want.values())}")
    details = {"weights_format": wf, "tried": tried}
    if bad:
        for b_ in bad:
            yield FAILED, b_, details
    else:
        yield PASSED, (f"{len(tried)} input size(s) run with {wf} and give the declared output shapes "
                       f"({'; '.join(tried)})"), details


# ------------------------------------------------------------------------------------------- determinism

@FAMILY.check("determinism", title="two runs give identical outputs", stage=STAGE_RUN, requires=_REQUIRES,
              fix="Remove randomness from inference: put the network in eval mode (no dropout), no random "
                  "noise or sampling in forward(), deterministic algorithms for the operations used.")
def _determinism(ctx: Any) -> Iterator[tuple]:
    """Each weight format: the test input predicted twice, outputs compared exactly."""
    inputs, _, axes = test_tensors(ctx)
    for wf in _runnable(ctx):
        try:
            first = runtime_outputs(ctx, wf)
            model = load_model(ctx, wf)
            with fresh_runs(model):  # a real second run, never the first one's shared outputs
                second = predict_outputs(model, inputs, axes)
        except Exception as e:
            yield FAILED, f"{wf} could not predict: {type(e).__name__}: {e}", {"weights_format": wf}
            continue
        diffs = {}
        for oid, a in first.items():
            b = second[oid]
            same = a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
            if not same:
                d = np.abs(a.astype(np.float64) - b.astype(np.float64)) if a.shape == b.shape else None
                diffs[oid] = {"max_abs": float(np.nanmax(d)) if d is not None else None,
                              "differing": int(np.count_nonzero(d)) if d is not None else None}
        details = {"weights_format": wf, "outputs": diffs}
        if diffs:
            text = "; ".join(f"{oid}: {v['differing']} element(s) differ, up to {v['max_abs']:.3g}"
                             for oid, v in diffs.items())
            yield FAILED, f"{wf}: two runs on the test input differ ({text})", details
        else:
            yield PASSED, f"{wf}: two runs on the test input are identical", details


# ------------------------------------------------------------------------------------------- tiling

def seam_summary(diff_map: np.ndarray, threshold: float) -> dict:
    """Where a 2D map of differences exceeds ``threshold``: pixels, rows, columns, widest band, largest value."""
    above = diff_map > threshold
    rows = np.flatnonzero(above.any(axis=1))
    cols = np.flatnonzero(above.any(axis=0))

    def widest(idx: np.ndarray) -> int:
        if idx.size == 0:
            return 0
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
        return max(len(r) for r in runs)

    return {"pixels": int(above.sum()), "rows": int(rows.size), "columns": int(cols.size),
            "band_width": max(widest(rows), widest(cols)), "max_abs": float(diff_map.max()) if diff_map.size else 0.0}


@FAMILY.check("tiling", title="tiled and whole-image predictions agree (no seams)", stage=STAGE_RUN,
              requires=_REQUIRES,
              fix="Declare a halo at least as large as the network's receptive-field radius (in output pixels), "
                  "and keep normalisation and other whole-image operations out of the network (use the "
                  "description's preprocessing instead).")
def _tiling(ctx: Any) -> Iterator[tuple]:
    """The smallest valid tile with the declared halo against the whole image (or a three times larger halo).

    A model of parametrized size: one image several tiles large, tiled against its whole-image
    prediction.  A fixed-size model (every window a full network run): one strip per tiled axis, two
    tiles long along it and one tile across, against the strip predicted with a three times larger
    halo; the two predictions share their first and last windows (run once), so the seams of every
    axis are checked with 3 network runs per axis where a square of 2 x 2 tiles took 9.
    """
    from ..descr.sizes import AxisSizes, valid_size_at_least

    run = _runnable(ctx)
    if not run:
        return
    wf = run[0]
    model = load_model(ctx, wf)
    if len(model.inputs) != 1:
        yield NOT_APPLICABLE, "the model has several inputs: tiling is checked for single-input models"
        return
    spec = model.inputs[0]
    spatial = [ax for ax in _space_axes(spec) if isinstance(spec.sizes.get(ax), AxisSizes)]
    if not spatial:
        yield NOT_APPLICABLE, "the input has no spatial axis to tile"
        return
    halo = _input_halo(model, spec)
    fixed = all(spec.sizes[ax].step == 0 for ax in spatial)
    tile, image, ref_tile, ref_halo = {}, {}, {}, {}
    for ax in spatial:
        sz = spec.sizes[ax]
        h = halo.get(ax, 0)
        t = valid_size_at_least(sz, 2 * h + max(sz.step, 8)) if sz.step else sz.min
        if t - 2 * h <= 0:
            yield FAILED, (f"{wf}: the declared halo ({h} input pixels along {ax}) leaves nothing of a {t}-pixel "
                           "tile: no tiled prediction is possible"), {"weights_format": wf}
            return
        tile[ax] = t
        inner = t - 2 * h
        n = 2 if fixed else 3  # several tiles; a fixed-size model pays a full-size tile per window
        image[ax] = valid_size_at_least(sz, n * inner + 2 * h) if sz.step else n * inner + 2 * h
        if fixed:
            ref_halo[ax] = min(max(3 * h, t // 6), (t - 8) // 2)
            ref_tile[ax] = t
        else:
            ref_tile[ax] = image[ax]
    if fixed:  # one strip per axis: long along it, one tile across
        cases = [(f"along {ax}", {a: (image[a] if a == ax else tile[a]) for a in spatial}) for ax in spatial]
    else:
        cases = [("", image)]
    inputs, _, axes = test_tensors(ctx)
    reference = "a prediction with a three times larger halo" if fixed else "the whole-image prediction"
    details: dict[str, Any] = {"weights_format": wf, "image": image, "tile": tile, "halo": halo,
                               "reference": reference, "outputs": {}, "strips": [c[1] for c in cases] if fixed else []}
    failed, seam_maps = [], {}
    for label, size in cases:
        x = _fitted(inputs[spec.id], axes[spec.id], size)
        try:
            tiled = predict_outputs(model, {spec.id: x}, axes, tile=tile)
            whole = predict_outputs(model, {spec.id: x}, axes, tile=ref_tile,
                                    halo=ref_halo if fixed else {ax: 0 for ax in spatial})
        except Exception as e:
            yield FAILED, f"{wf}: tiled prediction failed: {type(e).__name__}: {e}", {"weights_format": wf}
            return
        for oid, ref in whole.items():
            got = tiled[oid]
            tol = tolerance_for(ctx.pkg, wf, oid)
            cmp = compare_outputs(got, ref, tol)
            diff = cmp.pop("difference")
            where = f" ({label})" if label else ""
            if diff is None:
                failed.append(f"{oid}{where}: tiled shape {tuple(got.shape)} differs from {tuple(ref.shape)}")
                continue
            out_axes = list(next(t.axis_ids for t in model.outputs if t.id == oid))
            seam_map = _to_2d(np.abs(diff), out_axes)
            seam_maps.setdefault(oid, []).append(seam_map)
            summary = seam_summary(seam_map, tol.atol + tol.rtol * float(np.abs(ref).max() if ref.size else 0))
            cmp["seams"] = summary
            kept = details["outputs"].get(oid)
            if kept is None or (kept["passed"] and not cmp["passed"]) or \
                    cmp["seams"]["max_abs"] > kept["seams"]["max_abs"]:
                details["outputs"][oid] = cmp  # the worst strip's figures
            if not cmp["passed"]:
                failed.append(f"{oid}{where}: seams of up to {summary['max_abs']:.3g} ({summary['pixels']} pixel(s) "
                              f"in {summary['rows']} row(s) and {summary['columns']} column(s), bands up to "
                              f"{summary['band_width']} pixels wide; {cmp['mismatched_per_million']:.0f} mismatched "
                              "per million)")
    for oid, maps in seam_maps.items():  # one map a reviewer can look at: the strips side by side
        ctx.artifacts[f"seams/{wf}/{oid}"] = maps[0] if len(maps) == 1 else _side_by_side(maps)
    shown = " and ".join(str(tuple(c[1].values())) for c in cases)
    where = (f"tiles {tuple(tile.values())} with the declared halo {tuple(halo.get(a, 0) for a in spatial)} on "
             f"{'strips' if fixed else 'an image'} {shown}, against {reference}")
    if failed:
        yield FAILED, f"{wf}: {where}: " + "; ".join(failed), details
    else:
        worst = max((c["max_abs"] for c in details["outputs"].values()), default=0.0)
        yield PASSED, f"{wf}: {where}: no seams (max abs difference {worst:.3g})", details


def _side_by_side(maps: list[np.ndarray]) -> np.ndarray:
    """2D maps placed left to right on one canvas (zero between them)."""
    height = max(m.shape[0] for m in maps)
    width = sum(m.shape[1] for m in maps) + 8 * (len(maps) - 1)
    canvas = np.zeros((height, width), np.float32)
    x = 0
    for m in maps:
        canvas[:m.shape[0], x:x + m.shape[1]] = m
        x += m.shape[1] + 8
    return canvas


def _input_halo(model: Any, spec_in: Any) -> dict[str, int]:
    """The declared output halo in input pixels per input axis (what Model.predict uses by default)."""
    from ..descr.sizes import SizeRef
    from ..descr.tensors import output_scale

    halo: dict[str, int] = {}
    for out in model.outputs:
        for ax, h in out.halo.items():
            ref = out.sizes.get(ax)
            if isinstance(ref, SizeRef) and ref.tensor_id == spec_in.id:
                scale = output_scale(spec_in, out, ax)
                factor = float(scale[2]) if scale else 1.0
                halo[ref.axis_id] = max(halo.get(ref.axis_id, 0), int(np.ceil(h / factor)))
    return halo


def _to_2d(a: np.ndarray, axes: list[str]) -> np.ndarray:
    """The maximum over every axis but the last two spatial ones: one map a reviewer can look at."""
    space = [i for i, ax in enumerate(axes) if ax not in ("batch", "channel", "b", "c", "index")]
    keep = space[-2:] if len(space) >= 2 else list(range(a.ndim))[-2:]
    other = tuple(i for i in range(a.ndim) if i not in keep)
    return np.nanmax(a, axis=other) if other else a
