"""Phase 4 of an export, *reference outputs*: the test outputs, made by the packaged pipeline.

:func:`reference_outputs` runs the declared pipeline (preprocessing, module,
postprocessing; bioimageio.core's own machinery, see :mod:`._pipeline`) on
the test input, checks the result for NaN and determinism, declares output
data types the spec does not allow as ``ensure_dtype`` postprocessing, sets
the reproducibility tolerance per output and checks every weights format
through the same pipeline against it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ._describe import Contents, describe
from ._pipeline import PipelineRunner
from ..descr.tolerance import Tolerance, compare_outputs
from ..descr.weights import RUN_ORDER
from ._plan import ExportPlan, ToleranceOption, ensure_dtype
from ._probe import ModuleRunner
from ._probing import Probed
from ._write_weights import WrittenWeights

__all__ = ["Reference", "reference_outputs"]

_ALLOWED_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64"}


@dataclass
class Reference:
    """Phase 4's output: the test tensors and the contents they were made with."""

    test_inputs: dict[str, np.ndarray]
    test_outputs: dict[str, np.ndarray]
    #: the contents with output dtypes, added ``ensure_dtype`` steps and tolerances
    contents: Contents
    #: per weights format: {format, max_abs_diff, rtol, atol}
    reproducibility: list[dict]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def reference_outputs(plan: ExportPlan, probed: Probed, weights: WrittenWeights, runner: ModuleRunner,
                      staging: Path) -> Reference:
    """Test outputs through the declared pipeline, tolerances, and every format checked against them."""
    t = time.perf_counter()
    contents = Contents.first(plan, probed, weights.files, weights.left_out)
    test_inputs = probed.test_inputs
    contents, test_outputs, pipe = _pipeline_outputs(contents, test_inputs, runner, staging)
    timings = {"test_tensors": time.perf_counter() - t}

    t = time.perf_counter()
    notes: list[str] = []
    rtol = plan.tolerance.relative
    atols, tolerances = {}, []
    for oid in contents.output_ids:
        atol, capped, declarable = _atol(plan.tolerance, oid, test_outputs[oid], notes)
        atols[oid] = atol
        if not declarable:
            continue
        # zero mismatches were checked here; when the cap lowered the absolute tolerance, values
        # near zero may flip on other hardware: allow the spec's default 100 per million there
        tolerances.append({"relative_tolerance": rtol, "absolute_tolerance": atol,
                           "mismatched_elements_per_million": 100 if capped else 0, "output_ids": [oid],
                           "weights_formats": weights.formats})
    contents = replace(contents, tolerances=tolerances)
    declared = {t["output_ids"][0]: t["mismatched_elements_per_million"] for t in tolerances}
    tols = {oid: Tolerance(rtol, atols[oid], float(declared.get(oid, 0)), "declared") for oid in atols}
    repro, outputs = [], {}
    for w in weights.files:
        worst, outputs[w.format] = _check_format(w, pipe.descr, test_inputs, test_outputs, tols)
        # network-level check over several sizes (done while writing): compare raw outputs too
        for case in weights.cases[:3]:
            for a, b in zip(w.runner(case), runner(case)):
                worst = max(worst, float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()))
        repro.append({"format": w.format, "max_abs_diff": worst, "rtol": rtol,
                      "atol": max(atols.values()) if atols else 0.0})
    _formats_agree(outputs, tols)
    pipe.close()
    timings["check"] = time.perf_counter() - t
    return Reference(test_inputs=dict(test_inputs), test_outputs=test_outputs, contents=contents,
                     reproducibility=repro, notes=notes, timings=timings)


def _pipeline_outputs(contents: Contents, test_inputs: dict, runner: ModuleRunner,
                      staging: Path) -> tuple[Contents, dict[str, np.ndarray], PipelineRunner]:
    """Run the pipeline twice on the test input; a dtype the spec does not allow gets ``ensure_dtype`` and a
    second round.  Returns (contents with the output dtypes, test outputs, the pipeline, still open)."""
    for attempt in range(2):
        pipe = PipelineRunner(describe(contents, None, root=staging, io_checks=False), runner)
        try:
            test_outputs = pipe(test_inputs)
            again = pipe(test_inputs)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"running the declared pipeline (preprocessing, module, postprocessing) on the test "
                              f"input failed: {type(e).__name__}: {e}") from e
        for oid in contents.output_ids:
            arr = test_outputs[oid]
            if not np.isfinite(arr.astype(np.float64)).all():
                raise ExportError(f"the module returns NaN or infinite values for output {oid!r} on the "
                                  "(preprocessed) example: fix the module or its preprocessing")
            if arr.shape != again[oid].shape or not np.array_equal(arr, again[oid]):
                raise ExportError(f"the pipeline is not deterministic: output {oid!r} differs between two runs "
                                  "on the same input; remove randomness from forward()")
        retry = False
        for oid in contents.output_ids:
            dt = str(test_outputs[oid].dtype)
            if dt in _ALLOWED_DTYPES:
                contents.dtypes[oid] = dt
                continue
            target = "uint8" if dt == "bool" else "float32"
            contents.postprocessing[oid].append(ensure_dtype(target))
            contents.dtypes[oid] = target
            retry = True
        if not retry or attempt == 1:
            break
        pipe.close()
    return contents, test_outputs, pipe


