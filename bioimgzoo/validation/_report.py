"""The report of :func:`~bioimgzoo.validation.check_package`: findings, and views derived from them.

Everything a report says is computed from its list of :class:`~._registry.Finding`:
the status of each family, whether the package passed, and the older views
(``format_errors``, ``reproduction``, ``deepimagej``) that callers from before
the registry still read.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ._registry import FAILED, OK_STATUSES, PASSED, WARNING, Finding, Status, family, load_families, roll_up

__all__ = ["CheckReport"]


class CheckReport:
    """Results of :func:`~bioimgzoo.validation.check_package`.

    Parameters
    ----------
    source : str
        What was checked, as given.
    name : str, optional
        The package's name (None when it could not be opened).
    findings : iterable of Finding
        Every verdict, in the order the checks ran.
    families : sequence of str, optional
        The families that were asked for (default: those with findings).  A family
        asked for but without findings counts as ``not-applicable``.
    seconds : float
        Wall time of the whole check.
    format_errors, format_warnings : list of str, optional
        Legacy way to build a report by hand: each becomes a failed / warning
        finding of ``format.spec``.
    """

    def __init__(self, source: str, name: str | None = None, findings: Iterable[Finding] = (), *,
                 families: Sequence[str] | None = None, seconds: float = 0.0,
                 format_errors: Iterable[str] = (), format_warnings: Iterable[str] = ()):
        self.source = source
        self.name = name
        self.findings: list[Finding] = list(findings)
        self.findings += [Finding("format.spec", "format", FAILED, m) for m in format_errors]
        self.findings += [Finding("format.spec", "format", WARNING, m) for m in format_warnings]
        self.families: list[str] = list(families) if families is not None else \
            list(dict.fromkeys(f.family for f in self.findings))
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"CheckReport(source={self.source!r}, name={self.name!r}, status={self.status!r})"

    # --------------------------------------------------------------------------- derived

    def of_family(self, name: str) -> list[Finding]:
        """The findings of the family ``name``."""
        return [f for f in self.findings if f.family == name]

    def family_status(self, name: str) -> Status:
        """The family's status: the worst of its findings (see :func:`~._registry.roll_up`)."""
        return roll_up(f.status for f in self.of_family(name))

    @property
    def failures(self) -> list[Finding]:
        """Every failed finding."""
        return [f for f in self.findings if f.status == FAILED]

    @property
    def passed(self) -> bool:
        """Every family asked for passed (warnings and not-applicable allowed; skipped is not a pass)."""
        return all(self.family_status(name) in OK_STATUSES for name in self.families)

    @property
    def status(self) -> Status:
        """``"passed"`` or ``"failed"``: :attr:`passed` in the status vocabulary."""
        return PASSED if self.passed else FAILED

    # legacy views: each names the family it reads; the files family was part of "format" before

    @property
    def format_errors(self) -> list[str]:
        """Messages of the failed format and files findings."""
        return [f.message for f in self.findings if f.family in ("format", "files") and f.status == FAILED]

    @property
    def format_warnings(self) -> list[str]:
        """Messages of the format and files warnings."""
        return [f.message for f in self.findings if f.family in ("format", "files") and f.status == WARNING]

    @property
    def format_valid(self) -> bool:
        """No format or files check failed."""
        return not self.format_errors

    @property
    def reproduction(self) -> dict[str, dict]:
        """weights format -> ``{"status": "passed" | "failed" | "skipped", "errors": [...], "seconds": float}``."""
        return {f.details["weights_format"]: {"status": f.status, "errors": list(f.details.get("errors") or []),
                                              "seconds": f.details.get("seconds", 0.0)}
                for f in self.of_family("reproduction") if "weights_format" in f.details}

    @property
    def reproduces(self) -> bool:
        """At least one weights format reproduced its test outputs and none failed to."""
        statuses = [r["status"] for r in self.reproduction.values()]
        return PASSED in statuses and FAILED not in statuses

    @property
    def deepimagej(self) -> list:
        """The :class:`~bioimgzoo.validation.deepimagej.RuleResult` of each rule that ran (empty if none)."""
        from .deepimagej import rule_results

        return rule_results(self.findings)

    @property
    def deepimagej_checked(self) -> bool:
        """Whether the DeepImageJ family was asked for."""
        return "deepimagej" in self.families

    @property
    def deepimagej_compatible(self) -> bool:
        """No DeepImageJ rule failed (True when the rules were not checked)."""
        return not any(f.status == FAILED for f in self.of_family("deepimagej"))

    # --------------------------------------------------------------------------- output

    def to_dict(self) -> dict:
        """The report as JSON-friendly data: ``status``, ``families``, ``checks`` and the legacy sections."""
        return {
            "source": self.source, "name": self.name, "status": self.status, "passed": self.passed,
            "families": {name: self.family_status(name) for name in self.families},
            "checks": [f.to_dict() for f in self.findings],
            "format": {"valid": self.format_valid, "errors": self.format_errors, "warnings": self.format_warnings},
            "reproduction": self.reproduction,
            "deepimagej": {"checked": self.deepimagej_checked, "compatible": self.deepimagej_compatible,
                           "rules": [r.to_dict() for r in self.deepimagej]},
            "seconds": round(self.seconds, 2),
        }

    def to_markdown(self) -> str:
        """A Markdown report: the overall status, a table of families, then one section per family."""
        from .._text import markdown_safe

        load_families()  # a report built by hand still renders each family its own way
        # names and messages quote the package's author and the spec: escaped, never raw HTML
        lines = [f"# Check of {markdown_safe(self.name or self.source)}", "",
                 f"Overall: **{self.status if self.passed else 'FAILED'}**", "",
                 "| family | status |", "|---|---|"]
        lines += [f"| {name} | {self.family_status(name)} |" for name in self.families]
        for name in self.families:
            fam = family(name)
            title = fam.title if fam is not None else name
            findings = self.of_family(name)
            lines += ["", f"## {title}: {self.family_status(name)}", ""]
            render = fam.render_markdown if fam is not None and fam.render_markdown else _table
            lines += render(findings)
        return "\n".join(lines) + "\n"


def _table(findings: Sequence[Finding]) -> list[str]:
    """The default Markdown section: one row per finding, with the fix of failures and warnings."""
    from .._text import markdown_safe

    if not findings:
        return ["Nothing to check."]
    lines = ["| check | status | detail | fix |", "|---|---|---|---|"]
    lines += [f"| {f.check} | {f.status} | {markdown_safe(f.message, table_cell=True)} | "
              f"{markdown_safe(f.fix, table_cell=True)} |" for f in findings]
    return lines
