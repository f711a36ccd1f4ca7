"""Files checks: which files a package names, and the refusal of any outside it.

These run before anything reads a file (:data:`~._registry.STAGE_FILES`):
bioimageio.spec hashes and bioimageio.core loads every file a description
names, so a reference to ``/etc/passwd`` or ``../../secret`` must be refused
before either is handed the package.  The refusal itself is enforced by the
run's context (:attr:`~._context.Context.outside`), so it holds even when this
family is not asked for; this family reports it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

from ._registry import FAILED, NOT_APPLICABLE, PASSED, STAGE_FILES, STAGE_OPEN, WARNING, register_family

__all__ = ["raw_file_refs", "files_outside", "zip_problems", "declared_files"]

#: a reference with a scheme (https://, zenodo://...): not a file of the package
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)

#: a zip holding more members than this is not a model package (names are listed before anything is read)
MAX_ZIP_MEMBERS = 10_000

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

    def items(v: Any) -> list:  # the raw text may hold anything where a list belongs
        return v if isinstance(v, list) else []

    for i, cov in enumerate(items(raw.get("covers"))):
        add(f"covers[{i}]", cov)
    add("documentation", raw.get("documentation"))
    att = raw.get("attachments")  # format 0.4: {files: [...]}; 0.5: a list
    for i, a in enumerate(items(att.get("files")) if isinstance(att, Mapping) else items(att)):
        add(f"attachments[{i}]", a)
    weights = raw.get("weights")
    for wf, w in (weights.items() if isinstance(weights, Mapping) else ()):
        if not isinstance(w, Mapping):
            continue
        add(f"weights.{wf}", w)
        arch = w.get("architecture")
        if isinstance(arch, Mapping):
            add(f"weights.{wf}.architecture", arch)
        elif isinstance(arch, str) and ":" in arch and not _URL.match(arch):
            path = arch.rsplit(":", 1)[0]
            if path.endswith(".py"):
                add(f"weights.{wf}.architecture", path)
        deps = w.get("dependencies")
        if isinstance(deps, str) and deps.split(":", 1)[0] in ("conda", "pip"):
            deps = deps.split(":", 1)[1]  # format 0.4 writes "conda:environment.yaml": a manager, then the file
        add(f"weights.{wf}.dependencies", deps)
    for kind in ("inputs", "outputs"):
        for t in _raw_tensors(raw, kind):
            tid = t.get("id") or t.get("name")
            add(f"{kind}.{tid}.test_tensor", t.get("test_tensor"))
            add(f"{kind}.{tid}.sample_tensor", t.get("sample_tensor"))
    for key in ("test_inputs", "test_outputs", "sample_inputs", "sample_outputs"):
        for i, v in enumerate(items(raw.get(key))):
            add(f"{key}[{i}]", v)
    icon = raw.get("icon")
    if isinstance(icon, str) and len(icon) > 2:  # an emoji is an icon too, not a file
        add("icon", icon)
    # an inline dataset names files of its own; read here too, as the parsed description may have dropped it
    if isinstance(raw.get("training_data"), Mapping) and raw is not raw.get("training_data"):
        refs += [(f"training_data.{w}", r) for w, r in raw_file_refs(raw["training_data"])]
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


# ----------------------------------------------------------------------------------------- zip safety

def _problem(kind: str, message: str, *, fatal: bool, member: str = "") -> dict:
    return {"kind": kind, "message": message, "fatal": fatal, "member": member}


def zip_problems(source: Any) -> list[dict]:
    """What is wrong with a zip package, read from its central directory alone (no member is extracted).

    Parameters
    ----------
    source : str or os.PathLike
        Anything; only a path to an existing ``.zip`` file is examined.

    Returns
    -------
    list of dict
        ``{"kind", "message", "fatal", "member"}`` per problem.  ``kind`` is one of
        ``zip-slip`` (a member path leaving the package: absolute, ``..``, a drive
        letter), ``symlink`` (a symbolic-link member), ``size`` (a member larger than
        ``BIOIMGZOO_MAX_FILE_BYTES``), ``ratio`` (inflating more than
        ``BIOIMGZOO_MAX_ZIP_RATIO`` times), ``duplicate`` (a name twice), ``nested``
        (the description in a sub-folder, not at the root), ``members`` (too many).
        ``fatal`` problems stop the validation before the zip is opened.
    """
    import zipfile

    from .. import config

    try:
        path = Path(os.fspath(source))
        if path.suffix.lower() != ".zip" or not path.is_file():
            return []
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (TypeError, ValueError, OSError, zipfile.BadZipFile):
        return []  # not a path, or not a readable zip: opening it reports why
    zip_bytes = max(path.stat().st_size, 1)
    out: list[dict] = []
    if len(infos) > MAX_ZIP_MEMBERS:
        out.append(_problem("members", f"the zip holds {len(infos)} members, more than {MAX_ZIP_MEMBERS}: "
                            "it is not a model package", fatal=True))
        return out
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            out.append(_problem("zip-slip", f"member {name!r} leaves the package (an absolute path, '..' or a "
                                "drive letter): extracting it would write outside the target folder",
                                fatal=True, member=name))
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_ISLNK(mode):
            out.append(_problem("symlink", f"member {name!r} is a symbolic link: it may point anywhere on the "
                                "machine that extracts it", fatal=True, member=name))
        if name in seen:
            out.append(_problem("duplicate", f"member name {name!r} appears twice: tools disagree on which copy "
                                "they read", fatal=True, member=name))
        seen.add(name)
        if info.is_dir():
            continue
        if info.file_size > config.max_file_bytes():
            out.append(_problem("size", f"member {name!r} declares {info.file_size} bytes, more than the "
                                f"{config.max_file_bytes()} allowed (BIOIMGZOO_MAX_FILE_BYTES)",
                                fatal=True, member=name))
        ratio = info.file_size / max(min(info.compress_size, zip_bytes), 1)
        if info.file_size > config.ZIP_RATIO_EXEMPT_BYTES and ratio > config.max_zip_ratio():
            out.append(_problem("ratio", f"member {name!r} inflates {ratio:.0f} times ({info.compress_size} -> "
                                f"{info.file_size} bytes): it looks like a zip bomb", fatal=True, member=name))
    from ..package.sources import RDF_NAMES

    names = [i.filename for i in infos if not i.is_dir()]
    if not any(n in RDF_NAMES for n in names):
        nested = [n for n in names if PurePosixPath(n).name in RDF_NAMES]
        if nested:
            out.append(_problem("nested", f"the description is in a sub-folder ({nested[0]}), not at the zip's "
                                "root: bioimageio.spec and the zoo's upload read only the root",
                                fatal=len(nested) != 1 or len(PurePosixPath(nested[0]).parts) != 2,
                                member=nested[0]))
    return out


@FAMILY.check("zip", title="the zip is safe to extract", stage=STAGE_OPEN, requires=(),
              fix="Re-create the zip from the package folder with plain files only (e.g. "
                  "`cd package && zip -r ../model.zip .`): rdf.yaml at the root, no links, no absolute or '..' "
                  "paths, each name once.")
def _zip(ctx: Any) -> Iterator[tuple]:
    """One failure per problem of the zip's directory (not-applicable for a folder or URL)."""
    for p in ctx.zip_problems:
        yield FAILED, p["message"], {"kind": p["kind"], "member": p["member"]}
    if not ctx.zip_problems and ctx.pkg is not None and type(ctx.pkg.source).__name__ == "ZipSource":
        yield PASSED, "no member leaves the package, no links, sizes and ratios within limits, names unique"


