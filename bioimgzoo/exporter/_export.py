"""Export a PyTorch module as a bioimage.io model package (format 0.5, zip).

An export runs six phases, each a function with typed input and output; each can
fail with one :class:`~bioimgzoo.errors.ExportError` naming what failed and the
fix, and nothing is written at ``out`` unless all pass:

=================  ==============================================================  =====================
phase              what it does                                                    output
=================  ==============================================================  =====================
plan               options and model card resolved and checked (names, axes,      :class:`ExportPlan`
                   processing, weights formats, tolerance, metadata)
                   (``_plan``)
probe              run the module on the example (rejected input, NaN,            :class:`Probed`
                   determinism); probe valid sizes, output relations, halo,
                   channels; fit the example to a valid size (``_probing``)
weights            write each weights format, checked against the module on       :class:`WrittenWeights`
                   several input sizes (``_write_weights``)
reference outputs  the declared pipeline (bioimageio.core's machinery) on the     :class:`Reference`
                   test input gives the test outputs; tolerances; every format
                   checked through the same pipeline (``_reference``)
build              test/sample tensors, cover, README; the description built      :class:`Built`
                   with bioimageio.spec classes; DeepImageJ rules (``_build``)
finish             the zip saved atomically, validated, optionally tested with    :class:`ExportResult`
                   bioimageio.core's ``test_model``; every consumer tool's
                   verdict read from the zip (``_finish``, ``_verdicts``)
=================  ==============================================================  =====================
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import BioimgzooError, ExportError
from ._build import Built, build_package, github_users_trusted
from ._finish import ExportResult, finish_export
from ._plan import EXPORT_OPTIONS, ExportPlan, plan_export
from ._probe import ModuleRunner
from ._probing import Probed, probe_phase
from ._reference import Reference, reference_outputs
from ._write_weights import WrittenWeights, write_weights

__all__ = ["export_package", "ExportResult", "EXPORT_OPTIONS",
           # the phases' outputs, for readers of the code
           "ExportPlan", "Probed", "WrittenWeights", "Reference", "Built", "Progress"]

log = logging.getLogger("bioimgzoo.exporter")


def export_package(module: Any, example_input: Any, out: Any, *, name: str | None = None,
                   description: str | None = None, authors: Any = None, license: str | None = None,
                   axes: Any = "bcyx", preprocessing: Any = None, postprocessing: Any = None, card: Any = None,
                   **overrides: Any) -> ExportResult:
    """Export ``module`` as a zoo package at ``out`` and report what was done (see :func:`export_model`)."""
    t_all = time.perf_counter()
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise ExportError("exporting needs PyTorch: pip install torch") from e
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    progress = overrides.pop("progress", None)
    plan = plan_export(example_input, out, name=name, description=description, authors=authors, license=license,
                       axes=axes, preprocessing=preprocessing, postprocessing=postprocessing, card=card,
                       overrides=overrides)
    try:
        with _in_eval_on_cpu(module), tempfile.TemporaryDirectory(prefix="bioimgzoo-export-") as tmp, \
                Progress(progress) as steps:
            result = _run_phases(plan, module, Path(tmp), steps)
    except BioimgzooError:
        raise
    except Exception as e:  # a foreign library failed somewhere unforeseen: still one clear message
        raise ExportError(f"export failed unexpectedly ({type(e).__name__}: {e}); nothing was written at "
                          f"{plan.out}. Run with --debug (CLI) or look at the chained traceback, and report it if "
                          "the module and example are fine") from e
    result.timings["total"] = time.perf_counter() - t_all
    log.info("exported %s in %.1f s\n%s", plan.out, result.timings["total"], result.probe.summary())
    for w in result.warnings:
        log.warning("%s", w)
    return result


def _run_phases(plan: ExportPlan, module: Any, staging: Path, steps: "Progress") -> ExportResult:
    """Phases 2 to 6 on an eval-mode, CPU module; files are staged in ``staging``."""
    from ._verdicts import normalisation_warnings, reviewer_warnings

    warnings = reviewer_warnings(module=module, meta=plan.meta, card=plan.card)
    warnings += normalisation_warnings(plan.inputs, plan.preprocessing)
    runner = ModuleRunner(module, plan.input_ids)
    steps.step("probing valid sizes, output relations and halo")
    probed = probe_phase(plan, module, runner)
    t = time.perf_counter()
    steps.step("writing and checking " + ", ".join(plan.weights.formats))
    weights = write_weights(plan, probed, module, runner, staging)
    weights.timings["weights"] = time.perf_counter() - t
    steps.step("making the test tensors with the declared pipeline")
    ref = reference_outputs(plan, probed, weights, runner, staging)
    notes = plan.notes + probed.notes + weights.notes + ref.notes
    with github_users_trusted(plan.meta, notes):
        t = time.perf_counter()
        steps.step("building and validating the package")
        built = build_package(plan, ref, staging)
        build_time = {"package_files": time.perf_counter() - t}
        steps.step("writing the zip; checking it for every consumer tool")
        result = finish_export(plan, ref, built)
    result.warnings = warnings + result.warnings
    result.notes = notes + result.notes
    result.timings = {**probed.timings, **weights.timings, **ref.timings, **build_time, **result.timings}
    return result


class Progress:
    """The export's slow steps as one line of the runtime's :class:`~bioimgzoo.runtime.progress.Progress`.

    Shown when ``enabled`` is True, or when it is None (the default) and stderr is a terminal; nothing is
    printed otherwise (scripts, tests, pipes).
    """

    def __init__(self, enabled: bool | None):
        from ..runtime.progress import Progress as Lines

        self.lines = Lines(enabled=enabled)
        self.enabled = self.lines.enabled
        self._line = self.lines.task("export: planning", total=None)

    def __enter__(self) -> "Progress":
        self.lines.start()
        return self

    def step(self, text: str) -> None:
        self._line.describe(f"export: {text}")

    def __exit__(self, *exc: Any) -> None:
        self.lines.close()


@contextlib.contextmanager
def _in_eval_on_cpu(module: Any) -> Iterator[None]:
    """The module in eval mode on the CPU inside the block; its mode and device are restored afterwards."""
    was_training = module.training
    devices = {t.device for t in list(module.parameters()) + list(module.buffers())}
    if len(devices) > 1:
        raise ExportError(f"the module's parameters are on several devices ({sorted(map(str, devices))}): "
                          "move it to one device (module.to('cpu')) before exporting")
    moved_from = next(iter(devices)) if len(devices) == 1 and next(iter(devices)).type != "cpu" else None
    module.eval()
    if moved_from is not None:  # export runs on the CPU; the module goes back where it was afterwards
        module.to("cpu")
    try:
        yield
    finally:
        module.train(was_training)
        if moved_from is not None:
            module.to(moved_from)
