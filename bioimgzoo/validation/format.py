"""Format checks: does the package open, and what bioimageio.spec says of it.

bioimageio.spec looks every ``github_user`` of the authors and maintainers up
on api.github.com and, without network, fails the whole validation with a
connection error.  That look-up is the one part of format validation that
needs the network, so it is separated (:func:`github_users_known`): users that
cannot be verified (offline, or ``BIOIMGZOO_OFFLINE``) count as known while
spec validates, and the check ``format.github_users`` says ``skipped`` with a
warning; a user GitHub says does not exist stays spec's error.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ._registry import FAILED, NOT_APPLICABLE, PASSED, SKIPPED, STAGE_FORMAT, STAGE_OPEN, WARNING, Finding, register_family

__all__ = ["spec_findings", "completeness", "github_users", "github_users_known"]

log = logging.getLogger("bioimgzoo")


def _markdown(findings: Sequence[Finding]) -> list[str]:
    from .._text import markdown_safe

    # messages quote the package's author and the spec: escaped, never raw HTML
    lines = [f"- {'error' if f.status == FAILED else 'warning'}: {markdown_safe(f.message)}"
             for f in findings if f.status in (FAILED, WARNING)]
    return lines or ["No errors, no warnings."]


FAMILY = register_family("format", "Format (bioimageio.spec)", order=10, render_markdown=_markdown)


def github_users(raw: Any) -> list[str]:
    """The ``github_user`` names of a description's authors, maintainers and packagers (raw YAML)."""
    users: list[str] = []
    if isinstance(raw, Mapping):
        for key in ("authors", "maintainers", "packaged_by"):
            for person in raw.get(key) or []:
                if isinstance(person, Mapping) and isinstance(person.get("github_user"), str):
                    users.append(person["github_user"])
    return list(dict.fromkeys(users))


def _unverifiable(users: Sequence[str]) -> tuple[list[str], str]:
    """The users GitHub cannot be asked about now (offline), and why; known and nonexistent ones are not."""
    from bioimageio.spec._internal.constants import KNOWN_GITHUB_USERS
    from bioimageio.spec._internal.field_validation import validate_github_user
    from bioimageio.spec._internal.validation_context import ValidationContext

    from .. import config

    unknown = [u for u in users if u.lower() not in KNOWN_GITHUB_USERS]
    if not unknown:
        return [], ""
    if config.offline():
        return unknown, "offline (BIOIMGZOO_OFFLINE)"
    out, why = [], ""
    for user in unknown:
        try:
            with ValidationContext(perform_io_checks=True):
                validate_github_user(user)
        except ValueError:
            continue  # GitHub says it does not exist: bioimageio.spec reports that itself
        except Exception as e:  # no network: httpx.ConnectError and friends
            out.append(user)
            why = f"api.github.com unreachable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return out, why


