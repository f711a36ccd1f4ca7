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
the listing.  Every file is written atomically, so a mirror being served
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

__all__ = ["mirror", "MirrorResult", "MirroredModel"]


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

    root = Path(to).expanduser().resolve()
    artifacts = root / WORKSPACE / "artifacts"
    children_path = artifacts / COLLECTION / "children"
    listing: dict[str, dict] = {}
    if children_path.is_file():
        try:
            old = json.loads(children_path.read_text("utf-8"))
            items = old.get("items", []) if isinstance(old, dict) else old
            listing = {str(it.get("alias")): it for it in items if isinstance(it, dict) and it.get("alias")}
        except (OSError, ValueError) as e:
            raise HubError(f"{children_path} is not a listing written by bioimgzoo mirror ({e}): "
                           "pick an empty folder or remove the file") from e
    result = MirrorResult(folder=root)
    for model_id in ids:
        zid = parse_zoo_id(model_id)
        if zid.huggingface:
            raise HubError(f"{model_id}: only bioimage.io models can be mirrored")
        pulled = pull(model_id, hub=hub, offline=offline, weights=weights, all_files=True, progress=progress)
        source = pulled.source
        files_dir = artifacts / zid.alias / "files"
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
        for stale in [p for p in files_dir.rglob("*") if p.is_file()]:  # an earlier mirrored version
            if stale.relative_to(files_dir).as_posix() not in wanted:
                stale.unlink()
        content = json.loads(json.dumps(yaml.safe_load(rdf_bytes), default=str))
        manifest = source.manifest() or {}
        stamp = now_iso()
        versions = [v for v in manifest.get("versions") or []
                    if isinstance(v, dict) and str(v.get("version")) == str(pulled.version)]
        if not versions and pulled.version:
            versions = [{"version": pulled.version, "comment": "mirrored", "created_at": stamp}]
        item = {
            "id": f"{WORKSPACE}/{zid.alias}", "alias": zid.alias, "type": content.get("type", "model"),
            "manifest": content, "versions": versions,
            "created_at": manifest.get("created_at", stamp), "last_modified": manifest.get("last_modified", stamp),
            "download_count": manifest.get("download_count", 0),
            "config": {"mirrored_from": source.pin.hub, "mirrored_at": stamp, "weights": weights or "all"},
        }
        _write_json(artifacts / zid.alias / "index.html", item)
        listing[zid.alias] = item
        result.models.append(MirroredModel(id=zid.alias, version=pulled.version, files=sorted(wanted)))
    items = sorted(listing.values(), key=lambda it: (-int(it.get("download_count") or 0), str(it.get("alias"))))
    # "static": the client filters and paginates itself (a plain server ignores the query string)
    _write_json(children_path, {"items": items, "total": len(items), "offset": 0, "limit": len(items),
                                "static": True})
    return result


def _refs(pulled) -> list:
    from .pull import needed_files

    return needed_files(pulled.package.descr, weights=pulled.weights_format, all_files=True)[1]
