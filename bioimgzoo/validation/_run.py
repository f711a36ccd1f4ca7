"""The runner: :func:`check_package` runs the registered checks of the families asked for.

Two kinds of families: the package's own (format, files, safety, reproduction,
agreement, and any other registered one), which decide whether it passes, and
the consumer tools (:data:`CONSUMER_TOOLS`), whose verdicts are reported beside
that status and fail it only when required.  The tools' rules are registered
checks of their families (:mod:`bioimgzoo.validation.consumers`), run here in
the same context; each tool's findings are folded into its verdict by that
module's own rule (``consumers._base.verdict``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from ._context import Context
from ._registry import NOT_APPLICABLE, SKIPPED, STAGE_RUN, Check, Family
from ._registry import families as registered_families
from ._report import CONSUMER_TOOLS, CheckReport

__all__ = ["check_package", "CONSUMER_TOOLS"]

#: what ``reference=`` accepts: a second consumer to compare our runtime with
REFERENCES = ("core",)


def _selected(names: Sequence[str] | None, deepimagej: bool) -> list[str]:
    known = [f.name for f in registered_families()]
    if names is None:
        # the DeepImageJ switch predates the registry; it is kept as a shorthand for leaving out that tool
        return [n for n in known if deepimagej or n != "deepimagej"]
    unknown = [n for n in names if n not in known and n not in CONSUMER_TOOLS]
    if unknown:
        raise ValueError(f"unknown check families {unknown}; known: {known}")
    return [n for n in known if n in names] + [n for n in names if n in CONSUMER_TOOLS and n not in known]


def _run_check(check: Check, ctx: Context) -> None:
    """Run one check into ``ctx.findings``; it never raises (a crash is a skipped finding naming it).

    Its wall time goes into ``ctx.timings`` (the reports' per-check times).
    """
    t0 = time.perf_counter()
    try:
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
    finally:
        ctx.timings[check.id] = ctx.timings.get(check.id, 0.0) + time.perf_counter() - t0


def check_package(source: Any, *, weights: str | Sequence[str] | None = None, trust_code: bool = False,
                  deepimagej: bool = True, families: Sequence[str] | None = None, static: bool = False,
                  reference: str | None = None, require: Sequence[str] = (), keep_artifacts: bool = True,
                  **hub_options: Any) -> CheckReport:
    """Run the registered checks on a package and report their findings.

    The families are found in :mod:`bioimgzoo.validation`; their checks run by
    stage: the zip's directory and the package's file references are checked
    before anything reads a file, then the files and what they would do when
    loaded (safety), then bioimageio.spec's format validation, then our runtime
    reproduces the test outputs and the agreement checks run (only when no check
    of an earlier stage failed), then the consumer tools' rules.

    Parameters
    ----------
    source : str, os.PathLike or Package
        Anything :func:`bioimgzoo.open_package` accepts.
    weights : str or list of str, optional
        Weights formats to test (default: all the package has).
    trust_code : bool
        Weights whose test would run code the package names (an architecture file,
        a library callable, a custom op; see :mod:`bioimgzoo.trust`) are skipped
        unless ``trust_code=True``; that code is parsed (``safety.code``), never run.
    deepimagej : bool
        Include the DeepImageJ tool; ignored when ``families`` is given.
    families : list of str, optional
        The families (and consumer tools) to run (default: all registered).
    static : bool
        Check the description alone: no file is read, nothing runs (checks that need
        files are skipped, saying so).
    reference : {"core"}, optional
        Also run bioimageio.core's test and report where it and our runtime disagree.
    require : list of str
        Consumer tools that must pass for the package to pass.
    keep_artifacts : bool
        Keep the test inputs, produced outputs, differences and seam maps for the
        reports (:attr:`CheckReport.artifacts`).
    **hub_options
        Passed to :func:`bioimgzoo.package.open_package` for URLs and ids.

    Returns
    -------
    CheckReport
        Never raises for a broken package: every problem is a finding.
    """
    t0 = time.perf_counter()
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; known: {list(REFERENCES)}")
    unknown_tools = [t for t in require if t not in CONSUMER_TOOLS]
    if unknown_tools:
        raise ValueError(f"unknown consumer tools {unknown_tools}; known: {list(CONSUMER_TOOLS)}")
    names = _selected(families, deepimagej)
    tools = [n for n in names if n in CONSUMER_TOOLS]
    for t in require:  # a required tool is always judged
        if t not in tools:
            tools.append(t)
    own = [n for n in names if n not in CONSUMER_TOOLS]
    # the tools' rules are registered checks of their families (stage STAGE_CONSUMERS): they run here once,
    # sharing this run's context, and their findings are folded into one verdict per tool
    run_families = own + [t for t in tools if _registered(t)]
    wanted = [weights] if isinstance(weights, str) else (list(weights) if weights else None)
    checks = sorted((c for f in _families_in(run_families) for c in f.checks
                     if c.id != "reproduction.core" or reference == "core"), key=lambda c: c.stage)
    with Context(source, weights=wanted, trust_code=trust_code, hub_options=hub_options, static=static,
                 reference=reference) as ctx:
        ctx.open()
        joins: list[Callable[[], None]] | None = None  # None until the background work began
        for check in checks:
            if check.stage >= STAGE_RUN and joins is None:
                joins = _start_background(ctx, run_families)
            _run_check(check, ctx)
        for join in joins or ():  # before the context's temporary folder goes
            join()
        consumers = _consumers(ctx, tools)
        name = ctx.pkg.name if ctx.pkg is not None else None
        findings = ctx.findings
        artifacts = dict(ctx.artifacts) if keep_artifacts else {}
        if keep_artifacts and ctx.pkg is not None and not static and ctx.local is not None:
            artifacts.update(_cover(ctx))
        meta = _meta(ctx)
        timings = {k: round(v, 3) for k, v in ctx.timings.items()}
    return CheckReport(source=str(getattr(source, "name", source)), name=name, findings=findings,
                       families=own + tools, seconds=time.perf_counter() - t0, consumers=consumers,
                       required=list(require), artifacts=artifacts, static=static, meta=meta, timings=timings)


def _start_background(ctx: Context, families: Sequence[str]) -> list[Callable[[], None]]:
    """Begin the families' background work (each ``start`` once, even when several families share it)."""
    joins, begun = [], []
    for fam in _families_in(families):
        for begin in fam.starts:
            if begin in begun:
                continue
            begun.append(begin)
            join = begin(ctx)
            if join is not None:
                joins.append(join)
    return joins


def _registered(name: str) -> bool:
    return any(f.name == name for f in registered_families())


def _consumers(ctx: Context, tools: list[str]) -> dict[str, dict]:
    """tool -> its verdict's :meth:`~.consumers.ConsumerVerdict.to_dict` summary, from the tools' findings in ``ctx``."""
    from .consumers import ConsumerVerdict, verdict

    out: dict[str, dict] = {}
    for t in tools:
        found = [f for f in ctx.findings if f.family == t]
        if found:
            out[t] = verdict(t, found).to_dict(findings=False)
            continue
        known = _registered(t)
        out[t] = ConsumerVerdict(t, NOT_APPLICABLE if known else SKIPPED, (), ()).to_dict(findings=False)
        if not known:
            out[t]["messages"] = ["no checker for this tool is installed"]
    return out


def _cover(ctx: Context) -> dict:
    """The package's first cover image, as ``(mime type, bytes)``, for the HTML report."""
    from ..errors import BioimgzooError

    covers = list(getattr(ctx.pkg.descr, "covers", None) or [])
    if not covers:
        return {}
    ref = covers[0]
    src = getattr(ref, "source", ref)  # a FileDescr in recent spec versions, a bare path in older ones
    name = str(getattr(src, "path", src)).lower()
    mime = next((m for ext, m in ((".png", "image/png"), (".jpg", "image/jpeg"), (".jpeg", "image/jpeg"),
                                  (".gif", "image/gif")) if name.endswith(ext)), None)
    if mime is None:
        return {}  # an SVG or other format could carry script: not embedded
    try:
        data = ctx.pkg.file(ref).read_bytes()
    except BioimgzooError:
        return {}
    return {"cover": (mime, data[: 8 << 20])}


def _meta(ctx: Context) -> dict:
    """What the report header and the zoo's summary fields name: id, format version, weight formats."""
    if ctx.pkg is None:
        return {}
    d = ctx.pkg.descr
    version = getattr(d, "version", None)
    return {"id": str(getattr(d, "id", None) or ""), "format_version": ctx.pkg.original_format_version,
            "type": "model", "weights_formats": [wf for wf, w in d.weights if w is not None],
            "version": str(version) if version is not None else ""}


def _families_in(names: Sequence[str]) -> list[Family]:
    """The registered families named, in report order."""
    return [f for f in registered_families() if f.name in names]
