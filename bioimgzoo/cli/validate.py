"""``bioimgzoo validate``: check packages (format, reproduction, DeepImageJ rules) and report."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--weights", default=None, metavar="FORMAT", help="Test only this weight format (default: all).")
@click.option("--trust-code", is_flag=True, help="Allow tests that run code the package names.")
@click.option("--no-deepimagej", is_flag=True, help="Leave out the DeepImageJ rules.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report(s) as JSON (a list when several sources are given).")
@click.option("--md", "md_out", type=click.Path(dir_okay=False), default=None, help="Write a Markdown report.")
def validate(sources, weights, trust_code, no_deepimagej, json_out, md_out):
    """Validate model packages; exit 0 when every one passes, 1 otherwise."""
    from .._files import atomic_path
    from .._text import terminal_safe
    from ..descr.weights import canonical_format
    from ..validation import check_package

    fmt = canonical_format(weights, option="--weights") if weights else None
    reports = [check_package(src, weights=fmt, trust_code=trust_code, deepimagej=not no_deepimagej)
               for src in sources]
    for r in reports:
        repro = ", ".join(f"{wf} {v['status']}" for wf, v in r.reproduction.items()) or "not run"
        click.echo(f"{'PASSED' if r.passed else 'FAILED'}  {terminal_safe(r.name or r.source, single_line=True)}"
                   f"  (format {'valid' if r.format_valid else 'invalid'}; reproduction: {repro}"
                   + ("" if no_deepimagej else
                      f"; DeepImageJ {'compatible' if r.deepimagej_compatible else 'not compatible'}") + ")")
        for e in r.format_errors[:5]:
            click.echo(f"  error: {terminal_safe(e)}")
        for wf, v in r.reproduction.items():
            for e in (v.get("errors") or [])[:3]:
                click.echo(f"  {wf}: {terminal_safe(e, single_line=True)}")
    if json_out:
        data = [r.to_dict() for r in reports]
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(data[0] if len(data) == 1 else data, indent=2), "utf-8")
    if md_out:
        with atomic_path(md_out) as tmp:
            tmp.write_text("\n".join(r.to_markdown() for r in reports), "utf-8")
    if not all(r.passed for r in reports):
        raise SystemExit(1)


COMMANDS = [validate]
