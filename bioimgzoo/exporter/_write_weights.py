"""Phase 3 of an export, *weights*: write each weights format and check it against the module.

:func:`write_weights` makes random network inputs at several valid sizes
(:func:`check_cases`), then writes each format the plan asks for with the
writers of :mod:`._weights`, which check the written file on those inputs.
A ``pytorch_state_dict`` whose architecture cannot be described (or extracted
from its source and rebuilt in a fresh process) is left out with the reason,
unless the caller chose the formats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..descr.axes import SPATIAL_LETTERS
from ..errors import ExportError
from ._plan import ExportPlan
from ._probe import ModuleRunner, ProbeResult
from ._probing import Probed
from ._weights import WeightsFile, write_onnx, write_state_dict, write_torchscript

__all__ = ["WrittenWeights", "write_weights", "check_cases"]


@dataclass
class WrittenWeights:
    """Phase 3's output: the written (and checked) weights files."""

    files: list[WeightsFile]
    #: the network inputs every format was checked on (random float32, several valid sizes)
    cases: list[list[np.ndarray]]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: formats the plan asked for that could not be written, with the reason (said in the result and README)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def formats(self) -> list[str]:
        return [w.format for w in self.files]


def write_weights(plan: ExportPlan, probed: Probed, module: Any, runner: ModuleRunner,
                  staging: Path) -> WrittenWeights:
    """Write every weights format of the plan into ``staging``; each is checked against ``runner``."""
    ids, oids, probe = plan.input_ids, probed.output_ids, probed.probe
    opts, tol = plan.weights, plan.tolerance
    cases, trace_case = check_cases(probe, ids, plan.input_axes, probed.test_inputs)
    check = dict(check_cases=cases, reference=runner, rtol=tol.relative, atol_rel=tol.absolute_fraction)
    written = WrittenWeights(files=[], cases=cases)
    for fmt in opts.formats:
        t = time.perf_counter()
        try:
            if fmt == "pytorch_state_dict":
                w = write_state_dict(module, staging, architecture=opts.architecture,
                                     architecture_kwargs=opts.architecture_kwargs, **check)
            elif fmt == "torchscript":
                w = write_torchscript(module, staging, trace_case=trace_case, **check)
            else:
                w = write_onnx(module, staging, trace_case=trace_case, input_names=ids, output_names=oids,
                               dynamic_axes=_dynamic_axes(probe, ids, oids), opset=opts.opset, **check)
        except ExportError as e:
            if fmt == "pytorch_state_dict" and not opts.explicit:
                # TorchScript and ONNX need no Python code: the package still runs everywhere but in BiaPy
                written.notes.append(f"pytorch_state_dict weights left out: {e}")
                written.left_out[fmt] = str(e)
                continue
            raise
        if w.fields.get("note"):
            written.notes.append(w.fields.pop("note"))
        written.files.append(w)
        written.timings[f"weights:{fmt}"] = time.perf_counter() - t
    if not written.files:
        raise ExportError("no weights format could be written")
    return written


def _dynamic_axes(probe: ProbeResult, ids: Sequence[str], oids: Sequence[str]) -> dict[str, dict[int, str]]:
    """ONNX dynamic axes: batch, and every axis whose size is not fixed."""
    dyn: dict[str, dict[int, str]] = {}
    for tid in ids:
        info = probe.inputs[tid]
        dyn[tid] = {d: f"{tid}_{a}" for d, a in enumerate(info.axes)
                    if a == "b" or (a in SPATIAL_LETTERS and not info.sizes[a].fixed)}
    for oid in oids:
        info = probe.outputs[oid]
        dyn[oid] = {d: f"{oid}_{a}" for d, a in enumerate(info.axes)
                    if a == "b" or info.sizes[a].reference is not None}
    return dyn


def check_cases(probe: ProbeResult, ids: Sequence[str], axes: Mapping[str, str],
                test_inputs: Mapping[str, np.ndarray]) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """Random float32 network inputs at sizes n=0,1,2, anisotropic, batch 2; plus one trace case."""
    rng = np.random.default_rng(1)

    def make(ns: Mapping[str, int], batch: int) -> list[np.ndarray]:
        arrays = []
        for tid in ids:
            shape = []
            info = probe.inputs[tid]
            for d, a in enumerate(axes[tid]):
                if a == "b":
                    shape.append(batch)
                elif a in SPATIAL_LETTERS:
                    s = info.sizes[a]
                    if s.reference is not None:
                        s = probe.inputs[s.reference[0]].sizes[s.reference[1]]
                    shape.append(s.min + ns.get(a, 0) * s.step)
                else:
                    shape.append(test_inputs[tid].shape[d])
            arrays.append(rng.standard_normal(shape).astype(np.float32))
        return arrays

    letters = [a for a in dict.fromkeys(a for tid in ids for a in axes[tid] if a in SPATIAL_LETTERS)]
    has_batch = any("b" in axes[t] for t in ids)
    cases = [make({a: 0 for a in letters}, 1), make({a: 1 for a in letters}, 1), make({a: 2 for a in letters}, 1)]
    if len(letters) > 1:
        cases.append(make({a: (0 if i == 0 else 2) for i, a in enumerate(letters)}, 1))
    if has_batch:
        cases.append(make({a: 1 for a in letters}, 2))
    # the test input's own size (values: random, scaled like preprocessed data)
    cases.append([rng.standard_normal(test_inputs[t].shape).astype(np.float32) for t in ids])
    trace = make({a: 1 for a in letters}, 1)
    return cases, trace
