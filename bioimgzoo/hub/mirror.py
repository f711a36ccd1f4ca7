"""Lab mirror: a static folder in the zoo's URL layout, servable by any plain HTTP server.

``mirror(["affable-shark"], to="zoo-mirror")`` writes::

    zoo-mirror/bioimage-io/artifacts/
    ├── affable-shark/
    │   ├── index.html                 the artifact manifest (JSON): a static server answers
    │   │                              GET .../artifacts/affable-shark with it (folder -> index.html)
    │   └── files/rdf.yaml, files/...  the model's files, byte for byte as on the hub
    └── bioimage.io/children           the listing search reads (JSON, all models; the client
                                       filters and paginates itself since a static server
                                       ignores query strings)

Serve it (``python -m http.server 8000 --directory zoo-mirror``) and set
``BIOIMGZOO_HUB=http://HOST:8000``: ``load``, ``pull`` and ``search`` then
work with no internet.  The rdf is never rewritten (same sha256 as on the
hub).  One version per model: mirroring an id again replaces the mirrored
version; ``weights=`` limits the weight files copied (users of the mirror
then pass the same ``weights=``).  Running ``mirror`` again adds models to
the listing.  :func:`publish` adds a local package (a ``.zip`` or folder, e.g.
one you just exported) to the same kind of folder.  Every file is written atomically, so a mirror being served
while it is updated never serves a partial file.

Nothing leaves its place: every id that becomes a folder name is checked
against :data:`ID_PATTERN` (no ``..``, no separators) and every file path
the rdf names must be a plain relative path, all before the first file is
written; every file written must land inside the mirror folder, and every
file copied must lie inside the package (or the cache) it comes from -- a
symlink in a package folder that leads elsewhere (a README linked to a
private key) is refused, so nothing from outside the package is ever
served.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .._files import atomic_path, sha256_file
from ..errors import HubError
from .cache import now_iso
from .endpoints import COLLECTION, WORKSPACE, parse_zoo_id

__all__ = ["mirror", "publish", "MirrorResult", "MirroredModel", "ID_PATTERN", "check_id"]

#: What an id must look like to become a folder of the mirror: a single, plain path component.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Names the mirror layout itself uses under ``artifacts/``.
_RESERVED = {COLLECTION.lower()}


def check_id(value: str, *, where: str, fix: str) -> str:
    """``value`` if it is safe as one folder name (see :data:`ID_PATTERN`), else a HubError naming ``fix``."""
    text = str(value)
    if not ID_PATTERN.fullmatch(text) or ".." in text or text.lower() in _RESERVED:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise HubError(f"{where}: the id {shown!r} cannot be used as a mirror folder name: ids must be 1 to 128 "
                       "letters, digits, '.', '_' or '-', start with a letter or digit, contain no '..' and "
                       f"not be {COLLECTION!r}. {fix}")
    return text


def _safe_rel(rel: str, where: str) -> str:
    """A file path named by an rdf, as a plain relative posix path; anything that could leave the folder is refused."""
    text = str(rel)
    p = PurePosixPath(text)
    if ("\\" in text or "\x00" in text or p.is_absolute() or not p.parts or ".." in p.parts
            or re.match(r"^[A-Za-z]:", text)):
        raise HubError(f"{where} names the file {text!r}, which is not a plain relative path inside the package: "
                       "refused (nothing was written)")
    return p.as_posix()


def _inside(path: Path, root: Path) -> bool:
    """True when ``path``, all symlinks followed, lies inside ``root`` (also resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _source_root(source: Any) -> Path | None:
    """The folder a package source's files must stay inside: the package folder, or the cache."""
    layout = getattr(source, "layout", None)
    if layout is not None:
        return Path(layout.root)
    root = getattr(source, "root", None)
    return Path(root) if root is not None else None


def _check_source_file(local: Path, source: Any, rel: str) -> Path:
    """Refuse a package file that is, or leads through, a symlink to outside its package."""
    root = _source_root(source)
    outside = (not _inside(local, root)) if root is not None else os.path.islink(local)
    if outside:
        raise HubError(f"{source.name}: {rel!r} is a symbolic link to {os.path.realpath(local)}, outside the "
                       "package: refused, nothing outside a package is copied into a mirror. Copy the file "
                       "into the package instead of linking it")
    return local


@dataclass
class MirroredModel:
    id: str
    version: str | None
    files: list[str]


@dataclass
class MirrorResult:
    folder: Path
    models: list[MirroredModel] = field(default_factory=list)

    def serve_hint(self, port: int = 8000) -> str:
        return (f"python -m http.server {port} --directory {self.folder}\n"
                f"export BIOIMGZOO_HUB=http://HOST:{port}")


def _write_json(path: Path, data: object) -> None:
    # served as index.html: a "<script>" in a package's description must not become markup in a browser
    # (JSON readers decode \u003c back to "<")
    text = json.dumps(data, indent=1, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
    with atomic_path(path) as tmp:
        tmp.write_text(text, "utf-8")


def _copy_if_changed(src: Path, dest: Path, sha256: str | None) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        same = sha256_file(dest) == sha256 if sha256 else filecmp.cmp(src, dest, shallow=False)
        if same:
            return
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


class _StaticZoo:
    """One static zoo folder: model files, manifests and the children listing."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise HubError(f"{self.root} is a file: pick a folder for the mirror (--to)")
        self.artifacts = self.root / WORKSPACE / "artifacts"
        self.children_path = self.artifacts / COLLECTION / "children"
        self.listing: dict[str, dict] = {}
        if self.children_path.is_file():
            try:
                old = json.loads(self.children_path.read_text("utf-8"))
                items = old.get("items", []) if isinstance(old, dict) else old
                self.listing = {str(it.get("alias")): it for it in items if isinstance(it, dict) and it.get("alias")}
            except (OSError, ValueError) as e:
                raise HubError(f"{self.children_path} is not a listing written by bioimgzoo ({e}): "
                               "pick an empty folder or remove the file") from e

    def files_dir(self, alias: str) -> Path:
        return self.artifacts / check_id(alias, where="mirror", fix="Pass a valid id.") / "files"

    def dest(self, alias: str, rel: str) -> Path:
        """Where package file ``rel`` of ``alias`` goes; refused unless it stays inside the mirror folder."""
        dest = self.files_dir(alias) / rel
        if not _inside(dest, self.root):  # e.g. a folder of an old mirror replaced by a symlink
            raise HubError(f"{dest} leads outside the mirror folder {self.root} (a symbolic link on the way): "
                           "refused; remove the link or pick another folder")
        return dest

    def drop_stale(self, alias: str, wanted: set[str]) -> None:
        """Remove files of an earlier version that the new one does not have.

        Only entries of this model's own ``files/`` folder are touched: the
        walk does not follow symlinks and removes a link itself, never its target.
        """
        files_dir = self.files_dir(alias)
        if not files_dir.is_dir() or files_dir.is_symlink() or not _inside(files_dir, self.root):
            return
        for folder, dirs, names in os.walk(files_dir, followlinks=False):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                stale = Path(folder) / name
                if stale.relative_to(files_dir).as_posix() not in wanted:
                    stale.unlink()

    def add(self, alias: str, item: dict) -> None:
        _write_json(self.artifacts / check_id(alias, where="mirror", fix="Pass a valid id.") / "index.html", item)
        self.listing[alias] = item

    def save_listing(self) -> None:
        items = sorted(self.listing.values(),
                       key=lambda it: (-int(it.get("download_count") or 0), str(it.get("alias"))))
        # "static": the client filters and paginates itself (a plain server ignores the query string)
        _write_json(self.children_path, {"items": items, "total": len(items), "offset": 0, "limit": len(items),
                                         "static": True})


def _listing_item(alias: str, content: dict, versions: list, *, stamp: str, config: dict,
                  created_at: str | None = None, last_modified: str | None = None, download_count: int = 0) -> dict:
    return {
        "id": f"{WORKSPACE}/{alias}", "alias": alias, "type": content.get("type", "model"), "manifest": content,
        "versions": versions, "created_at": created_at or stamp, "last_modified": last_modified or stamp,
        "download_count": download_count, "config": config,
    }


def publish(package: str | Path, to: str | Path, *, id: str | None = None, comment: str = "published") -> str:
    """Add a local package (``.zip`` or folder) to the static zoo folder ``to``; returns its id.

    The package's files are copied byte for byte (the rdf keeps its sha256s);
    the id is ``id=`` or the rdf's own ``id``.  Serve the folder like a mirror.

    Raises
    ------
    HubError
        No usable id (it must match :data:`ID_PATTERN`), a file path that
        could leave the package or the mirror, or a package file that is a
        symlink to outside the package.  Checked before anything is written.
    """
    from .._yaml import load_yaml
    from ..package import open_package, resolve_source
    from .pull import needed_files

    source = resolve_source(Path(package))
    rdf_bytes, rdf_name = source.read_rdf()
    root = _source_root(source)
    if root is not None and (root / rdf_name).exists():
        _check_source_file(root / rdf_name, source, rdf_name)
    content = json.loads(json.dumps(load_yaml(rdf_bytes, f"{source.name}: {rdf_name}"), default=str))
    if not isinstance(content, dict):
        raise HubError(f"{source.name}: {rdf_name} is not a model description (not a mapping)")
    alias = str(id or content.get("id") or "").strip()
    if not alias:
        raise HubError(f"{package} has no id in its rdf.yaml: pass id= (CLI: --id) to publish it")
    check_id(alias, where=f"publishing {package}",
             fix="Publish it under a plain name instead: pass id= (e.g. id='lab-nuclei'; CLI: --id lab-nuclei).")
    zoo = _StaticZoo(to)
    # every path is checked before the first write: a refused package leaves the mirror as it was
    files: list[tuple[str, Path, str | None]] = []
    wanted = {"rdf.yaml"}
    for ref in needed_files(open_package(source).descr, weights=None, all_files=True)[1]:
        raw = str(ref.source)
        if "://" in raw:
            continue
        rel = _safe_rel(raw, f"{source.name}: {rdf_name}")
        if rel in wanted:
            continue
        sha = str(ref.sha256) if ref.sha256 else None
        local = _check_source_file(source.fetch(rel, sha256=sha), source, rel)
        files.append((rel, local, sha))
        wanted.add(rel)
    dests = {rel: zoo.dest(alias, rel) for rel in wanted}
    with atomic_path(dests["rdf.yaml"]) as tmp:
        tmp.write_bytes(rdf_bytes)
    for rel, local, sha in files:
        _copy_if_changed(local, dests[rel], sha)
    zoo.drop_stale(alias, wanted)
    stamp = now_iso()
    version = str(content.get("version") or "1")
    zoo.add(alias, _listing_item(alias, content, [{"version": version, "comment": comment, "created_at": stamp}],
                                 stamp=stamp, config={"published_from": Path(package).name, "published_at": stamp}))
    zoo.save_listing()
    return alias


def mirror(ids: Iterable[str], to: str | Path, *, hub: str | None = None, weights: str | None = None,
           offline: bool | None = None, progress: bool = False) -> MirrorResult:
    """Write a static mirror of the models ``ids`` into folder ``to``.

    Parameters
    ----------
    ids : iterable of str
        Zoo ids (``affable-shark``, ``affable-shark/v1``).
    to : path
        Mirror folder (created; existing mirrored models are kept).
    hub : str, optional
        Hub to mirror from (default ``BIOIMGZOO_HUB``).
    weights : str, optional
        Copy only this weight format's weights (default: all files).
    offline : bool, optional
        Build the mirror from the cache only.
    """
    from .._yaml import load_yaml
    from .pull import pull

    ids = list(ids)
    zids = [parse_zoo_id(model_id) for model_id in ids]
    for model_id, zid in zip(ids, zids):  # all ids are checked before anything is fetched or written
        if zid.huggingface:
            raise HubError(f"{model_id}: only bioimage.io models can be mirrored")
        check_id(zid.alias, where=f"mirroring {model_id}", fix="Mirror models by their zoo id (affable-shark).")
    zoo = _StaticZoo(to)
    result = MirrorResult(folder=zoo.root)
    for model_id, zid in zip(ids, zids):
        pulled = pull(model_id, hub=hub, offline=offline, weights=weights, all_files=True, progress=progress)
        source = pulled.source
        rdf_bytes, rdf_name = source.read_rdf()
        wanted = {"rdf.yaml"}
        shas = {str(ref.source): (str(ref.sha256) if ref.sha256 else None)
                for ref in _refs(pulled)}
        files: list[tuple[str, Path, str | None]] = []
        for raw, local in pulled.files.items():
            if raw == rdf_name or "://" in raw:
                continue  # absolute URLs stay where the rdf says they are
            rel = _safe_rel(raw, f"{source.name}: {rdf_name}")
            files.append((rel, _check_source_file(local, source, rel), shas.get(raw)))
            wanted.add(rel)
        dests = {rel: zoo.dest(zid.alias, rel) for rel in wanted}
        with atomic_path(dests["rdf.yaml"]) as tmp:
            tmp.write_bytes(rdf_bytes)
        for rel, local, sha in files:
            _copy_if_changed(local, dests[rel], sha)
        zoo.drop_stale(zid.alias, wanted)
        content = json.loads(json.dumps(load_yaml(rdf_bytes, f"{source.name}: {rdf_name}"), default=str))
        manifest = source.manifest() or {}
        stamp = now_iso()
        versions = [v for v in manifest.get("versions") or []
                    if isinstance(v, dict) and str(v.get("version")) == str(pulled.version)]
        if not versions and pulled.version:
            versions = [{"version": pulled.version, "comment": "mirrored", "created_at": stamp}]
        zoo.add(zid.alias, _listing_item(
            zid.alias, content, versions, stamp=stamp, created_at=manifest.get("created_at"),
            last_modified=manifest.get("last_modified"), download_count=manifest.get("download_count", 0),
            config={"mirrored_from": source.pin.hub, "mirrored_at": stamp, "weights": weights or "all"}))
        result.models.append(MirroredModel(id=zid.alias, version=pulled.version, files=sorted(wanted)))
    zoo.save_listing()
    return result


def _refs(pulled) -> list:
    from .pull import needed_files

    return needed_files(pulled.package.descr, weights=pulled.weights_format, all_files=True)[1]
