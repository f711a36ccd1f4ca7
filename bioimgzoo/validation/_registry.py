"""The finding type, the status vocabulary and the registry of checks.

A *check* is a registered unit: an id (``"format.spec"``, ``"deepimagej.D8"``),
the *family* it belongs to, a severity, a fix text, the stage it runs in and
what it needs of the package.  A *family* is one module of
:mod:`bioimgzoo.validation` that registers itself with :func:`register_family`
and its checks with :meth:`Family.check`; the runner finds the families by
importing every public module of the package (:func:`load_families`), so a new
family is one new module and nothing else.

Every check, whatever its family, speaks one status vocabulary:
``passed``, ``failed``, ``warning``, ``skipped`` (it should have run but could
not: a file it needs is unreadable, an earlier check refused the package) and
``not-applicable`` (the package has nothing the check is about).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

__all__ = ["Status", "STATUSES", "PASSED", "FAILED", "WARNING", "SKIPPED", "NOT_APPLICABLE", "Finding", "Check",
           "Family", "register_family", "families", "family", "load_families", "roll_up", "OK_STATUSES",
           "STAGE_OPEN", "STAGE_FILES", "STAGE_FORMAT", "STAGE_RUN", "STAGE_CONSUMERS"]

Status = Literal["passed", "failed", "warning", "skipped", "not-applicable"]
PASSED: Status = "passed"
FAILED: Status = "failed"
WARNING: Status = "warning"
SKIPPED: Status = "skipped"
NOT_APPLICABLE: Status = "not-applicable"
#: worst first: a family's status is the worst of its findings' (see :func:`roll_up`)
STATUSES: tuple[Status, ...] = (FAILED, WARNING, PASSED, SKIPPED, NOT_APPLICABLE)
#: family statuses that let a package pass; "skipped" does not: a family that could not run has shown nothing
OK_STATUSES = frozenset({PASSED, WARNING, NOT_APPLICABLE})

# Stages order the run across families: nothing may read a file before the files family has
# refused what lies outside the package, and nothing runs the model before the format is known valid.
STAGE_OPEN = 0
STAGE_FILES = 10
STAGE_FORMAT = 20
STAGE_RUN = 30
STAGE_CONSUMERS = 40

#: what a check may need of the run (see :class:`bioimgzoo.validation._context.Context.unmet`)
REQUIREMENTS = frozenset({"package", "files", "valid"})


@dataclass(frozen=True)
class Finding:
    """One verdict of one check.

    Attributes
    ----------
    check : str
        Id of the check that gave it (``"reproduction.core"``).
    family : str
        The check's family (``"reproduction"``).
    status : Status
        One of :data:`STATUSES`.
    message : str
        What was found, in words (may quote the package: escape it before display).
    severity : str
        The check's severity (``"error"``, ``"warning"``, ``"info"``).
    fix : str
        How to fix a failure or warning ("" when the finding needs no fix).
    details : dict
        Check-specific, JSON-friendly data (``weights_format``, ``rule``, ``seconds`` ...).
    """

    check: str
    family: str
    status: Status
    message: str
    severity: str = "error"
    fix: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The finding as JSON-friendly data (``id``, ``family``, ``status``, ``message``, ...)."""
        return {"id": self.check, "family": self.family, "status": self.status, "message": self.message,
                "severity": self.severity, "fix": self.fix, "details": dict(self.details)}


#: what a check function yields: (status, message) or (status, message, details)
Outcome = tuple


@dataclass(frozen=True)
class Check:
    """A registered check.

    Attributes
    ----------
    id : str
        Unique id, ``"<family>.<name>"``.
    family : str
        Name of its family.
    title : str
        What it checks, in a few words.
    severity : {"error", "warning", "info"}
        How much a failure weighs: a failure of a ``"warning"`` check is reported
        as a warning and never fails the package.
    fix : str
        How to fix a failure; shown beside every failure and warning.
    run : callable
        ``run(ctx)`` yields ``(status, message)`` or ``(status, message, details)``
        tuples, one per verdict (a check may judge several items, e.g. one per
        weight format).
    stage : int
        When it runs (``STAGE_*``); checks of one stage run in registration order.
    requires : tuple of str
        Of ``"package"`` (the package opened), ``"files"`` (its files may be read:
        nothing lies outside it) and ``"valid"`` (no check has failed so far).
        A check whose needs are not met gives one ``skipped`` finding naming why.
    """

    id: str
    family: str
    title: str
    severity: str
    fix: str
    run: Callable[[Any], Iterable[Outcome]]
    stage: int = STAGE_FORMAT
    requires: tuple[str, ...] = ("package",)

    def finding(self, status: str, message: str, details: Mapping[str, Any] | None = None) -> Finding:
        """Build this check's :class:`Finding` (a ``"warning"``-severity check never fails).

        ``details["fix"]``, when given, is this finding's own fix in place of the check's (a failure
        whose cause is not the one the check's fix is about, e.g. a missing file).
        """
        if status not in STATUSES:
            raise ValueError(f"check {self.id} gave status {status!r}, not one of {STATUSES}")
        if status == FAILED and self.severity != "error":
            status = WARNING
        details = dict(details or {})
        own_fix = details.pop("fix", None)
        fix = (own_fix or self.fix) if status in (FAILED, WARNING) else ""
        return Finding(self.id, self.family, status, message, self.severity, fix, details)


