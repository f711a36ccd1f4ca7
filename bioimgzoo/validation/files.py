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


def _descr_file_refs(descr: Any) -> Iterator[tuple[str, str, bool]]:
    """Every file reference anywhere in a parsed description: (where, text, is_absolute).

    A generic walk over bioimageio.spec's objects, so no field is forgotten (icon,
    ONNX external data, attachments, an inline training dataset's documentation...).
    """
    from pathlib import PurePath

    from bioimageio.spec._internal.io import RelativeFilePath
    from pydantic import BaseModel

    stack: list[tuple[str, Any]] = [("", descr)]
    seen: set[int] = set()
    while stack:
        where, obj = stack.pop()
        if isinstance(obj, RelativeFilePath):
            yield where, str(obj.path), False
        elif isinstance(obj, PurePath):
            yield where, str(obj), True
        elif isinstance(obj, (BaseModel, list, tuple, dict)):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, BaseModel):
                items = ((name, getattr(obj, name, None)) for name in type(obj).model_fields)
            elif isinstance(obj, dict):
                items = ((str(k), v) for k, v in obj.items())
            else:
                items = ((f"[{i}]", v) for i, v in enumerate(obj))
            for key, value in items:
                stack.append((f"{where}.{key}" if where and not key.startswith("[") else f"{where}{key}", value))


def files_outside(pkg: Any) -> list[str]:
    """Messages for every file the package names outside itself.

    Checked: the raw rdf's file fields (absolute paths, ``..``, ``file://``), every
    file reference anywhere in the parsed description, and, for a folder, where each
    reference really leads (a symbolic link out of the folder is outside too).

    Parameters
    ----------
    pkg : Package
        An opened package.

    Returns
    -------
    list of str
        One message per refused reference; empty when every file is the package's own
        (http(s) URLs are allowed: they are downloaded, never read from this machine).
    """
    from ..errors import PackageError
    from ..package import FolderSource, safe_relpath

    refs = [(where, ref) for where, ref in raw_file_refs(pkg.raw)]
    refs += [(where, ref if not absolute else "/" + ref.lstrip("/"))
             for where, ref, absolute in _descr_file_refs(pkg.descr)]
    out, done = [], set()
    for where, ref in refs:
        if ref in done or ref.lower().startswith(("http://", "https://")):
            continue
        done.add(ref)
        try:
            rel = safe_relpath(ref, where)
            if isinstance(pkg.source, FolderSource):
                pkg.source.resolve_inside(rel)  # spec and core read the folder directly: follow links here
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
