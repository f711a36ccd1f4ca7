"""The machinery of the consumer checkers: rules, tools, the subject they judge, verdicts.

A *tool* (DeepImageJ, ilastik, ...) is a list of *rules*, each named by its id in
``shared/docs/consumer-rules.md`` (``D8``, ``I3``) and registered as the check
``<tool>.<id>`` of the tool's family (stage ``STAGE_CONSUMERS``), so that the
runner reports them like every other check.  :func:`evaluate` runs one tool's
rules on a :class:`Subject` (the package plus what the rules share: the
description read as written, cached files) and :func:`verdict` folds the
findings into a :class:`ConsumerVerdict`.

A rule that needs a file (weights, test tensors) is ``skipped`` with the reason
when files may not be read (``static=True``, or the runner refused the package's
files); a rule that raises becomes a ``skipped`` finding naming the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from .._registry import (FAILED, NOT_APPLICABLE, PASSED, SKIPPED, STAGE_CONSUMERS, WARNING, Check, Family,
                         Finding, register_family)
from ._view import ModelView, model_view

__all__ = ["TOOLS", "TOOL_TITLES", "ConsumerVerdict", "Rule", "Tool", "Subject", "NeedsFiles", "evaluate", "verdict", "tool",
           "open_subject"]

#: the consumer tools of ../shared/docs/consumer-rules.md, in report order, and the names shown for them
TOOL_TITLES: dict[str, str] = {"deepimagej": "DeepImageJ", "icy": "Icy", "ilastik": "ilastik", "qupath": "QuPath",
                               "biapy": "BiaPy", "careamics": "CAREamics", "readers": "readers"}
TOOLS: tuple[str, ...] = tuple(TOOL_TITLES)


class NeedsFiles(Exception):
    """Raised by :meth:`Subject.file` when the rule needs a file the run may not read."""


@dataclass(frozen=True)
class ConsumerVerdict:
    """One tool's predicted verdict on a package.

    Attributes
    ----------
    tool : str
        One of :data:`TOOLS`.
    status : str
        ``"passed"``, ``"failed"``, ``"not-applicable"`` (the tool is not about this
        package, e.g. CAREamics for a non-CAREamics model) or ``"skipped"`` (no rule
        could be judged).
    failed_rules : tuple of str
        The ids of ``consumer-rules.md`` that failed (``("D5", "D23")``), in rule order.
    findings : tuple of Finding
        Every rule's finding (``details["rule"]`` names the rule id).
    """

    tool: str
    status: str
    failed_rules: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def fixes(self) -> dict[str, str]:
        """Failed rule id -> how to fix it."""
        out: dict[str, str] = {}
        for f in self.findings:
            rule = f.details.get("rule")
            if f.status == FAILED and rule and rule not in out:
                out[rule] = f.fix
        return out

    @property
    def reasons(self) -> dict[str, str]:
        """Failed rule id -> what was found (the messages of its failed findings, joined)."""
        out: dict[str, list[str]] = {}
        for f in self.findings:
            rule = f.details.get("rule")
            if f.status == FAILED and rule:
                out.setdefault(rule, []).append(f.message)
        return {k: "; ".join(v) for k, v in out.items()}

    def to_dict(self, *, findings: bool = True) -> dict:
        """The one plain-data shape of a verdict (reports, the export's result, JSON): tool, status, failed rules,
        ``fixes`` (the distinct fixes, in rule order), ``reasons`` (rule -> what was found), ``messages`` and
        ``failures`` (each failed finding with its own fix); ``findings=False`` leaves out every rule's finding."""
        failed = [f for f in self.findings if f.status == FAILED]
        out = {"tool": self.tool, "status": self.status, "failed_rules": list(self.failed_rules),
               "fixes": list(dict.fromkeys(f.fix for f in failed if f.fix)), "reasons": self.reasons,
               "messages": [f"{f.check}: {f.message}" for f in failed],
               "failures": [{"check": f.check, "message": f.message, "fix": f.fix} for f in failed]}
        if findings:
            out["findings"] = [f.to_dict() for f in self.findings]
        return out


class Subject:
    """What one tool's rules judge, shared by all tools of one run.

    Parameters
    ----------
    package : Package
        The package; its ``descr`` may be None (a description bioimageio.spec
        cannot read or upgrade: only the rules about the raw text then judge it).
    static : bool
        No file may be read: rules that need one are skipped.
    refused : str
        Why the package's files may not be read ("" when they may).
    engines : callable, optional
        ``engines(weights_format)``: the engine of the validation run the tools' rules
        belong to (one load per format for the whole run, its runs shared); default:
        the subject loads its own.
    """

    def __init__(self, package: Any, *, static: bool = False, refused: str = "",
                 engines: Callable[[str], Any] | None = None):
        self.pkg = package
        self.raw: Mapping = package.raw if isinstance(getattr(package, "raw", None), Mapping) else {}
        self.descr = getattr(package, "descr", None)
        #: why the description could not be read as a model ("" when it could): every rule is then skipped
        self.view_error = ""
        try:
            self.view: ModelView = model_view(self.raw)
        except Exception as e:  # the view is defensive; this is the last line against an unforeseen shape
            self.view_error = f"{type(e).__name__}: {e}"
            self.view = model_view({})
        self.static = static
        self.refused = refused
        self.engines = engines
        self.cache: dict[str, Any] = {}

    def file(self, ref: str | None, what: str = "file") -> Any:
        """Local path of the package file ``ref``; raises :class:`NeedsFiles` when it may not be read."""
        if not ref:
            raise NeedsFiles(f"the description names no {what}")
        if self.static:
            raise NeedsFiles(f"static check: the {what} {ref} is not read")
        if self.refused:
            raise NeedsFiles(f"the package's files are not read ({self.refused})")
        key = f"file:{ref}"
        if key not in self.cache:
            try:
                self.cache[key] = self.pkg.file(ref)
            except Exception as e:
                self.cache[key] = NeedsFiles(f"the {what} {ref} cannot be read ({type(e).__name__}: "
                                             f"{str(e).splitlines()[0][:200] if str(e) else ''})")
        value = self.cache[key]
        if isinstance(value, Exception):
            raise value
        return value

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """A value computed once per subject (an exception is kept and raised again)."""
        if key not in self.cache:
            try:
                self.cache[key] = make()
            except Exception as e:
                self.cache[key] = e
        value = self.cache[key]
        if isinstance(value, Exception):
            raise value
        return value


#: what a rule yields: (status, message) or (status, message, details)
Outcome = tuple


@dataclass
class Rule:
    id: str
    title: str
    fix: str
    run: Callable[[Subject], Iterable[Outcome]]
    severity: str = "error"
    check_name: str = ""

    @property
    def name(self) -> str:
        return self.check_name or self.id


@dataclass
class Tool:
    """One consumer tool: its rules, registered as the checks of its family."""

    name: str
    title: str
    family: Family
    rules: list[Rule] = field(default_factory=list)
    #: ``applies(subject) -> str``: why the tool is not about this package ("" when it is)
    applies: Callable[[Subject], str] | None = None

    def rule(self, rule_id: str, *, title: str, fix: str, severity: str = "error", name: str = "") -> Callable:
        """Decorator: ``run(subject)`` yielding outcomes is the rule ``rule_id``, check ``<tool>.<name or id>``."""
        def register(run: Callable[[Subject], Iterable[Outcome]]) -> Callable:
            rule = Rule(rule_id, title, fix, run, severity, name)
            self.rules.append(rule)
            self.family.add(Check(f"{self.name}.{rule.name}", self.name, title, severity, fix, _runner(self, rule),
                                  stage=STAGE_CONSUMERS, requires=()))
            return run
        return register

    def check(self, rule: Rule) -> Check:
        cid = f"{self.name}.{rule.name}"
        return next(c for c in self.family.checks if c.id == cid)


_TOOLS: dict[str, Tool] = {}


def tool(name: str, title: str, *, order: int, render_markdown: Callable | None = None) -> Tool:
    """Register (or return) the tool ``name`` and its family."""
    if name not in _TOOLS:
        fam = register_family(name, title, order=order, render_markdown=render_markdown)
        _TOOLS[name] = Tool(name, title, fam)
    return _TOOLS[name]


def tools() -> dict[str, Tool]:
    return _TOOLS


def _outcomes(rule: Rule, subject: Subject) -> Iterator[Outcome]:
    """The rule's outcomes; a missing file is a skip, any other error a skip naming it."""
    try:
        produced = list(rule.run(subject))
    except NeedsFiles as e:
        produced = [(SKIPPED, str(e))]
    except Exception as e:  # one broken rule must not hide the verdicts of all the others
        produced = [(SKIPPED, f"the rule could not be judged ({type(e).__name__}: {e})")]
    if not produced:
        produced = [(NOT_APPLICABLE, "nothing to check")]
    for outcome in produced:
        status, message = outcome[0], outcome[1]
        details = dict(outcome[2]) if len(outcome) > 2 and outcome[2] else {}
        yield status, message, details


def evaluate(t: Tool, subject: Subject) -> list[Finding]:
    """Every finding of ``t``'s rules on ``subject``, in rule order."""
    findings = []
    if subject.view_error:
        return [t.check(rule).finding(SKIPPED, f"the description could not be read ({subject.view_error})",
                                      {"rule": rule.id, "tool": t.name}) for rule in t.rules]
    why_not = t.applies(subject) if t.applies else ""
    for rule in t.rules:
        check = t.check(rule)
        if why_not:
            findings.append(check.finding(NOT_APPLICABLE, why_not, {"rule": rule.id, "tool": t.name}))
            continue
        for status, message, details in _outcomes(rule, subject):
            findings.append(check.finding(status, message, {"rule": rule.id, "tool": t.name, **details}))
    return findings


def verdict(tool_name: str, findings: Iterable[Finding]) -> ConsumerVerdict:
    """Fold one tool's findings into its :class:`ConsumerVerdict`."""
    findings = tuple(findings)
    failed = tuple(dict.fromkeys(f.details.get("rule", f.check) for f in findings if f.status == FAILED))
    statuses = {f.status for f in findings}
    if failed:
        status = FAILED
    elif PASSED in statuses or WARNING in statuses:
        status = PASSED
    elif statuses and statuses <= {NOT_APPLICABLE}:
        status = NOT_APPLICABLE
    else:
        status = SKIPPED
    return ConsumerVerdict(tool_name, status, failed, findings)


def _runner(t: Tool, rule: Rule) -> Callable[[Any], Iterator[Outcome]]:
    """The registered check's ``run(ctx)``: one :class:`Subject` per validation run, shared by all tools."""
    def run(ctx: Any) -> Iterator[Outcome]:
        subject = ctx.scratch("consumers.subject", lambda: subject_of_run(ctx))
        if isinstance(subject, str) or subject.view_error:
            why = subject if isinstance(subject, str) else f"the description could not be read ({subject.view_error})"
            yield SKIPPED, f"not judged: {why}", {"rule": rule.id, "tool": t.name}
            return
        why_not = t.applies(subject) if t.applies else ""
        if why_not:
            yield NOT_APPLICABLE, why_not, {"rule": rule.id, "tool": t.name}
            return
        for status, message, details in _outcomes(rule, subject):
            yield status, message, {"rule": rule.id, "tool": t.name, **details}
    return run


def subject_of_run(ctx: Any) -> "Subject | str":
    """The :class:`Subject` of a runner context, or why there is none.

    A package that bioimageio.spec could not read is read again as raw YAML, so that
    the rules about the text still judge it (never when its files were refused: a
    package refused as unsafe is not read further).
    """
    static = bool(getattr(ctx, "static", False))
    pkg = ctx.pkg
    if pkg is None:
        if ctx.refused:
            return f"the package was refused ({ctx.refused.splitlines()[0][:200]})"
        try:
            pkg = open_subject(ctx.source, **getattr(ctx, "hub_options", {})).pkg
        except Exception as e:
            return f"the package could not be opened ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    refused = ""
    if not static:
        refused = ctx.refused or ("; ".join(ctx.outside) if pkg is ctx.pkg and ctx.outside else "")
    # the run's own model of each format (loaded once, its runs shared) when the tools judge the run's package
    shared = _run_engines(ctx) if pkg is ctx.pkg and hasattr(ctx, "scratch") else None
    return Subject(pkg, static=static, refused=refused, engines=shared)


def _run_engines(ctx: Any) -> Callable[[str], Any]:
    from ..reproduction import load_model

    return lambda fmt: load_model(ctx, fmt).engine


def open_subject(source: Any, *, static: bool = False, **hub_options: Any) -> Subject:
    """A :class:`Subject` for ``source`` (a Package, or anything ``open_package`` accepts).

    A description bioimageio.spec refuses (often a 0.3/0.4 one it cannot upgrade) is
    kept as raw YAML with ``descr=None``.
    """
    from ...errors import InvalidDescriptionError
    from ...package import Package, open_package
    from ...package.sources import resolve_source

    if isinstance(source, Package):
        return Subject(source, static=static)
    try:
        return Subject(open_package(source, **hub_options), static=static)
    except InvalidDescriptionError:
        from ..._yaml import load_yaml

        src = resolve_source(source, **hub_options)
        data, file_name = src.read_rdf()
        content = load_yaml(data, f"{file_name} of {src.name}")
        if not isinstance(content, dict):
            raise
        pkg = Package(source=src, descr=None, original_format_version=str(content.get("format_version", "?")),
                      raw=content)
        return Subject(pkg, static=static)
