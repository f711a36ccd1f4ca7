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
"""

from __future__ import annotations

import filecmp
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .._files import atomic_path, sha256_file
from ..errors import HubError
from .cache import now_iso
from .endpoints import COLLECTION, WORKSPACE, parse_zoo_id

__all__ = ["mirror", "publish", "MirrorResult", "MirroredModel"]


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
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str), "utf-8")


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
        return self.artifacts / alias / "files"

    def drop_stale(self, alias: str, wanted: set[str]) -> None:
        """Remove files of an earlier version that the new one does not have."""
        files_dir = self.files_dir(alias)
        for stale in [p for p in files_dir.rglob("*") if p.is_file()]:
            if stale.relative_to(files_dir).as_posix() not in wanted:
                stale.unlink()

    def add(self, alias: str, item: dict) -> None:
        _write_json(self.artifacts / alias / "index.html", item)
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
    """
    import yaml

    from ..package import resolve_source

    source = resolve_source(Path(package))
    rdf_bytes, rdf_name = source.read_rdf()
    content = json.loads(json.dumps(yaml.safe_load(rdf_bytes), default=str))
    alias = str(id or content.get("id") or "").strip()
    if not alias:
        raise HubError(f"{package} has no id in its rdf.yaml: pass id= (CLI: --id) to publish it")
    zoo = _StaticZoo(to)
    files_dir = zoo.files_dir(alias)
    with atomic_path(files_dir / "rdf.yaml") as tmp:
        tmp.write_bytes(rdf_bytes)
    wanted = {"rdf.yaml"}
    from .pull import needed_files
    from ..package import open_package

    for ref in needed_files(open_package(source).descr, weights=None, all_files=True)[1]:
        rel = str(ref.source)
        if "://" in rel or rel in wanted:
            continue
        _copy_if_changed(source.fetch(rel, sha256=str(ref.sha256) if ref.sha256 else None), files_dir / rel,
                         str(ref.sha256) if ref.sha256 else None)
        wanted.add(rel)
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
    import yaml

    from .pull import pull

    zoo = _StaticZoo(to)
    result = MirrorResult(folder=zoo.root)
    for model_id in ids:
        zid = parse_zoo_id(model_id)
        if zid.huggingface:
            raise HubError(f"{model_id}: only bioimage.io models can be mirrored")
        pulled = pull(model_id, hub=hub, offline=offline, weights=weights, all_files=True, progress=progress)
        source = pulled.source
        files_dir = zoo.files_dir(zid.alias)
        rdf_bytes, rdf_name = source.read_rdf()
        with atomic_path(files_dir / "rdf.yaml") as tmp:
            tmp.write_bytes(rdf_bytes)
        wanted = {"rdf.yaml"}
        shas = {str(ref.source): (str(ref.sha256) if ref.sha256 else None)
                for ref in _refs(pulled)}
        for rel, local in pulled.files.items():
            if rel == rdf_name or "://" in rel:
                continue  # absolute URLs stay where the rdf says they are
            _copy_if_changed(local, files_dir / rel, shas.get(rel))
            wanted.add(rel)
        zoo.drop_stale(zid.alias, wanted)
        content = json.loads(json.dumps(yaml.safe_load(rdf_bytes), default=str))
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
