"""Reproduction checks: does a package reproduce its own test outputs, per weight format.

``reproduction.runtime`` runs the test inputs through bioimgzoo's own runtime
(:func:`bioimgzoo.load` / :meth:`~bioimgzoo.runtime.model.Model.predict`), one
model per weight format, loaded once and shared with the agreement checks, and
compares each output with its test tensor: mismatched elements per million,
largest absolute and relative error, against the tolerance the package
declares (``config.bioimageio.reproducibility_tolerance``, legacy
``test_kwargs``) or the zoo's default.  Integer outputs (label maps) are
compared up to a relabelling.  The produced outputs and the differences are
kept for the reports.  ``reproduction.core`` (only with ``reference="core"``)
also runs bioimageio.core's ``test_model`` and reports where the two consumers
disagree.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..descr.tolerance import Tolerance, compare_outputs, tolerance_for  # noqa: F401  (Tolerance: public here too)
from ._registry import FAILED, PASSED, SKIPPED, STAGE_RUN, Finding, register_family

__all__ = ["core_reproduction", "TESTABLE_FORMATS", "Tolerance", "tolerance_for", "compare_outputs",
           "load_model", "test_tensors", "runtime_outputs", "formats_to_run", "SharedRuns", "fresh_runs"]

#: weight formats bioimageio.core can run here
TESTABLE_FORMATS = ("pytorch_state_dict", "torchscript", "onnx", "tensorflow_saved_model_bundle", "keras_hdf5",
                    "keras_v3")


def _markdown(findings: Sequence[Finding]) -> list[str]:
    from .._text import markdown_safe

    lines = ["| check | weights | status | seconds | detail |", "|---|---|---|---|---|"]
    for f in findings:
        d = f.details
        if "weights_format" not in d:  # the check did not run at all: say why
            lines.append(f"| {f.check} | - | {f.status} | - | {markdown_safe(f.message, table_cell=True)} |")
            continue
        detail = markdown_safe(("; ".join(d.get("errors") or []) or f.message)[:300], table_cell=True)
        lines.append(f"| {f.check} | {d['weights_format']} | {f.status} | {d.get('seconds', 0):.1f} | {detail} |")
    return lines


FAMILY = register_family("reproduction", "Reproduction of the test outputs", order=30, render_markdown=_markdown)


def core_reproduction(path: Path, weights_format: str | None = None) -> dict:
    """bioimageio.core's ``test_model`` on the package at ``path`` (one weight format, or all).

    Parameters
    ----------
    path : Path
        The package's rdf.yaml, folder or zip.
    weights_format : str, optional
        Test only these weights (default: all).

    Returns
    -------
    dict
        ``{"status": "passed" | "failed", "errors": [...], "seconds": float}``.
        Callers make sure the package names no code they do not trust (:mod:`bioimgzoo.trust`).
    """
    from bioimageio.core import test_model

    t = time.perf_counter()
    try:
        summary = test_model(path, weight_format=weights_format)
    except Exception as e:  # core raises for some broken packages instead of reporting
        return {"status": "failed", "errors": [f"{type(e).__name__}: {e}"], "seconds": time.perf_counter() - t}
    errors = [f"{d.name}: {e.msg}".strip() for d in summary.details if d.status == "failed" for e in d.errors]
    return {"status": "passed" if summary.status == "passed" else "failed", "errors": errors[:10],
            "seconds": time.perf_counter() - t}


# ------------------------------------------------------------------------------------------- our runtime

class SharedRuns:
    """One weight format's engine as the checks of a validation run share it.

    A network run on the very same input (shape, type and bytes) is run once and
    its outputs handed to every check that asks (reproduction's outputs feed the
    agreement checks and the consumer tools' simulations whenever their network
    input is the same); :func:`fresh_runs` runs the network again (determinism
    compares two real runs).  ``first_inputs``: the network input of the first
    run (the test input, as reproduction feeds it).
    """

    #: outputs kept (the runs of one package's checks: a few, each a test tensor's size)
    MAX_KEPT = 32

    def __init__(self, engine: Any):
        self.inner = engine
        self.runs: dict[tuple, list[np.ndarray]] = {}
        self.first_inputs: list[np.ndarray] | None = None
        self.fresh = False
        self.hits = 0

    def __getattr__(self, name: str) -> Any:  # format, device, session, ...: the engine's own
        return getattr(self.inner, name)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import hashlib

        arrays = [np.ascontiguousarray(a) for a in inputs]
        if self.first_inputs is None:
            self.first_inputs = [a.copy() for a in arrays]
        if self.fresh:
            return self.inner.run(arrays)
        key = tuple((a.shape, a.dtype.str, hashlib.blake2b(memoryview(a).cast("B"), digest_size=16).digest())
                    for a in arrays)
        kept = self.runs.get(key)
        if kept is not None:
            self.hits += 1
            return [o.copy() for o in kept]
        out = [np.asarray(o) for o in self.inner.run(arrays)]
        if len(self.runs) < self.MAX_KEPT:
            self.runs[key] = [o.copy() for o in out]
        return out


class fresh_runs:
    """``with fresh_runs(model):`` the model's network really runs again (no shared outputs)."""

    def __init__(self, model: Any):
        self.engine = model.engine if isinstance(model.engine, SharedRuns) else None

    def __enter__(self) -> "fresh_runs":
        if self.engine is not None:
            self.engine.fresh = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.engine is not None:
            self.engine.fresh = False


