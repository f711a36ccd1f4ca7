"""``bioimgzoo validate``: run the registered checks on packages and report, one line per family."""

from __future__ import annotations

import json

import click

#: failures shown per package in the terminal; the --json / --md reports hold them all
MAX_FAILURES = 20


def _summary(report, family: str) -> str:
    """``"passed  2 passed, 1 warning"``: the family's status and its findings counted by status."""
    from ..validation import STATUSES

    statuses = [f.status for f in report.of_family(family)]
    return ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses) or "no findings"


def _echo_report(report) -> None:
    from .._text import terminal_safe

    name = terminal_safe(report.name or report.source, single_line=True)
    click.echo(f"{report.status.upper():<7} {name}")
    for family in report.families:
        click.echo(f"  {family:<14} {report.family_status(family):<15} {_summary(report, family)}")
    failures = report.failures
    for f in failures[:MAX_FAILURES]:
        # messages quote the package's author and the spec: no raw control sequences to the terminal
        # a multi-line message (the spec lists one field a line) keeps its lines, indented under the check
        lines = [terminal_safe(line) for line in f.message.splitlines() or [""]]
        click.echo(f"  FAILED {f.check}: " + "\n      ".join(lines))
        if f.fix:
            click.echo(f"    fix: {f.fix}")
    if len(failures) > MAX_FAILURES:
        click.echo(f"  ... and {len(failures) - MAX_FAILURES} more failures (see --json or --md)")


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--weights", default=None, metavar="FORMAT", help="Test only this weight format (default: all).")
@click.option("--trust-code", is_flag=True, help="Allow tests that run code the package names.")
@click.option("--no-deepimagej", is_flag=True, help="Leave out the DeepImageJ rules.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report(s) as JSON (a list when several sources are given).")
@click.option("--md", "md_out", type=click.Path(dir_okay=False), default=None, help="Write a Markdown report.")
def validate(sources, weights, trust_code, no_deepimagej, json_out, md_out):
    """Validate model packages; exit 0 when every one passes, 1 otherwise.

    Prints, per package, its status, one line per check family (status and
    findings counted by status) and each failure with its fix.
    """
    from .._files import atomic_path
    from ..descr.weights import canonical_format
    from ..validation import check_package

    fmt = canonical_format(weights, option="--weights") if weights else None
    reports = [check_package(src, weights=fmt, trust_code=trust_code, deepimagej=not no_deepimagej)
               for src in sources]
    for r in reports:
        _echo_report(r)
    if json_out:
        data = [r.to_dict() for r in reports]
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str), "utf-8")
    if md_out:
        with atomic_path(md_out) as tmp:
            tmp.write_text("\n".join(r.to_markdown() for r in reports), "utf-8")
    if not all(r.passed for r in reports):
        raise SystemExit(1)


COMMANDS = [validate]
