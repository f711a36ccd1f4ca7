"""Format checks: bioimageio.spec's errors and warnings on a package, as it would judge it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["spec_findings"]


def spec_findings(path: Path) -> tuple[list[str], list[str], str | None]:
    """bioimageio.spec's errors and warnings (severity >= WARNING) on the package at ``path``, and its name.

    Files are checked too (``perform_io_checks=True``); a spec that cannot
    validate at all gives one error saying why.
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