def load_model(ctx: Any, weights_format: str) -> Any:
    """The package's model for one weight format, loaded once per validation run (on the CPU).

    Its engine is wrapped in :class:`SharedRuns`: every check of the run (and the consumer tools'
    simulations) uses this one load, and the same network input is run once.  Raises whatever
    :func:`bioimgzoo.load` raises (callers have applied the trust rule; the runtime applies it again).
    """
    def make() -> Any:
        from ..runtime.model import Model

        model = Model.load(ctx.pkg, weights=weights_format, device="cpu", trust_code=ctx.trust_code)
        model.engine = SharedRuns(model.engine)
        return model

    return ctx.scratch(f"model.{weights_format}", make)


def test_tensors(ctx: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]]:
    """The package's test inputs and outputs by tensor id, and each tensor's axis ids (read once)."""
    def make() -> tuple:
        from ..descr.tensors import tensor_specs

        ins, outs = tensor_specs(ctx.pkg.descr)
        axes = {t.id: list(t.axis_ids) for t in ins + outs}
        arrays: list[dict[str, np.ndarray]] = [{}, {}]
        for k, tensors in enumerate((ctx.pkg.descr.inputs, ctx.pkg.descr.outputs)):
            for t in tensors:
                # allow_pickle=False: a test tensor is data; an object array would be code
                arrays[k][str(t.id)] = np.load(ctx.pkg.file(t.test_tensor), allow_pickle=False)
        return arrays[0], arrays[1], axes

    return ctx.scratch("test_tensors", make)


def predict_outputs(model: Any, inputs: dict[str, np.ndarray], axes: dict[str, list[str]], **options: Any
                    ) -> dict[str, np.ndarray]:
    """Run ``inputs`` (laid out as the model's input axes) through ``model``; outputs by id, model layout."""
    result = model.predict(dict(inputs), axes={k: axes[k] for k in inputs}, **options)
    if isinstance(result, dict):
        return {str(k): np.asarray(v) for k, v in result.items()}
    return {model.outputs[0].id: np.asarray(result)}


def runtime_outputs(ctx: Any, weights_format: str) -> dict[str, np.ndarray]:
    """The outputs our runtime gives for the test inputs with one weight format (computed once)."""
    def make() -> dict:
        inputs, _, axes = test_tensors(ctx)
        return predict_outputs(load_model(ctx, weights_format), inputs, axes)

    return ctx.scratch(f"outputs.{weights_format}", make)