#: bioimageio.spec's default absolute tolerance (``ReproducibilityTolerance``; formats 0.5.7 on), used by consumers
#: for an output that declares none
SPEC_DEFAULT_ATOL = 1e-3


def _atol(tolerance: ToleranceOption, oid: str, expected: np.ndarray, notes: list[str]) -> tuple[float, bool, bool]:
    """The absolute tolerance for one output: (atol, whether it was lowered, whether it can be declared).

    It is capped at 1% of the test output's largest *magnitude* (a negative output keeps a tolerance).
    bioimageio.spec refuses a declared absolute tolerance above 1% of the output's *maximum*; where the
    magnitude cap exceeds that (an output mostly below zero), none is declared for the output, consumers use
    the spec's default, and the checks here use at most that default.
    """
    ref = expected.astype(np.float64)
    wanted = tolerance.atol_for(ref)
    magnitude = float(np.abs(ref).max()) if ref.size else 0.0
    cap = 0.01 * magnitude
    atol = min(wanted, cap)
    if atol < wanted:
        notes.append(f"output {oid!r}: absolute tolerance lowered from {wanted:.3g} to {atol:.3g} (1% of the test "
                     "output's largest magnitude)")
    maximum = float(ref.max()) if ref.size else 0.0
    declarable = atol == 0 or atol <= 0.01 * maximum
    if not declarable:
        used = min(atol, SPEC_DEFAULT_ATOL)
        notes.append(f"output {oid!r}: its maximum is {maximum:.3g} (largest magnitude {magnitude:.3g}); "
                     "bioimageio.spec refuses an absolute tolerance above 1% of the maximum, so none is declared "
                     f"for it and consumers use their default ({SPEC_DEFAULT_ATOL:g}); checked here at {used:.3g}")
        atol = used
    return atol, atol < wanted, declarable


def _check_format(w, descr, test_inputs: dict, test_outputs: dict,
                  tols: dict[str, Tolerance]) -> tuple[float, dict[str, np.ndarray]]:
    """Run ``w`` through the declared pipeline; its outputs must match the test outputs by the zoo's rules and
    the declared tolerance.  Returns the worst absolute difference and the outputs."""
    pipe = PipelineRunner(descr, w.runner)
    try:
        got = pipe(test_inputs)
    except Exception as e:
        raise ExportError(f"{w.format} weights fail in the declared pipeline: {type(e).__name__}: {e}") from e
    worst = 0.0
    for oid, expected in test_outputs.items():
        act = got[oid]
        if act.shape != expected.shape:
            raise ExportError(f"{w.format} weights give output {oid!r} of shape {act.shape}, the module "
                              f"{expected.shape}")
        cmp = compare_outputs(act, expected, tols[oid])
        if not cmp["passed"]:
            raise ExportError(f"{w.format} weights do not reproduce the test output {oid!r}: {cmp['mismatched']} "
                              f"values differ by more than {tols[oid].atol:.3g} + {tols[oid].rtol:.3g} * |expected| "
                              f"(max difference {cmp['max_abs']:.3g}). Fix: loosen tolerance= if this is "
                              "acceptable, or find the operation that converts badly")
        worst = max(worst, cmp["max_abs"])
    pipe.close()
    return worst, got


def _formats_agree(outputs: dict[str, dict[str, np.ndarray]], tols: dict[str, Tolerance]) -> None:
    """Each format against the first as ``bioimgzoo validate`` judges them (agreement.formats): two formats each
    within the tolerance of the module can still be twice as far from each other."""
    formats = sorted(outputs, key=lambda f: RUN_ORDER.index(f) if f in RUN_ORDER else len(RUN_ORDER))
    if len(formats) < 2:
        return
    first = formats[0]
    for wf in formats[1:]:
        for oid, ref in outputs[first].items():
            cmp = compare_outputs(outputs[wf][oid], ref, tols[oid])
            if not cmp["passed"]:
                raise ExportError(f"{wf} and {first} weights disagree on output {oid!r} beyond the declared "
                                  f"tolerance ({cmp['mismatched']} values, max difference {cmp['max_abs']:.3g}), "
                                  "so the package would fail its own validation (agreement.formats). Fix: loosen "
                                  "tolerance=, or leave the format that converts badly out of weights=")