@contextlib.contextmanager
def github_users_known(users: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """Inside the block, the ``users`` GitHub cannot be asked about now count as known to bioimageio.spec.

    Yields ``(unverified users, why)``; the spec's set of known users is restored afterwards.
    """
    from bioimageio.spec._internal.constants import KNOWN_GITHUB_USERS

    unverified, why = _unverifiable(users)
    added = [u for u in dict.fromkeys(u.lower() for u in unverified) if u not in KNOWN_GITHUB_USERS]
    KNOWN_GITHUB_USERS.update(added)
    try:
        yield unverified, why
    finally:
        KNOWN_GITHUB_USERS.difference_update(added)


def spec_findings(path: Path, *, format_version: str = "discover", perform_io_checks: bool = True
                  ) -> tuple[list[str], list[str], str | None]:
    """bioimageio.spec's errors and warnings (severity >= WARNING) on the package at ``path``, and its name.

    Parameters
    ----------
    path : Path
        The package's rdf.yaml, folder or zip.
    format_version : str
        ``"discover"``: the package's own format; ``"latest"``: after the upgrade to 0.5.
    perform_io_checks : bool
        Let bioimageio.spec read and hash the files.  Validation turns it off when the
        package names http(s) files: spec would download them without our size caps
        (the files family fetches and hashes them with the caps).

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
        rd = load_description(path, format_version=format_version, perform_io_checks=perform_io_checks)
    except Exception as e:  # a look-up spec makes itself failed (callers wrap it in github_users_known)
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
    if ctx.pkg is None and any(p["fatal"] for p in ctx.zip_problems):
        # the zip's own problem is the finding (files.zip); opening it was refused because of it
        yield SKIPPED, f"not opened: {ctx.open_error}"
    elif ctx.pkg is None:
        yield FAILED, ctx.open_error or "the package could not be opened"
    else:
        yield PASSED, f"format {ctx.pkg.original_format_version} model {ctx.pkg.name!r}"


def _remote_refs(pkg: Any) -> list[str]:
    from .files import raw_file_refs

    return [ref for _, ref in raw_file_refs(pkg.raw) if ref.lower().startswith(("http://", "https://"))]


def _static_findings(pkg: Any, format_version: str) -> tuple[list[str], list[str]]:
    """bioimageio.spec on the description alone (no file read, nothing downloaded)."""
    from bioimageio.spec import build_description
    from bioimageio.spec._internal.validation_context import ValidationContext

    data, file_name = pkg.source.read_rdf()
    root = getattr(pkg.source, "root", None) or Path.cwd()
    try:
        # a deep copy: spec converts the mapping it is given in place
        rd = build_description(copy.deepcopy(pkg.raw), format_version=format_version,
                               context=ValidationContext(root=root, file_name=file_name, perform_io_checks=False))
    except Exception as e:
        return [f"bioimageio.spec could not validate the description: {type(e).__name__}: {e}"], []
    s = rd.validation_summary
    return ([f"{'.'.join(map(str, e.loc)) or '-'}: {e.msg}" for e in s.errors],
            [f"{'.'.join(map(str, w.loc)) or '-'}: {w.msg}" for w in s.warnings if w.severity >= 30])


@FAMILY.check("spec", title="bioimageio.spec errors and warnings, in the package's own format",
              stage=STAGE_FORMAT, requires=("package",),
              fix="Fix each field bioimageio.spec names; warnings do not fail the package but reviewers read "
                  "them.")
def _spec(ctx: Any) -> Iterator[tuple]:
    """One finding per spec error and warning, and a pass when there is no error."""
    fv = ctx.pkg.original_format_version
    if ctx.static:
        errors, warnings_ = _static_findings(ctx.pkg, "discover")
        note = " (description only: --static)"
    elif ctx.local is None:
        yield SKIPPED, f"not run: its files are not read ({ctx.refused or ctx.open_error})"
        return
    else:
        remote = _remote_refs(ctx.pkg)
        # spec downloads http(s) files itself, without our caps: it checks the fields, files.* fetch and hash.
        # A missing or altered file is files.present's / files.sha256's finding: spec is not asked to repeat it
        files_failed = sorted({f.check for f in ctx.findings if f.family == "files" and f.status == FAILED})
        with github_users_known(github_users(ctx.pkg.raw)):
            errors, warnings_, _ = spec_findings(ctx.local, perform_io_checks=not remote and not files_failed)
        note = f" (remote files {', '.join(remote[:3])} checked by files.sha256, not by spec)" if remote else \
            f" (fields only: {', '.join(files_failed)} failed)" if files_failed else ""
    for e in errors:
        yield FAILED, e, {"format_version": fv}
    for w in warnings_:
        yield WARNING, w, {"format_version": fv}
    if not errors:
        yield PASSED, (f"bioimageio.spec finds no errors in format {fv}"
                       + (f" ({len(warnings_)} warning(s))" if warnings_ else "") + note), {"format_version": fv}


@FAMILY.check("github_users", title="the authors' and maintainers' GitHub users exist", severity="warning",
              stage=STAGE_FORMAT, requires=("package",),
              fix="Validate once with network access (bioimageio.spec asks api.github.com), or check the names.")
def _github_users(ctx: Any) -> Iterator[tuple]:
    """The look-up bioimageio.spec does online; offline it is skipped with a warning (never a format failure)."""
    users = github_users(ctx.pkg.raw)
    if not users:
        yield NOT_APPLICABLE, "no github_user named"
        return
    if ctx.static:
        yield SKIPPED, "not looked up (--static: nothing is fetched)"
        return
    unverified, why = _unverifiable(users)
    if unverified:
        log.warning("GitHub user(s) %s not verified: %s", ", ".join(unverified), why)
        yield SKIPPED, f"GitHub user(s) {', '.join(unverified)} not verified: {why}; the other format checks ran"
    else:
        yield PASSED, f"GitHub user(s) {', '.join(users)} known or verified (a nonexistent one is format.spec's error)"


@FAMILY.check("upgrade", title="bioimageio.spec errors and warnings after the upgrade to format 0.5",
              stage=STAGE_FORMAT, requires=("package",),
              fix="Write the description in format 0.5 (bioimageio.spec's update_format, or re-export it with "
                  "bioimgzoo export) and fix the fields the upgraded description gets wrong.")
def _upgrade(ctx: Any) -> Iterator[tuple]:
    """The description upgraded to 0.5: its own errors (those of the old format are format.spec's)."""
    fv = ctx.pkg.original_format_version
    if fv.startswith("0.5"):
        yield PASSED, f"already format {fv}: nothing to upgrade"
        return
    errors, warnings_ = _static_findings(ctx.pkg, "latest")
    if any(e.startswith("format_version:") for e in errors):
        # spec's converter gave up: what follows is the old text read as 0.5, one error per old field
        others = [e for e in errors if not e.startswith("format_version:")]
        yield FAILED, (f"bioimageio.spec does not upgrade this format {fv} description to 0.5: its converter "
                       f"leaves it unconverted ({len(others)} field error(s), first: {'; '.join(others[:3])})")
        return
    from ..package.repair import is_metadata_error

    serious = []
    for e in errors:
        # metadata the upgrade rejects (documentation, license, ...) cannot affect a run: bioimgzoo repairs
        # it when opening (format.repairs), so a reviewer sees a warning, not a failure
        if is_metadata_error(e.split(":", 1)[0].split(".")):
            yield WARNING, f"after the upgrade to 0.5 (metadata only; the model still runs): {e}"
        else:
            serious.append(e)
            yield FAILED, f"after the upgrade to 0.5: {e}"
    for w in warnings_:
        yield WARNING, f"after the upgrade to 0.5: {w}"
    if not serious:
        yield PASSED, f"format {fv} upgrades to 0.5" + (" (metadata aside)" if errors else " without errors")


@FAMILY.check("repairs", title="what bioimgzoo repaired to open the description",
              stage=STAGE_FORMAT, requires=("package",),
              fix="Fix the metadata fields named (documentation, license, citations, ...): bioimgzoo runs the "
                  "model without them, but the zoo and other consumers may refuse the description.")
def _repairs(ctx: Any) -> Iterator[tuple]:
    """Metadata the upgrade to 0.5 rejected and that bioimgzoo dropped or fixed to run the model (warnings)."""
    repaired = tuple(getattr(ctx.pkg, "warnings", ()) or ())
    if not repaired:
        yield NOT_APPLICABLE, "nothing needed repairing"
        return
    for line in repaired:
        yield WARNING, line


# ------------------------------------------------------------------------------------------- completeness

def completeness(descr: Any, documentation: str | None) -> tuple[float, list[str], list[str]]:
    """What a reviewer expects of the metadata: a score and the items missing.

    Parameters
    ----------
    descr : ModelDescr
        The (0.5) description.
    documentation : str or None
        The documentation's text (None: not read, e.g. ``--static``; that item is then
        left out of the score).

    Returns
    -------
    score : float
        Items present / items judged, in [0, 1].
    present, missing : list of str
        The items, in words.
    """
    items: list[tuple[str, bool]] = []
    authors = list(getattr(descr, "authors", None) or [])
    bare = [str(a.name) for a in authors if not (getattr(a, "affiliation", None) or getattr(a, "orcid", None))]
    items.append(("authors with an affiliation or ORCID" + (f" (not: {', '.join(bare)})" if bare else ""),
                  bool(authors) and not bare))
    maint = list(getattr(descr, "maintainers", None) or [])
    no_gh = [str(m.name or "?") for m in maint if not getattr(m, "github_user", None)]
    items.append(("maintainers with GitHub users" + (f" (not: {', '.join(no_gh)})" if no_gh else
                                                     "" if maint else " (none listed)"),
                  bool(maint) and not no_gh))
    cite = list(getattr(descr, "cite", None) or [])
    no_doi = [str(c.text)[:40] for c in cite if not getattr(c, "doi", None)]
    items.append(("citations with a DOI" + (f" (not: {'; '.join(no_doi)})" if no_doi else
                                            "" if cite else " (none listed)"), bool(cite) and not no_doi))
    items.append(("a license", bool(getattr(descr, "license", None))))
    if documentation is not None:
        import re

        has = bool(re.search(r"^#+\s*validation\b", documentation, re.I | re.M))
        items.append(("documentation with a '# Validation' section", has))
    items.append(("cover images", bool(getattr(descr, "covers", None))))
    items.append(("tags", bool(getattr(descr, "tags", None))))
    present = [name for name, ok in items if ok]
    missing = [name for name, ok in items if not ok]
    return len(present) / len(items), present, missing


@FAMILY.check("completeness", title="metadata a reviewer expects", severity="warning", stage=STAGE_FORMAT,
              requires=("package",),
              fix="Add what is missing: affiliations or ORCIDs for the authors, maintainers with GitHub user "
                  "names, DOIs for the citations, a license, a '# Validation' section in the documentation "
                  "(how the model was evaluated), cover images and tags.")
def _completeness(ctx: Any) -> Iterator[tuple]:
    """A score with the missing items; a warning unless every item is there."""
    from ..errors import BioimgzooError

    doc = None
    if not ctx.static and ctx.local is not None and getattr(ctx.pkg.descr, "documentation", None) is not None:
        try:
            doc = ctx.pkg.file(ctx.pkg.descr.documentation).read_text("utf-8", errors="replace")[:1_000_000]
        except BioimgzooError:
            doc = ""  # missing documentation: files.present reports it; here it has no Validation section
    score, present, missing = completeness(ctx.pkg.descr, doc)
    details = {"score": round(score, 3), "present": present, "missing": missing,
               "documentation_read": doc is not None}
    if missing:
        yield WARNING, f"metadata {score:.0%} complete; missing: {'; '.join(missing)}", details
    else:
        yield PASSED, f"metadata 100% complete ({len(present)} items)", details