# ----------------------------------------------------------------------------------------- presence, sha256

def declared_files(pkg: Any) -> list[tuple[str, str, str | None]]:
    """Every file the package names, once: ``(where, reference, declared sha256 or None)``.

    The parsed description's file fields (weights, test tensors, covers, documentation,
    architecture files, attachments...) with their sha256, plus the raw rdf's references.
    """
    from bioimageio.spec._internal.io import RelativeFilePath
    from pydantic import BaseModel

    found: dict[str, tuple[str, str, str | None]] = {}
    stack: list[tuple[str, Any]] = [("", pkg.descr)]
    seen: set[int] = set()
    while stack:
        where, obj = stack.pop()
        if isinstance(obj, (BaseModel, list, tuple, dict)):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
        if isinstance(obj, BaseModel):
            fields = type(obj).model_fields
            src = getattr(obj, "source", None) if "source" in fields else None
            if src is not None and not isinstance(src, BaseModel) or isinstance(src, RelativeFilePath):
                ref = str(src.path) if isinstance(src, RelativeFilePath) else str(src)
                sha = getattr(obj, "sha256", None) if "sha256" in fields else None
                if ref and (ref not in found or (sha and not found[ref][2])):
                    found[ref] = (where or "-", ref, str(sha) if sha else None)
            for name in fields:
                stack.append((f"{where}.{name}" if where else name, getattr(obj, name, None)))
        elif isinstance(obj, RelativeFilePath):
            ref = str(obj.path)
            found.setdefault(ref, (where, ref, None))
        elif isinstance(obj, dict):
            stack += [(f"{where}.{k}", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
    for where, ref in raw_file_refs(pkg.raw):
        found.setdefault(ref, (where, ref, None))
    return sorted(found.values(), key=lambda t: t[1])


def _local_files(ctx: Any) -> list[dict]:
    """Fetch each declared file once (our size caps apply); keep where it is or why it is not there."""
    def make() -> list[dict]:
        from .._files import sha256_file
        from ..errors import BioimgzooError

        out = []
        for where, ref, sha in declared_files(ctx.pkg):
            item = {"where": where, "ref": ref, "sha256": sha, "path": None, "error": "", "actual": None}
            try:
                # fetched without a hash: a mismatch is reported with both values, not raised
                item["path"] = ctx.pkg.file(ref, sha256=None)
                item["actual"] = sha256_file(item["path"]) if sha else None
            except BioimgzooError as e:
                item["error"] = str(e)
            out.append(item)
        return out

    return ctx.scratch("files.local", make)


@FAMILY.check("present", title="every referenced file is present", stage=STAGE_FILES,
              requires=("package", "files"),
              fix="Add the missing file to the package (same relative path as in rdf.yaml), or correct the path.")
def _present(ctx: Any) -> Iterator[tuple]:
    """One failure per file that cannot be read; one pass naming how many are there."""
    items = _local_files(ctx)
    missing = [i for i in items if i["error"]]
    for i in missing:
        yield FAILED, f"{i['where']}: {i['ref']} cannot be read: {i['error']}", {"file": i["ref"]}
    if not missing and items:
        yield PASSED, f"all {len(items)} referenced file(s) present"


@FAMILY.check("sha256", title="every file matches its declared sha256", stage=STAGE_FILES,
              requires=("package", "files"),
              fix="Re-export the package, or put the file's real sha256 (`sha256sum FILE`) in rdf.yaml if the "
                  "change to the file is intended.")
def _sha256(ctx: Any) -> Iterator[tuple]:
    """One failure per declared hash the file does not have; warnings for weights without a hash."""
    items = [i for i in _local_files(ctx) if not i["error"]]
    bad = [i for i in items if i["sha256"] and i["actual"] != i["sha256"].lower()]
    for i in bad:
        yield FAILED, (f"{i['where']}: {i['ref']}: sha256 mismatch (rdf.yaml declares {i['sha256']}, the file "
                       f"has {i['actual']})"), {"file": i["ref"], "declared": i["sha256"], "actual": i["actual"]}
    hashed = [i for i in items if i["sha256"]]
    if not bad:
        if hashed:
            yield PASSED, f"{len(hashed)} file(s) match their declared sha256"
        else:
            yield NOT_APPLICABLE, "no file declares a sha256"
    unhashed_weights = [i["ref"] for i in items if not i["sha256"] and i["where"].startswith("weights")]
    if unhashed_weights:
        yield WARNING, f"weights without a declared sha256: {', '.join(unhashed_weights)}"
