"""Format checks: does the package open, and what bioimageio.spec says of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from ._registry import FAILED, PASSED, STAGE_FORMAT, STAGE_OPEN, WARNING, Finding, register_family

__all__ = ["spec_findings"]


def _markdown(findings: Sequence[Finding]) -> list[str]:
    from .._text import markdown_safe

    # messages quote the package's author and the spec: escaped, never raw HTML
    lines = [f"- {'error' if f.status == FAILED else 'warning'}: {markdown_safe(f.message)}"
             for f in findings if f.status in (FAILED, WARNING)]
    return lines or ["No errors, no warnings."]


FAMILY = register_family("format", "Format (bioimageio.spec)", order=10, render_markdown=_markdown)


def spec_findings(path: Path) -> tuple[list[str], list[str], str | None]:
    """bioimageio.spec's errors and warnings (severity >= WARNING) on the package at ``path``, and its name.

    Parameters
    ----------
    path : Path
        The package's rdf.yaml, folder or zip.

    Returns
    -------
    errors, warnings : list of str
        ``"<location>: <message>"`` each.  Files are checked too
        (``perform_io_checks=True``); a spec that cannot validate at all gives
        one error saying why.
    name : str or None
        The package's name as the spec read it.
    """
    from bioimageio.spec import load_description

    try:
        rd = load_description(path, perform_io_checks=True)
    except Exception as e:  # e.g. an unknown github_user looked up without network raises ConnectError
        return [f"bioimageio.spec could not validate the package: {type(e).__name__}: {e}"], [], None
    s = rd.validation_summary
    errors = [f"{'.'.join(map(str, e.loc)) or '-'}: {e.msg}" for e in s.errors]
    warnings_ = [f"{'.'.join(map(str, w.loc)) or '-'}: {w.msg}" for w in s.warnings if w.severity >= 30]
    return errors, warnings_, getattr(rd, "name", None)


@FAMILY.check("open", title="the description parses", stage=STAGE_OPEN, requires=(),
              fix="Fix the fields the message names (bioimageio.spec's own terms); the package must parse as "
                  "a bioimage.io model description.")
def _open(ctx: Any) -> Iterator[tuple]:
    """The runner opened the package before any check; this reports how that went."""
    if ctx.pkg is None:
        yield FAILED, ctx.open_error or "the package could not be opened"
    else:
        yield PASSED, f"format {ctx.pkg.original_format_version} model {ctx.pkg.name!r}"


@FAMILY.check("spec", title="bioimageio.spec errors and warnings", stage=STAGE_FORMAT,
              requires=("package", "files"),
              fix="Fix each field bioimageio.spec names; warnings do not fail the package but reviewers read "
                  "them.")
def _spec(ctx: Any) -> Iterator[tuple]:
    """One finding per spec error and warning, and a pass when there is no error."""
    errors, warnings_, _ = spec_findings(ctx.local)
    for e in errors:
        yield FAILED, e
    for w in warnings_:
        yield WARNING, w
    if not errors:
        yield PASSED, "bioimageio.spec finds no errors" + (f" ({len(warnings_)} warning(s))" if warnings_ else "")
