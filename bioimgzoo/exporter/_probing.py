"""Phase 2 of an export, *probe*: run the module on the example, then probe it.

:func:`probe_phase` checks that the module takes the example, does not return
NaN and is deterministic, names its outputs, probes valid sizes, output
relations and halo (:func:`~._probe.probe_module`), fits the example to a
valid size (the test input) and resolves the postprocessing per output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..descr.sizes import valid_size_at_most
from ..errors import ExportError
from ._plan import ExportPlan
from ._probe import ModuleRunner, ProbeResult, TensorInfo, probe_module

__all__ = ["Probed", "probe_phase"]


@dataclass
class Probed:
    """Phase 2's output: what running and probing the module found."""

    output_ids: list[str]
    probe: ProbeResult
    #: the example fitted to a valid size, by input id (the package's test input)
    test_inputs: dict[str, np.ndarray]
    #: bioimageio.spec postprocessing descriptions by output id
    postprocessing: dict[str, list]
    parameter_count: int
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def probe_phase(plan: ExportPlan, module: Any, runner: ModuleRunner) -> Probed:
    """Run ``module`` (through ``runner``) on the plan's example and probe it."""
    import time

    t = time.perf_counter()
    example_outputs = _run_example(plan, runner)
    oids = plan.output_ids_for(len(example_outputs))
    timings = {"run": time.perf_counter() - t}

    t = time.perf_counter()
    ids = plan.input_ids
    probe = probe_module(runner, {tid: plan.inputs[tid] for tid in ids}, plan.input_axes, example_outputs, oids,
                         output_axes=plan.output_axes, sizes=plan.sizes, halo=plan.halo)
    for tid in ids:  # report the example's real dtype, not the probe's float32
        probe.inputs[tid].dtype = str(plan.inputs[tid].dtype)
    timings["probe"] = time.perf_counter() - t
    notes = list(probe.notes)

    _min_multiple_of_step(probe, notes)
    test_inputs = {}
    for tid in ids:
        test_inputs[tid] = _valid_test_shape(plan.inputs[tid], probe.inputs[tid], notes)
    return Probed(output_ids=oids, probe=probe, test_inputs=test_inputs, postprocessing=plan.postprocessing_for(oids),
                  parameter_count=int(sum(p.numel() for p in module.parameters())), notes=notes, timings=timings)


def _min_multiple_of_step(probe: ProbeResult, notes: list[str]) -> None:
    """Raise every ``min`` to a multiple of its ``step``: QuPath grows tiles from ``min`` by ``min`` and
    DeepImageJ floors tiles to multiples of ``step`` (consumer-rules.md D16, Q4)."""
    from dataclasses import replace

    for t in probe.inputs.values():
        for a, s in list(t.sizes.items()):
            if s.reference is None and s.step > 0 and s.min % s.step:
                new_min = -(-s.min // s.step) * s.step
                t.sizes[a] = replace(s, min=new_min)
                notes.append(f"{t.id}.{a}: min raised from {s.min} to {new_min}, a multiple of the step {s.step} "
                             "(QuPath and DeepImageJ tile in multiples of it)")


def _run_example(plan: ExportPlan, runner: ModuleRunner) -> list[np.ndarray]:
    """The module's outputs for the example; it must take it, return finite values and be deterministic."""
    ids = plan.input_ids
    first = [plan.inputs[tid].astype(np.float32) for tid in ids]
    try:
        example_outputs = runner(first)
    except ExportError:
        raise
    except Exception as e:
        shapes = ", ".join(f"{tid}: {plan.inputs[tid].shape} ({plan.input_axes[tid]})" for tid in ids)
        raise ExportError(f"the module rejects the example input ({shapes}): {type(e).__name__}: {e}. "
                          "Fix: pass an example the module accepts, laid out as axes=") from e
    if any(not np.isfinite(o.astype(np.float64)).all() for o in example_outputs):
        rng = np.random.default_rng(0)
        normal = [rng.standard_normal(a.shape).astype(np.float32) for a in first]
        bad = [i for i, o in enumerate(runner(normal)) if not np.isfinite(o.astype(np.float64)).all()]
        if bad:
            raise ExportError(f"the module returns NaN or infinite values (output {bad[0]}) for the example and for "
                              "normalised random input: fix the module (e.g. a division by zero or log of a "
                              "negative value) before exporting")
    again = runner(first)
    for i, (a, b) in enumerate(zip(example_outputs, again)):
        scale = max(float(np.nanmax(np.abs(a))) if a.size else 0.0, 1e-12)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6 * scale, equal_nan=True):
            diff = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else "shape"
            raise ExportError(f"the module is not deterministic: two runs on the same example give different "
                              f"output {i} (max difference {diff}). "
                              "Fix: remove randomness from forward() (dropout is off in eval mode; torch.rand "
                              "and similar are not), then export again")
    return example_outputs


def _valid_test_shape(arr: np.ndarray, info: TensorInfo, notes: list[str]) -> np.ndarray:
    """Centre-crop (or reflect-pad, when too small) the example to the nearest valid size per axis."""
    for d, a in enumerate(info.axes):
        s = info.sizes.get(a)
        if s is None or s.reference is not None:
            continue
        n = arr.shape[d]
        if s.is_valid(n):
            continue
        target = valid_size_at_most(s, n)
        if target < n:
            start = (n - target) // 2
            arr = np.take(arr, range(start, start + target), axis=d)
            notes.append(f"test input axis {a}: centre-cropped {n} -> {target} (a valid size)")
        else:
            pad = [(0, 0)] * arr.ndim
            pad[d] = ((target - n) // 2, target - n - (target - n) // 2)
            mode = "reflect" if n > 1 and max(pad[d]) < n else "edge"
            arr = np.pad(arr, pad, mode=mode)
            notes.append(f"test input axis {a}: padded {n} -> {target} ({mode}) to reach the smallest valid size")
    return np.ascontiguousarray(arr)
