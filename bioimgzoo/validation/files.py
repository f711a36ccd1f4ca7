"""Files checks: which files a package names, and the refusal of any outside it.

These run before anything reads a file (:data:`~._registry.STAGE_FILES`):
bioimageio.spec hashes and bioimageio.core loads every file a description
names, so a reference to ``/etc/passwd`` or ``../../secret`` must be refused
before either is handed the package.  The refusal itself is enforced by the
run's context (:attr:`~._context.Context.outside`), so it holds even when this
family is not asked for; this family reports it.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ._registry import FAILED, PASSED, STAGE_FILES, register_family

__all__ = ["raw_file_refs", "files_outside"]

FAMILY = register_family("files", "Files", order=20)


def raw_file_refs(raw: Mapping) -> list[tuple[str, str]]:
    """Every file the raw ``rdf.yaml`` names, as ``(where, reference)`` pairs.

    Read from the raw mapping, not the parsed description, so that what the
    author wrote (a URL, a sub-folder, ``..``) is seen before any parsing
    resolves it.
    """
    refs: list[tuple[str, str]] = []

    def add(where: str, v: Any) -> None:
        if isinstance(v, Mapping):
            v = v.get("source")
        if isinstance(v, str) and v:
            refs.append((where, v))

    for i, cov in enumerate(raw.get("covers") or []):
        add(f"covers[{i}]", cov)
    add("documentation", raw.get("documentation"))
    for i, att in enumerate(raw.get("attachments") or [] if isinstance(raw.get("attachments"), list) else []):
        add(f"attachments[{i}]", att)
    for wf, w in (raw.get("weights") or {}).items():
        if not isinstance(w, Mapping):
            continue
        add(f"weights.{wf}", w)
        arch = w.get("architecture")
        if isinstance(arch, Mapping):
            add(f"weights.{wf}.architecture", arch)
        elif isinstance(arch, str) and ":" in arch and not arch.startswith("http"):
            path = arch.rsplit(":", 1)[0]
            if path.endswith(".py"):
                add(f"weights.{wf}.architecture", path)
        add(f"weights.{wf}.dependencies", w.get("dependencies"))
    for kind in ("inputs", "outputs"):
        for t in _raw_tensors(raw, kind):
            tid = t.get("id") or t.get("name")
            add(f"{kind}.{tid}.test_tensor", t.get("test_tensor"))
            add(f"{kind}.{tid}.sample_tensor", t.get("sample_tensor"))
    for key in ("test_inputs", "test_outputs", "sample_inputs", "sample_outputs"):
        for i, v in enumerate(raw.get(key) or []):
            add(f"{key}[{i}]", v)
    return refs


def _raw_tensors(raw: Mapping, kind: str) -> list[dict]:
    return [t for t in (raw.get(kind) or []) if isinstance(t, Mapping)]


def files_outside(pkg: Any) -> list[str]:
    """Messages for every file the rdf names outside the package (absolute paths, ``..``, file:// URLs).

    Parameters
    ----------
    pkg : Package
        An opened package (its raw ``rdf.yaml`` is read).

    Returns
    -------
    list of str
        One message per refused reference; empty when every file is the package's own
        (http(s) URLs are allowed: they are downloaded, never read from this machine).
    """
    from ..errors import PackageError
    from ..package import safe_relpath

    out = []
    for where, ref in raw_file_refs(pkg.raw):
        if ref.lower().startswith(("http://", "https://")):
            continue
        try:
            if "://" in ref or (len(ref) > 1 and ref[1] == ":"):
                raise PackageError(f"{where} names {ref!r}, which is not a file of the package")
            safe_relpath(ref, where)
        except PackageError as e:
            out.append(f"{e} (refused: validation reads only the package's own files)")
    return out


@FAMILY.check("inside", title="every file inside the package", stage=STAGE_FILES, requires=("package",),
              fix="Put every file the description names inside the package and reference it by a relative "
                  "path (or an http(s) URL); remove absolute paths, '..' and file:// references.")
def _inside(ctx: Any) -> Iterator[tuple]:
    """One failure per reference outside the package (the run's context then refuses every read)."""
    # the context refuses these whether or not this family runs; here they are reported
    outside = ctx.outside
    if outside:
        for message in outside:
            yield FAILED, message
        return
    yield PASSED, f"{len(raw_file_refs(ctx.pkg.raw))} file reference(s), all inside the package or http(s)"
