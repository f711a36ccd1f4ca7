"""The report of :func:`~bioimgzoo.validation.check_package`: findings, and views derived from them.

Everything a report says is computed from its list of :class:`~._registry.Finding`:
the status of each family, whether the package passed, and the older views
(``format_errors``, ``reproduction``, ``deepimagej``) that callers from before
the registry still read.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ._registry import FAILED, NOT_APPLICABLE, OK_STATUSES, PASSED, SKIPPED, WARNING, Finding, Status, roll_up
from .consumers import TOOLS

__all__ = ["CheckReport", "CONSUMER_TOOLS"]

#: the consumer tools of ../shared/docs/consumer-rules.md: reported beside the status, failing it only if required
CONSUMER_TOOLS = TOOLS


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
                 format_errors: Iterable[str] = (), format_warnings: Iterable[str] = (),
                 consumers: Mapping[str, Mapping] | None = None, required: Sequence[str] = (),
                 artifacts: Mapping[str, Any] | None = None, static: bool = False, meta: Mapping | None = None,
                 timings: Mapping[str, float] | None = None):
        self.source = source
        self.name = name
        self.findings: list[Finding] = list(findings)
        self.findings += [Finding("format.spec", "format", FAILED, m) for m in format_errors]
        self.findings += [Finding("format.spec", "format", WARNING, m) for m in format_warnings]
        self.families: list[str] = list(families) if families is not None else \
            list(dict.fromkeys(f.family for f in self.findings))
        self.seconds = seconds
        #: tool -> {"status", "failed_rules", "fixes", "messages"} (derived from the tools' findings if not given)
        self.consumers: dict[str, dict] = {k: dict(v) for k, v in (consumers or {}).items()}
        for tool in self.tools:
            if tool not in self.consumers:
                found = self.of_family(tool)
                self.consumers[tool] = {"status": roll_up(f.status for f in found),
                                        "failed_rules": [f.check.split(".", 1)[-1] for f in found
                                                         if f.status == FAILED],
                                        "fixes": [], "messages": []}
        #: consumer tools that must pass for the package to pass
        self.required: list[str] = list(required)
        #: arrays and images for the reports: "input/<id>", "expected/<id>", "produced/<wf>/<id>",
        #: "difference/<wf>/<id>", "seams/<wf>/<id>" (ndarrays), "cover" ((mime, bytes))
        self.artifacts: dict[str, Any] = dict(artifacts or {})
        self.static = static
        self.meta: dict = dict(meta or {})
        #: wall seconds of each check (its findings together), in the order the checks ran
        self.timings: dict[str, float] = dict(timings or {})

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
    def tools(self) -> list[str]:
        """The consumer tools judged (their verdicts are in :attr:`consumers`)."""
        return [n for n in self.families if n in CONSUMER_TOOLS]

    @property
    def own_families(self) -> list[str]:
        """The package's own families (format, files, safety, reproduction, agreement...): they decide the status."""
        return [n for n in self.families if n not in CONSUMER_TOOLS]

    @property
    def passed(self) -> bool:
        """Every own family passed (warnings and not-applicable allowed; skipped is not a pass), and every
        required tool passed (or does not apply)."""
        # --static: the families that need files were skipped by design, not for a problem of the package
        ok = OK_STATUSES | {SKIPPED} if self.static else OK_STATUSES
        own = all(self.family_status(name) in ok for name in self.own_families)
        tools = all(self.consumers.get(t, {}).get("status") in (PASSED, NOT_APPLICABLE) for t in self.required)
        return own and tools

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
        """weights format -> ``{"status", "errors", "seconds"}`` of our runtime (bioimageio.core's when only it ran)."""
        out: dict[str, dict] = {}
        for check in ("reproduction.core", "reproduction.runtime"):  # the runtime's verdict wins
            for f in self.findings:
                if f.check == check and "weights_format" in f.details:
                    out[f.details["weights_format"]] = {"status": f.status,
                                                        "errors": list(f.details.get("errors") or []),
                                                        "seconds": f.details.get("seconds", 0.0)}
        return out

    @property
    def reproduces(self) -> bool:
        """At least one weights format reproduced its test outputs and none failed to."""
        statuses = [r["status"] for r in self.reproduction.values()]
        return PASSED in statuses and FAILED not in statuses

    @property
    def deepimagej(self) -> list:
        """The :class:`~bioimgzoo.validation.consumers.deepimagej.RuleResult` of each rule that ran (empty if none)."""
        from .consumers.deepimagej import rule_results

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
        """The report as JSON-friendly data; see :func:`bioimgzoo.validation.report.to_json_data`."""
        from .report import to_json_data

        return to_json_data(self)

    def to_markdown(self) -> str:
        """A Markdown report; see :func:`bioimgzoo.validation.report.to_markdown`."""
        from .report import to_markdown

        return to_markdown(self)

    def to_html(self) -> str:
        """A self-contained HTML page; see :func:`bioimgzoo.validation.report.to_html`."""
        from .report import to_html

        return to_html(self)

