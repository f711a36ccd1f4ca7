"""``bioimgzoo validate``: the reviewer's tool: every check family, the consumer tools beside, reports.

Prints, for one package, its status, one line per check family and per
consumer tool, and each failure with its fix directly under it; for several,
one line per package (id, version, status, failing families), the details
behind ``-v`` (which also gives the time of each check).  Writes JSON (a list
for several packages), Markdown and a self-contained HTML page (an index page
with one page per package for several).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

#: failures shown per package in the terminal; the --json / --md / --html reports hold them all
MAX_FAILURES = 20


def _summary(report, family: str) -> str:
    """``"2 passed, 1 warning"``: the family's findings counted by status."""
    from ..validation import STATUSES

    statuses = [f.status for f in report.of_family(family)]
    return ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses) or "no findings"


def _said(text: str) -> str:
    """A report's text for the terminal: the API's keywords as options, no raw control sequences (messages
    quote the package's author and the spec)."""
    from .._text import terminal_safe
    from ._messages import to_cli

    return terminal_safe(to_cli(text))


def _echo_report(report, *, verbose: bool = False) -> None:
    from .._text import terminal_safe

    name = terminal_safe(report.name or report.source, single_line=True)
    click.echo(f"{report.status.upper():<7} {name}" + ("  (description only)" if report.static else "")
               + (f"  ({report.seconds:.1f} s)" if verbose else ""))
    for family in report.own_families:
        click.echo(f"  {family:<14} {report.family_status(family):<15} {_summary(report, family)}")
    for tool, v in report.consumers.items():
        req = " (required)" if tool in report.required else ""
        rules = ", ".join(v.get("failed_rules") or [])
        click.echo(f"  tool {tool:<9} {v.get('status'):<15} " + (f"failed rules: {rules}" if rules else "") + req)
    # each failure with its fix directly under it, own families first, then each tool's (required or not:
    # the reviewer decides)
    failures = [(f"FAILED {f.check}", f.message, f.fix) for f in report.failures if f.family not in report.consumers]
    for tool, v in report.consumers.items():
        failures += [(f"{tool} FAILED {x['check']}", x["message"], x.get("fix") or "")
                     for x in (v.get("failures") or [])]
    for head, message, fix in failures[:MAX_FAILURES]:
        lines = [_said(line) for line in message.splitlines() or [""]]
        click.echo(f"  {head}: " + "\n      ".join(lines))
        if fix:
            click.echo(f"    fix: {_said(fix)}")
    if len(failures) > MAX_FAILURES:
        click.echo(f"  ... and {len(failures) - MAX_FAILURES} more failures (see --json, --md or --html)")
    if verbose and report.timings:
        click.echo("  time per check (s): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                      sorted(report.timings.items(), key=lambda kv: -kv[1])
                                                      if v >= 0.005))


def _package_line(report) -> str:
    """One line for one of several packages: status, id, version, the families and tools that failed."""
    from .._text import terminal_safe

    where = Path(str(report.source))
    where = where.parent.name if where.name in ("rdf.yaml", "bioimageio.yaml") and where.parent.name else where.name
    pid = terminal_safe(report.meta.get("id") or report.name or where or report.source, single_line=True, max_len=40)
    version = terminal_safe(report.meta.get("version") or "-", single_line=True, max_len=16)
    failing = [f for f in report.own_families if report.family_status(f) == "failed"]
    failing += [f"{t} (required)" for t in report.required if report.consumers.get(t, {}).get("status") == "failed"]
    why = ("failing: " + ", ".join(failing)) if failing else ""
    if not failing and not report.passed:
        why = "not checked: " + ", ".join(f for f in report.own_families if report.family_status(f) == "skipped")
    return f"{report.status.upper():<7} {pid:<40} {version:<10} {why}".rstrip()


def _clean_process_context():
    """Workers started as new interpreters, never forked from this process.

    Why: a fork copies this process's memory but not its threads; an onnxruntime session (or torch's
    thread pool) it holds then waits forever in the child for threads that do not exist there:
    ``validate --jobs`` from a process that had run a model hung (seen under pytest-xdist).  A fork
    server would be clean too, but keeps the environment of the moment it started, and settings are
    read from the environment at each call (:mod:`bioimgzoo.config`).
    """
    import multiprocessing

    return multiprocessing.get_context("spawn")


