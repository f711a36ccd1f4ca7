"""The report as JSON-friendly data (no NaN or infinity: strict JSON readers accept it)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["to_json_data", "tool_summary"]


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats as strings and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def tool_summary(report: Any, tool: str) -> dict:
    """One tool's verdict in the zoo's per-tool test-summary fields (as bioimageio.spec's ValidationSummary)."""
    from ..._version import __version__

    verdict = report.consumers.get(tool, {})
    details = [{"name": f.check, "status": f.status, "loc": [], "errors": [{"msg": f.message}]
                if f.status == "failed" else [], "warnings": [{"msg": f.message}] if f.status == "warning" else []}
               for f in report.of_family(tool)]
    return {"name": f"{tool} compatibility (bioimgzoo)", "source_name": report.source,
            "id": report.meta.get("id") or None, "type": report.meta.get("type", "model"),
            "format_version": report.meta.get("format_version"), "status": verdict.get("status"),
            "failed_rules": list(verdict.get("failed_rules") or []), "details": details,
            "env": [["bioimgzoo", __version__]]}


def to_json_data(report: Any) -> dict:
    """The whole report as JSON-friendly data (see the package docstring)."""
    completeness = next((f.details for f in report.findings if f.check == "format.completeness"
                         and "score" in f.details), None)
    data = {
        "source": report.source, "name": report.name, "status": report.status, "passed": report.passed,
        "static": report.static, "required": list(report.required),
        "families": {name: report.family_status(name) for name in report.own_families},
        "checks": [{**f.to_dict(), "seconds": report.timings.get(f.check)} for f in report.findings],
        "timings": dict(report.timings),
        "consumers": {t: {"status": v.get("status"), "failed_rules": list(v.get("failed_rules") or []),
                          "fixes": list(v.get("fixes") or []), "failures": list(v.get("failures") or [])}
                      for t, v in report.consumers.items()},
        "id": report.meta.get("id") or None, "version": report.meta.get("version") or None,
        "summary": {t: tool_summary(report, t) for t in report.consumers},
        "completeness": completeness,
        "format": {"valid": report.format_valid, "errors": report.format_errors,
                   "warnings": report.format_warnings},
        "reproduction": report.reproduction,
        "deepimagej": {"checked": report.deepimagej_checked, "compatible": report.deepimagej_compatible,
                       "rules": [r.to_dict() for r in report.deepimagej]},
        "artifacts": sorted(k for k in report.artifacts),
        "seconds": round(report.seconds, 2),
    }
    return _clean(data)