def is_label_output(ctx: Any, output_id: str, expected: np.ndarray) -> bool:
    """Integer outputs are label maps (declared integer type, or an integer test tensor)."""
    from ..descr.tensors import tensor_specs

    _, outs = tensor_specs(ctx.pkg.descr)
    declared = next((t.dtype for t in outs if t.id == output_id), "float32")
    return declared.startswith(("int", "uint", "bool")) or np.issubdtype(expected.dtype, np.integer) \
        or expected.dtype == np.bool_


def formats_to_run(ctx: Any) -> tuple[list[str], list[tuple]]:
    """Weight formats our runtime runs in this validation, and a verdict for each one it does not."""
    from .. import trust
    from ..descr.weights import present_formats, runnable_formats

    available = present_formats(ctx.pkg.descr)
    runnable = set(runnable_formats(ctx.pkg.descr))
    run, others = [], []
    broken = ctx.broken_weights()
    for wf in ctx.weights or available:
        if wf not in available:
            others.append(_verdict(FAILED, wf, [f"the package has no {wf} weights"]))
            continue
        if wf in broken:  # missing or damaged: this format fails, the others are still tested
            others.append(_verdict(FAILED, wf, [f"its weights file cannot be used: {broken[wf]}"],
                                   details={"fix": f"Add the {wf} weights file the package names (or correct its "
                                                   "path and sha256 in rdf.yaml), or remove the entry; the "
                                                   "other weight formats were tested"}))
            continue
        # the one trust policy: code the package names runs only when trusted, whoever asks
        refused = trust.untrusted_code(ctx.pkg.descr, trust_code=ctx.trust_code, weights_format=wf)
        if refused:
            others.append(_verdict(SKIPPED, wf, [trust.refusal_message(r, what="testing these weights")
                                                 for r in refused]))
        elif wf not in runnable:
            others.append(_verdict(SKIPPED, wf, [f"bioimgzoo's runtime does not run {wf} weights"]))
        else:
            run.append(wf)
    return run, others


@FAMILY.check("runtime", title="test outputs reproduced by bioimgzoo's runtime", stage=STAGE_RUN,
              requires=("package", "files", "valid"),
              fix="Regenerate the test outputs with these weights (or fix the weights / processing), and declare "
                  "a tolerance in config.bioimageio.reproducibility_tolerance if outputs differ by rounding only.")
def _runtime(ctx: Any) -> Iterator[tuple]:
    """One verdict per weight format; per output the error figures against the tolerance."""
    if not [wf for wf, w in ctx.pkg.descr.weights if w is not None] and not ctx.weights:
        yield FAILED, "the package has no weights to test"  # nothing reproduced is not a pass
        return
    run, others = formats_to_run(ctx)
    yield from others
    if not run:
        return
    inputs, expected, axes = test_tensors(ctx)
    for tid, arr in inputs.items():
        ctx.artifacts.setdefault(f"input/{tid}", arr)
    for tid, arr in expected.items():
        ctx.artifacts.setdefault(f"expected/{tid}", arr)
    for wf, (produced, seconds) in zip(run, _outputs_of_each(ctx, run)):
        if isinstance(produced, BaseException):  # a model that does not load or run fails here, with the reason
            e = produced
            yield _verdict(FAILED, wf, [f"prediction failed: {type(e).__name__}: {e}"], seconds)
            continue
        errors, per_output = [], {}
        for oid, exp in expected.items():
            got = produced.get(oid)
            if got is None:
                errors.append(f"{oid}: the model gave no such output")
                continue
            cmp = compare_outputs(got, exp, tolerance_for(ctx.pkg, wf, oid), labels=is_label_output(ctx, oid, exp))
            diff = cmp.pop("difference")
            per_output[oid] = cmp
            ctx.artifacts[f"produced/{wf}/{oid}"] = got
            if diff is not None:
                ctx.artifacts[f"difference/{wf}/{oid}"] = diff
            if not cmp["passed"]:
                errors.append(_mismatch_text(oid, cmp))
        details = {"outputs": per_output}
        if errors:
            yield _verdict(FAILED, wf, errors, seconds, details)
        else:
            worst = max((c["max_abs"] for c in per_output.values()), default=0.0)
            yield _verdict(PASSED, wf, [], seconds, details,
                           message=f"{wf} reproduces the test outputs (max abs error {worst:.3g})")