def _validate_one(args: tuple) -> object:
    """One package in a worker process (``--jobs``): module level, so that it pickles."""
    src, options = args
    from ..validation import check_package

    return check_package(src, **options)


def _write(path: str, text: str) -> None:
    from .._files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, "utf-8")


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--weights", default=None, metavar="FORMAT", help="Test only this weight format (default: all).")
@click.option("--trust-code", is_flag=True, help="Allow tests that run code the package names.")
@click.option("--static", is_flag=True, help="Check the descriptions alone: no file is read, nothing runs.")
@click.option("--reference", type=click.Choice(["core"]), default=None,
              help="Also run bioimageio.core's test and report where it and bioimgzoo disagree.")
@click.option("--require", default="", metavar="TOOLS",
              help="Consumer tools that must pass, comma-separated (deepimagej,ilastik,...).")
@click.option("--no-deepimagej", is_flag=True, help="Leave out the DeepImageJ tool.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Packages validated in parallel (processes).")
@click.option("-v", "--verbose", is_flag=True,
              help="Every package's families, tools and failures (for several packages), and each check's time.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report(s) as JSON (a list when several sources are given).")
@click.option("--md", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Write a Markdown report (a summary table first for several).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML report (for several: an index page, one page per package "
                   "beside it).")
def validate(sources, weights, trust_code, static, reference, require, no_deepimagej, jobs, verbose, json_out,
             md_out, html_out):
    """Validate model packages; exit 0 when every one passes, 1 otherwise.

    A package passes when no format, files, safety, reproduction or agreement check
    fails (warnings allowed).  The consumer tools' verdicts are reported beside the
    status and fail it only when named in --require.
    """
    from ..descr.weights import canonical_format
    from ..errors import InputError
    from ..validation import CONSUMER_TOOLS
    from ..validation import report as render

    fmt = canonical_format(weights, option="--weights") if weights else None
    required = [t.strip().lower() for t in require.split(",") if t.strip()]
    unknown = [t for t in required if t not in CONSUMER_TOOLS]
    if unknown:
        raise InputError(f"--require names unknown tools {', '.join(unknown)}: choose among "
                         f"{', '.join(CONSUMER_TOOLS)}")
    options = dict(weights=fmt, trust_code=trust_code, deepimagej=not no_deepimagej, static=static,
                   reference=reference, require=required, keep_artifacts=bool(html_out))
    work = [(src, options) for src in sources]
    if jobs > 1 and len(sources) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(sources)), mp_context=_clean_process_context()) as pool:
            reports = list(pool.map(_validate_one, work))
    else:
        reports = [_validate_one(w) for w in work]
    if len(reports) == 1 or verbose:
        for r in reports:
            _echo_report(r, verbose=verbose)
    else:  # one line a package: the verdicts first, details behind -v and in the reports
        for r in reports:
            click.echo(_package_line(r))
    if len(reports) > 1:
        click.echo(f"{sum(r.passed for r in reports)} of {len(reports)} packages pass"
                   + ("" if verbose else " (details: -v, --html, --md or --json)"))
    if json_out:
        data = [r.to_dict() for r in reports]
        _write(json_out, json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str))
    if md_out:
        _write(md_out, reports[0].to_markdown() if len(reports) == 1 else render.summary_markdown(reports))
    if html_out:
        if len(reports) == 1:
            _write(html_out, reports[0].to_html())
        else:
            out = Path(html_out)
            links = [f"{out.stem}-{i + 1}.html" for i in range(len(reports))]
            for link, r in zip(links, reports):
                _write(str(out.with_name(link)), r.to_html())
            # the index, failures first, and the same table sorted by each column (its headers link them)
            for name, page in render.index_pages(reports, links, stem=out.stem).items():
                _write(str(out.with_name(name)), page)
    if not all(r.passed for r in reports):
        raise SystemExit(1)


COMMANDS = [validate]
