"""Phase 6 of an export, *finish*: the zip written atomically, validated, optionally tested; the result.

:func:`finish_export` saves the built description with bioimageio.spec's
``save_bioimageio_package`` (which re-validates it) to a temporary file next
to ``out``, validates the zip once more (collecting warnings), optionally runs
bioimageio.core's ``test_model`` on it, and only then moves it to ``out``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .._files import atomic_path
from ..errors import ExportError
from ..validation.format import spec_findings
from ..validation.reproduction import core_reproduction
from ._build import Built
from ._plan import ExportPlan
from ._probe import ProbeResult
from ._reference import Reference

__all__ = ["ExportResult", "finish_export"]


@dataclass
class ExportResult:
    """What :func:`~bioimgzoo.exporter.export_package` did."""

    path: Path
    probe: ProbeResult
    weights_formats: list[str]
    reproducibility: list[dict]
    deepimagej: list
    spec_warnings: list[str] = field(default_factory=list)
    core_test: dict | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        from ..validation.deepimagej import format_results

        lines = [f"wrote {self.path}", "", "probing:", self.probe.summary(), "",
                 f"weights: {', '.join(self.weights_formats)}"]
        for r in self.reproducibility:
            lines.append(f"  {r['format']}: max |difference| {r['max_abs_diff']:.3g} "
                         f"(rtol {r['rtol']:.3g}, atol {r['atol']:.3g})")
        lines += ["", "spec validation: " + ("no warnings" if not self.spec_warnings else
                                             f"{len(self.spec_warnings)} warning(s)")]
        lines += [f"  - {w}" for w in self.spec_warnings]
        if self.core_test is not None:
            lines.append(f"bioimageio.core test_model: {self.core_test.get('status')}")
        lines += ["", "DeepImageJ rules:", format_results(self.deepimagej)]
        if self.notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in self.notes]
        lines.append("")
        lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "probe": self.probe.to_dict(), "weights_formats": self.weights_formats,
                "reproducibility": self.reproducibility,
                "deepimagej": [r.to_dict() for r in self.deepimagej], "spec_warnings": self.spec_warnings,
                "core_test": self.core_test, "notes": self.notes, "timings": self.timings}


def finish_export(plan: ExportPlan, ref: Reference, built: Built) -> ExportResult:
    """Write ``built`` to ``plan.out`` (atomically, after every check).

    The result's notes are the spec's warnings, its timings those of this phase.
    """
    from bioimageio.spec import save_bioimageio_package

    timings: dict[str, float] = {}
    t = time.perf_counter()
    core = None
    with atomic_path(plan.out) as tmp_zip:
        try:
            save_bioimageio_package(built.descr, output_path=tmp_zip)
        except ValueError as e:
            raise ExportError(f"bioimageio.spec refuses the written package: {e}") from e
        errors, warnings_, _ = spec_findings(tmp_zip)
        if errors:
            raise ExportError("the written package does not validate:\n" + "\n".join(f"  - {e}" for e in errors))
        timings["save_validate"] = time.perf_counter() - t
        if plan.core_test:
            t = time.perf_counter()
            core = core_reproduction(tmp_zip)
            timings["core_test"] = time.perf_counter() - t
            if core["status"] != "passed":
                raise ExportError("bioimageio.core test_model fails on the package:\n"
                                  + "\n".join(f"  - {e}" for e in core["errors"]))
    return ExportResult(path=plan.out, probe=built.contents.probe,
                        weights_formats=[w.format for w in built.contents.weights],
                        reproducibility=ref.reproducibility, deepimagej=built.deepimagej, spec_warnings=warnings_,
                        core_test=core, notes=[f"spec warning: {w}" for w in warnings_], timings=timings)
