"""Check a model package: format, reproduction, DeepImageJ compatibility.

:func:`check_package` runs, on any package :func:`bioimgzoo.open_package`
accepts,

1. bioimageio.spec's format validation (errors *and* warnings of severity
   warning or worse; a remote package is first copied to a local folder),
2. bioimageio.core's ``test_model`` per weights format (reproduce the test
   outputs from the test inputs, run parametrized sizes and batch sizes),
3. the static DeepImageJ rules (:mod:`bioimgzoo.validation.deepimagej`),

and returns a :class:`CheckReport` (``.passed``, ``.to_markdown()``,
``.to_dict()``).  Nothing is imported at package import time.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .format import spec_findings
from .reproduction import core_reproduction

__all__ = ["check_package", "CheckReport", "check_deepimagej", "spec_findings", "core_reproduction"]


def check_deepimagej(source: Any, **hub_options: Any):
    """See :func:`bioimgzoo.validation.deepimagej.check_deepimagej`."""
    from .deepimagej import check_deepimagej as _impl

    return _impl(source, **hub_options)


@dataclass
class CheckReport:
    """Results of :func:`check_package`."""

    source: str
    name: str | None = None
    format_errors: list[str] = field(default_factory=list)
    format_warnings: list[str] = field(default_factory=list)
    #: weights format -> {"status": "passed" | "failed" | "skipped", "errors": [...], "seconds": float}
    reproduction: dict[str, dict] = field(default_factory=dict)
    #: list of :class:`~bioimgzoo.validation.deepimagej.RuleResult` (empty when not checked)
    deepimagej: list = field(default_factory=list)
    deepimagej_checked: bool = True
    seconds: float = 0.0

    @property
    def format_valid(self) -> bool:
        return not self.format_errors

    @property
    def reproduces(self) -> bool:
        statuses = [r["status"] for r in self.reproduction.values()]
        return "passed" in statuses and "failed" not in statuses

    @property
    def deepimagej_compatible(self) -> bool:
        return not any(r.status == "fail" for r in self.deepimagej)

    @property
    def passed(self) -> bool:
        """Valid format, every tested weights format reproduces, and (if checked) no failing DeepImageJ rule."""
        return self.format_valid and self.reproduces and (self.deepimagej_compatible or not self.deepimagej_checked)

    def to_dict(self) -> dict:
        return {
            "source": self.source, "name": self.name, "passed": self.passed,
            "format": {"valid": self.format_valid, "errors": list(self.format_errors),
                       "warnings": list(self.format_warnings)},
            "reproduction": {k: dict(v) for k, v in self.reproduction.items()},
            "deepimagej": {"checked": self.deepimagej_checked, "compatible": self.deepimagej_compatible,
                           "rules": [r.to_dict() for r in self.deepimagej]},
            "seconds": round(self.seconds, 2),
        }

    def to_markdown(self) -> str:
        from .._text import markdown_safe
        from .deepimagej import format_results

        # names and messages quote the package's author and the spec: escaped, never raw HTML
        ok = {True: "passed", False: "FAILED"}
        lines = [f"# Check of {markdown_safe(self.name or self.source)}", "",
                 f"Overall: **{ok[self.passed]}**", "",
                 f"## Format (bioimageio.spec): {ok[self.format_valid]}", ""]
        lines += [f"- error: {markdown_safe(e)}" for e in self.format_errors]
        lines += [f"- warning: {markdown_safe(w)}" for w in self.format_warnings]
        if not self.format_errors and not self.format_warnings:
            lines.append("No errors, no warnings.")
        lines += ["", "## Reproduction (bioimageio.core test_model)", "",
                  "| weights | status | seconds | detail |", "|---|---|---|---|"]
        for wf, r in self.reproduction.items():
            detail = markdown_safe("; ".join(r.get("errors") or [])[:300], table_cell=True)
            lines.append(f"| {wf} | {r['status']} | {r.get('seconds', 0):.1f} | {detail} |")
        if self.deepimagej_checked:
            lines += ["", f"## DeepImageJ rules: {'compatible' if self.deepimagej_compatible else 'NOT compatible'}",
                      "", format_results(self.deepimagej, markdown=True)]
        return "\n".join(lines) + "\n"


def _local_copy(pkg: Any, folder: Path) -> Path:
    """Copy a (remote) package's rdf and referenced files into ``folder``; return the rdf path."""
    import shutil

    from .deepimagej import _raw_file_refs

    data, name = pkg.source.read_rdf()
    rdf = folder / name
    rdf.write_bytes(data)
    for _, ref in _raw_file_refs(pkg.raw):
        if "://" in ref:
            continue
        dest = folder / ref
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pkg.source.fetch(ref, sha256=None), dest)
    return rdf