@dataclass
class Family:
    """A family of checks: one module of :mod:`bioimgzoo.validation`.

    Attributes
    ----------
    name : str
        Short name, used in check ids and ``check_package(families=...)``.
    title : str
        Heading in reports.
    order : int
        Position in reports (lower first).
    render_markdown : callable, optional
        ``render_markdown(findings) -> list of str``: the family's own Markdown
        section body; the default is a table of its findings.
    checks : list of Check
        Its checks, in registration order.
    starts : list of callable
        ``start(ctx) -> join or None``, registered by :meth:`start`: work begun in the
        background once the package's files are judged (before the network runs), e.g.
        subprocesses of the deployed readers; ``join()`` waits for it.
    """

    name: str
    title: str
    order: int
    render_markdown: Callable[[Sequence[Finding]], list[str]] | None = None
    checks: list[Check] = field(default_factory=list)
    starts: list[Callable[[Any], Callable[[], None] | None]] = field(default_factory=list)

    def start(self, begin: Callable[[Any], Callable[[], None] | None]) -> Callable:
        """Register ``begin(ctx)``, run once per run that includes this family (see ``starts``)."""
        if begin not in self.starts:
            self.starts.append(begin)
        return begin

    def check(self, name: str, *, title: str, fix: str, severity: str = "error", stage: int = STAGE_FORMAT,
              requires: Sequence[str] = ("package",)) -> Callable:
        """Decorator registering ``run(ctx)`` as the check ``<family>.<name>``; see :class:`Check`."""
        def register(run: Callable[[Any], Iterable[Outcome]]) -> Callable[[Any], Iterable[Outcome]]:
            self.add(Check(f"{self.name}.{name}", self.name, title, severity, fix, run, stage, tuple(requires)))
            return run
        return register

    def add(self, check: Check) -> Check:
        """Register ``check`` (ids are unique across all families)."""
        if check.severity not in ("error", "warning", "info"):
            raise ValueError(f"check {check.id}: severity {check.severity!r} is not error, warning or info")
        unknown = set(check.requires) - REQUIREMENTS
        if unknown:
            raise ValueError(f"check {check.id} requires unknown {sorted(unknown)}; known: {sorted(REQUIREMENTS)}")
        if any(c.id == check.id for f in _FAMILIES.values() for c in f.checks):
            raise ValueError(f"check {check.id} is registered twice")
        self.checks.append(check)
        return check


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, title: str, *, order: int,
                    render_markdown: Callable[[Sequence[Finding]], list[str]] | None = None) -> Family:
    """Register (or, on a module reload, return) the family ``name``; see :class:`Family`."""
    if name in _FAMILIES:
        return _FAMILIES[name]
    fam = _FAMILIES[name] = Family(name, title, order, render_markdown)
    return fam


def load_families() -> None:
    """Import every public module of :mod:`bioimgzoo.validation`: each registers its family.

    Families are found, not listed, so that adding one is adding a module.  Modules
    whose name starts with ``_`` are the machinery (registry, context, report, runner).
    """
    # the folder, not ``from . import __path__``: importing the package root from here would be a cycle
    package = __name__.rsplit(".", 1)[0]
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")


def families() -> list[Family]:
    """Every registered family, in report order (loads them first)."""
    load_families()
    return sorted(_FAMILIES.values(), key=lambda f: (f.order, f.name))


def family(name: str) -> Family | None:
    """The registered family ``name``, or None (without loading the family modules)."""
    return _FAMILIES.get(name)


def roll_up(statuses: Iterable[str]) -> Status:
    """The status of a group of findings: the worst present, in the order of :data:`STATUSES`.

    An empty group is ``not-applicable``: nothing was there to judge.
    """
    present = set(statuses)
    return next((s for s in STATUSES if s in present), NOT_APPLICABLE)
