"""Phase 6 of an export, *finish*: the zip written atomically, validated, optionally tested; the result.

:func:`finish_export` writes the built description in its most widely readable
form (:mod:`._serialize`: the oldest 0.5 format that carries it, plain file
references, YAML every reader types alike) to a temporary zip next to
``out``, validates that zip with today's bioimageio.spec (collecting
warnings), optionally runs bioimageio.core's ``test_model`` on it, asks every
consumer tool and reader (:mod:`._verdicts`), and only then moves it to
``out``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..errors import ExportError
from ..validation.format import spec_findings
from ..validation.reproduction import core_reproduction
from ._build import Built
from ._verdicts import tool_verdicts
from ._plan import ExportPlan
from ._probe import ProbeResult
from ._reference import Reference

__all__ = ["ExportResult", "finish_export"]


@dataclass(eq=False)
class ExportResult:
    """What :func:`~bioimgzoo.exporter.export_package` did; ``print(result)`` shows :meth:`summary`.

    It also stands for the written path (``os.fspath(result)``, ``result.exists()``, ``result == path``),
    so code that used the returned path keeps working.
    """

    path: Path
    probe: ProbeResult
    weights_formats: list[str]
    reproducibility: list[dict]
    deepimagej: list
    spec_warnings: list[str] = field(default_factory=list)
    core_test: dict | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: every consumer tool's verdict, read from the written zip: ``{tool, status, failed_rules, reasons}``
    verdicts: list[dict] = field(default_factory=list)
    #: formats that were asked for but not written, with the reason
    left_out: dict[str, str] = field(default_factory=dict)
    #: the package's test tensors: file name -> shape
    test_tensors: dict[str, tuple] = field(default_factory=dict)
    #: what a zoo reviewer will flag (untrained module, no maintainers, placeholder text)
    warnings: list[str] = field(default_factory=list)
    #: the format version written, and the fields that need it
    format_version: str = ""
    format_reasons: list[str] = field(default_factory=list)
    #: the deployed readers' verdicts on the written package: ``{reader, title, version, status, message,
    #: field}`` (see :mod:`bioimgzoo.validation.consumers.readers`)
    readers: list[dict] = field(default_factory=list)

    # -- the path
    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExportResult):
            return self.path == other.path
        if isinstance(other, (str, os.PathLike)):
            return self.path == Path(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    def __getattr__(self, name: str):  # Path's methods and properties (exists, name, stat, ...)
        if name.startswith("__") or name == "path":
            raise AttributeError(name)
        return getattr(self.path, name)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"ExportResult(path={str(self.path)!r}, weights={self.weights_formats})"

    @property
    def tools_that_cannot_run_it(self) -> list[str]:
        """Consumer tools predicted to fail on the package (each with the rules in :attr:`verdicts`)."""
        return [v["tool"] for v in self.verdicts if v["status"] == "failed"]

    def summary(self) -> str:
        """What was written and checked: weights and tolerances, sizes, halo, test tensors, tool verdicts."""
        from ..validation.consumers import TOOL_TITLES

        lines = [f"wrote {self.path}", "", "weights (each checked against the module):"]
        for r in self.reproducibility:
            lines.append(f"  {r['format']:<19} max |difference| {r['max_abs_diff']:.3g} within "
                         f"{r['atol']:.3g} + {r['rtol']:.3g} * |expected|")
        for fmt, why in self.left_out.items():
            lines.append(f"  {fmt:<19} NOT written: {why}")
        lines += ["", "tensors:"]
        for t in self.probe.inputs.values():
            sizes = ", ".join(f"{a}: {s.describe()}" for a, s in t.sizes.items())
            lines.append(f"  input  {t.id}: axes {t.axes}, {t.channels or 1} channel(s), {t.dtype}; valid sizes "
                         f"{sizes or 'fixed'}")
        for t in self.probe.outputs.values():
            rel = ", ".join(f"{a}: {i.describe()}" for a, i in t.sizes.items() if i.kind not in ("batch", "channel"))
            halo = "" if any(i.halo for i in t.sizes.values()) or not rel else " (no halo)"
            lines.append(f"  output {t.id}: axes {t.axes}, {t.channels or 1} channel(s); {rel or 'no spatial axes'}"
                         f"{halo}")
        if self.test_tensors:
            lines.append("  test tensors: " + ", ".join(f"{n} {tuple(s)}" for n, s in self.test_tensors.items()))
        if self.format_version:
            lines.append(f"  format {self.format_version}" + (f" (needed by {', '.join(self.format_reasons)})"
                                                             if self.format_reasons else " (the oldest bioimgzoo "
                                                             "writes: what most readers read)"))
        lines += ["", "consumer tools (predicted from the written package):"]
        for v in self.verdicts:
            name = TOOL_TITLES.get(v["tool"], v["tool"])
            text = v["status"]
            if v["failed_rules"]:
                text += ": " + ", ".join(f"{r} ({v['reasons'][r][:90]})" if v.get("reasons", {}).get(r) else r
                                         for r in v["failed_rules"])
            if v.get("note"):
                text += f" {v['note']}"
            lines.append(f"  {name:<12} {text}")
        if self.readers:
            lines += ["", "readers (the versions consumers deploy, run on the written package):"]
            for r in self.readers:
                text = r["status"] + (f": {r['message'][:200]}" if r["status"] != "passed" else "")
                lines.append(f"  {r['title']} ({r['version']}): {text}")
        lines.append("  bioimageio.spec: " + ("valid, no warnings" if not self.spec_warnings else
                                              f"valid, {len(self.spec_warnings)} warning(s)"))
        lines += [f"    - {w}" for w in self.spec_warnings]
        if self.core_test is not None:
            lines.append(f"  bioimageio.core test_model: {self.core_test.get('status')}")
        if self.warnings:
            lines += ["", "a reviewer will flag:"] + [f"  ! {w}" for w in self.warnings]
        notes = [n for n in self.notes if not n.startswith("spec warning:")]
        if notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in notes]
        total = self.timings.get("total")
        lines += ["", f"path: {self.path}" + (f"  ({total:.1f} s)" if total else "")]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "probe": self.probe.to_dict(), "weights_formats": self.weights_formats,
                "reproducibility": self.reproducibility, "left_out": self.left_out,
                "verdicts": self.verdicts, "test_tensors": {k: list(v) for k, v in self.test_tensors.items()},
                "warnings": self.warnings,
                "deepimagej": [r.to_dict() for r in self.deepimagej], "spec_warnings": self.spec_warnings,
                "core_test": self.core_test, "notes": self.notes, "timings": self.timings,
                "format_version": self.format_version, "format_reasons": self.format_reasons,
                "readers": self.readers}


def finish_export(plan: ExportPlan, ref: Reference, built: Built) -> ExportResult:
    """Write ``built`` to ``plan.out`` (atomically, after every check).

    The result's notes are the spec's warnings, its timings those of this phase.
    """
    from ._serialize import package_content, write_package_zip

    timings: dict[str, float] = {}
    t = time.perf_counter()
    core = None
    content = package_content(built.descr, format_version=plan.format_version)
    with atomic_path(plan.out) as tmp_zip:
        write_package_zip(content, tmp_zip)
        # today's bioimageio.spec reads the older form back (the old readers: tool_verdicts below)
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
        t = time.perf_counter()
        verdicts, verdict_note, readers = tool_verdicts(tmp_zip)
        timings["consumer_checks"] = time.perf_counter() - t
    notes = [f"spec warning: {w}" for w in warnings_] + ([verdict_note] if verdict_note else [])
    tensors = {p.name: tuple(np.load(p, mmap_mode="r").shape) for k, p in built.files.items() if k.startswith("test:")}
    return ExportResult(path=plan.out, probe=built.contents.probe,
                        weights_formats=[w.format for w in built.contents.weights],
                        reproducibility=ref.reproducibility, deepimagej=built.deepimagej, spec_warnings=warnings_,
                        core_test=core, notes=notes, timings=timings, verdicts=verdicts,
                        left_out=dict(built.contents.weights_left_out), test_tensors=tensors,
                        format_version=content.format_version, format_reasons=content.format_reasons,
                        readers=readers)
