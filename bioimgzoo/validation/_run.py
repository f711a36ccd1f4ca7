"""The runner: :func:`check_package` runs the registered checks of the families asked for."""

from __future__ import annotations

import time
from typing import Any, Sequence

from ._context import Context
from ._registry import NOT_APPLICABLE, SKIPPED, Check, Family
from ._registry import families as registered_families
from ._report import CheckReport

__all__ = ["check_package"]


def _selected(names: Sequence[str] | None, deepimagej: bool) -> list[str]:
    known = [f.name for f in registered_families()]
    if names is None:
        # the DeepImageJ switch predates the registry; it is kept as a shorthand for leaving out that family
        return [n for n in known if deepimagej or n != "deepimagej"]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown check families {unknown}; known: {known}")
    return [n for n in known if n in names]


def _run_check(check: Check, ctx: Context) -> None:
    """Run one check into ``ctx.findings``; it never raises (a crash is a skipped finding naming it)."""
    why = ctx.unmet(check)
    if why:
        ctx.findings.append(check.finding(SKIPPED, f"not run: {why}"))
        return
    n = len(ctx.findings)
    try:
        for outcome in check.run(ctx):
            ctx.findings.append(check.finding(*outcome))
    except Exception as e:  # a broken check must not hide the verdicts of all the others
        ctx.findings.append(check.finding(SKIPPED, f"the check crashed ({type(e).__name__}: {e})"))
    if len(ctx.findings) == n:
        ctx.findings.append(check.finding(NOT_APPLICABLE, "nothing to check"))


def check_package(source: Any, *, weights: str | Sequence[str] | None = None, trust_code: bool = False,
                  deepimagej: bool = True, families: Sequence[str] | None = None,
                  **hub_options: Any) -> CheckReport:
    """Run the registered checks on a package and report their findings.

    The families are found in :mod:`bioimgzoo.validation` (format, files,
    reproduction, deepimagej, ...); their checks run by stage: the package is
    opened, files outside it are refused before anything reads a file, then
    bioimageio.spec's format validation, then the reproduction of the test
    outputs (only when nothing failed so far), then the consumer rules.

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
        Check the DeepImageJ rules (and count their failures in ``passed``);
        ignored when ``families`` is given.
    families : list of str, optional
        The families to run (default: all registered).
    **hub_options
        Passed to :func:`bioimgzoo.package.open_package` for URLs and ids.

    Returns
    -------
    CheckReport
        Never raises for a broken package: every problem is a finding.
    """
    t0 = time.perf_counter()
    names = _selected(families, deepimagej)
    wanted = [weights] if isinstance(weights, str) else (list(weights) if weights else None)
    checks = sorted((c for f in _families_in(names) for c in f.checks), key=lambda c: c.stage)  # stable sort
    with Context(source, weights=wanted, trust_code=trust_code, hub_options=hub_options) as ctx:
        ctx.open()
        for check in checks:
            _run_check(check, ctx)
        name = ctx.pkg.name if ctx.pkg is not None else None
        findings = ctx.findings
    return CheckReport(source=str(getattr(source, "name", source)), name=name, findings=findings,
                       families=names, seconds=time.perf_counter() - t0)


def _families_in(names: Sequence[str]) -> list[Family]:
    """The registered families named, in report order."""
    return [f for f in registered_families() if f.name in names]