def _files_outside(pkg: Any) -> list[str]:
    """Messages for every file the rdf names outside the package (absolute paths, ``..``, file:// URLs)."""
    from ..errors import PackageError
    from ..package import safe_relpath
    from .deepimagej import _raw_file_refs

    out = []
    for where, ref in _raw_file_refs(pkg.raw):
        if ref.lower().startswith(("http://", "https://")):
            continue
        try:
            if "://" in ref or (len(ref) > 1 and ref[1] == ":"):
                raise PackageError(f"{where} names {ref!r}, which is not a file of the package")
            safe_relpath(ref, where)
        except PackageError as e:
            out.append(f"{e} (refused: validation reads only the package's own files)")
    return out


def check_package(source: Any, *, weights: str | Sequence[str] | None = None, trust_code: bool = False,
                  deepimagej: bool = True, **hub_options: Any) -> CheckReport:
    """Validate a package's format, reproduce its test outputs and check the DeepImageJ rules.

    Parameters
    ----------
    source : str, os.PathLike or Package
        Anything :func:`bioimgzoo.open_package` accepts.
    weights : str or list of str, optional
        Weights formats to test (default: all the package has).
    trust_code : bool
        Weights whose test would run code the package names (an architecture file,
        a library callable, a custom op; see :mod:`bioimgzoo.trust`) are skipped
        unless ``trust_code=True``: bioimageio.core is never handed such a package
        without it.
    deepimagej : bool
        Check the DeepImageJ rules (and count their failures in ``passed``).
    """
    from .. import trust
    from ..errors import InvalidDescriptionError, LimitExceededError
    from ..package import FolderSource, Package, ZipSource, open_package

    t0 = time.perf_counter()
    report = CheckReport(source=str(getattr(source, "name", source)), deepimagej_checked=deepimagej)
    pkg = None
    try:
        pkg = source if isinstance(source, Package) else open_package(source, **hub_options)
        report.name = pkg.name
    except LimitExceededError as e:
        # a bomb is refused here; handing the same file to bioimageio.spec would set it off
        report.format_errors.append(str(e))
        report.seconds = time.perf_counter() - t0
        return report
    except InvalidDescriptionError as e:
        report.format_errors.append(str(e))
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-check-") as tmp:
        local: Path | None = None
        if pkg is not None:
            src = pkg.source
            if isinstance(src, ZipSource):
                local = src.path
            elif isinstance(src, FolderSource):
                local = src.root / src.rdf_name
            else:
                local = _local_copy(pkg, Path(tmp))
        elif isinstance(source, (str, Path)) and Path(source).exists():
            local = Path(source)
        escaping = _files_outside(pkg) if pkg is not None else []
        if escaping:
            # bioimageio.spec and core would read (hash, load) these: refuse before either runs
            report.format_errors.extend(escaping)
            local = None
        if local is not None:
            errors, warnings_, _ = spec_findings(local)
            if errors and not report.format_errors:
                report.format_errors.extend(errors)
            report.format_warnings.extend(warnings_)
        if pkg is not None and local is not None and not report.format_errors:
            available = [wf for wf, w in pkg.descr.weights if w is not None]
            wanted = [weights] if isinstance(weights, str) else list(weights or available)
            for wf in wanted:
                if wf not in available:
                    report.reproduction[wf] = {"status": "failed", "errors": [f"the package has no {wf} weights"],
                                               "seconds": 0.0}
                    continue
                # bioimageio.core imports and calls whatever the description names: it gets only
                # descriptions whose code our one trust policy lets run
                refused = trust.untrusted_code(pkg.descr, trust_code=trust_code, weights_format=wf)
                if refused:
                    report.reproduction[wf] = {
                        "status": "skipped", "seconds": 0.0,
                        "errors": [trust.refusal_message(r, what="testing these weights") for r in refused]}
                    continue
                if wf not in ("pytorch_state_dict", "torchscript", "onnx", "tensorflow_saved_model_bundle",
                              "keras_hdf5", "keras_v3"):
                    report.reproduction[wf] = {"status": "skipped", "errors": ["not testable here"], "seconds": 0.0}
                    continue
                report.reproduction[wf] = core_reproduction(local, wf)
        if pkg is not None and deepimagej:
            from .deepimagej import check_deepimagej as _dij

            report.deepimagej = _dij(pkg)
    report.seconds = time.perf_counter() - t0
    return report