def _outputs_of_each(ctx: Any, formats: list[str]) -> list[tuple[Any, float]]:
    """Each format's outputs for the test inputs (or the exception), with seconds.

    (Side by side in threads was measured no faster on 2 cores: onnxruntime already uses every
    core, and torch's import holds the interpreter.)
    """
    out = []
    for wf in formats:
        t = time.perf_counter()
        try:
            out.append((runtime_outputs(ctx, wf), time.perf_counter() - t))
        except Exception as e:  # reported by the caller as this format's failure
            out.append((e, time.perf_counter() - t))
    return out


def _mismatch_text(oid: str, cmp: dict) -> str:
    if cmp["compared_as"] == "shape":
        return f"{oid}: shape {tuple(cmp['shape'])} where the test output has {tuple(cmp['expected_shape'])}"
    tol = cmp["tolerance"]
    what = "labels differ beyond a relabelling" if cmp["compared_as"] == "labels" else \
        f"max abs error {cmp['max_abs']:.3g}, max rel error {cmp['max_rel']:.3g}"
    return (f"{oid}: {cmp['mismatched_per_million']:.0f} mismatched elements per million ({what}); allowed "
            f"{tol['mismatched_per_million']:g} per million at atol {tol['atol']:g}, rtol {tol['rtol']:g} "
            f"({tol['source']})")


def _verdict(status: str, wf: str, errors: list[str], seconds: float = 0.0, details: dict | None = None, *,
             message: str = "") -> tuple:
    # every line names its weight format: two formats failing alike are two failures, not one printed twice
    message = message or (f"{wf}: " + "; ".join(errors) if errors else f"{wf} reproduces the test outputs")
    return status, message, {"weights_format": wf, "errors": list(errors), "seconds": round(seconds, 3),
                             **(details or {})}


# ------------------------------------------------------------------------------------------- bioimageio.core

@FAMILY.check("core", title="test outputs reproduced by bioimageio.core (reference consumer)", stage=STAGE_RUN,
              requires=("package", "files", "valid"),
              fix="Where the two consumers disagree, run the weights in both and compare their outputs; a "
                  "failure in core alone usually means a processing step the two implement differently.")
def _core(ctx: Any) -> Iterator[tuple]:
    """One verdict per weights format, and whether it agrees with our runtime's."""
    from .. import trust

    available = [wf for wf, w in ctx.pkg.descr.weights if w is not None]
    if not available and not ctx.weights:
        yield FAILED, "the package has no weights to test"
        return
    ours = {f.details.get("weights_format"): f.status for f in ctx.findings if f.check == "reproduction.runtime"}
    for wf in ctx.weights or available:
        if wf not in available:
            yield _verdict(FAILED, wf, [f"the package has no {wf} weights"])
            continue
        # bioimageio.core imports and calls whatever the description names: it gets only
        # descriptions whose code our one trust policy lets run
        refused = trust.untrusted_code(ctx.pkg.descr, trust_code=ctx.trust_code, weights_format=wf)
        if refused:
            yield _verdict(SKIPPED, wf, [trust.refusal_message(r, what="testing these weights") for r in refused])
            continue
        if wf not in TESTABLE_FORMATS:
            yield _verdict(SKIPPED, wf, ["not testable here"])
            continue
        r = core_reproduction(ctx.local, wf)
        status = PASSED if r["status"] == "passed" else FAILED
        errors = list(r.get("errors") or [])
        mine = ours.get(wf)
        agree = mine is None or mine == status
        if not agree:
            errors.append(f"bioimgzoo's runtime says {mine}, bioimageio.core says {status}: the two consumers "
                          "disagree")
            status = FAILED
        yield _verdict(status, wf, errors, r["seconds"], {"core": r["status"], "runtime": mine,
                                                          "consumers_agree": agree})
