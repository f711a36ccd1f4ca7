"""Pull a zoo model into the cache: only the files a use needs.

``pull("affable-shark")`` fetches the rdf and the weights of one format (the
first available of onnx, torchscript, pytorch_state_dict -- the runtime's
default -- or ``weights=``), with the files that format needs (architecture
code, external data).  ``all_files=True`` fetches everything the rdf
references (test tensors, covers, documentation, all weight formats), which
is what offline validation needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..descr.weights import choose_weights

__all__ = ["PullResult", "pull", "needed_files"]

_URL = re.compile(r"^https?://", re.I)


@dataclass
class PullResult:
    """What :func:`pull` put in the cache."""

    id: str
    version: str | None
    name: str
    #: The local package folder (cache snapshot): ``rdf.yaml`` plus the pulled files.
    folder: Path
    #: Pulled files by their path in the package (absolute URLs keyed by URL).
    files: dict[str, Path] = field(default_factory=dict)
    #: Files that were not in the cache before this pull (the rdf when the id was resolved just now).
    downloaded: list[str] = field(default_factory=list)
    weights_format: str | None = None
    source: Any = field(default=None, repr=False)
    package: Any = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values() if p.exists())


def _iter_file_descrs(obj: Any) -> Iterator[Any]:
    """Every file reference (an object with ``source`` and ``sha256``) inside a spec node."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        if hasattr(obj, "source") and hasattr(obj, "sha256") and obj.source is not None \
                and not isinstance(obj.source, (dict, list)):
            yield obj
        for name in type(obj).model_fields:
            yield from _iter_file_descrs(getattr(obj, name, None))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _iter_file_descrs(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _iter_file_descrs(item)


def needed_files(descr: Any, *, weights: str | None = None, all_files: bool = False) -> tuple[str | None, list[Any]]:
    """The weight format used and the file references to fetch for it.

    Without ``all_files``: the chosen weights entry's files only (what
    prediction needs).  With ``all_files``: every referenced file, but only
    the ``weights`` format's weights when ``weights`` is given.
    """
    if all_files and weights is None:
        fmt, nodes = None, [descr]
    else:
        fmt = choose_weights(descr, weights, runnable=False)
        nodes = [getattr(descr.weights, fmt)]
        if all_files:
            nodes += [getattr(descr, name, None) for name in type(descr).model_fields if name != "weights"]
    seen: dict[str, Any] = {}
    for node in nodes:
        for ref in _iter_file_descrs(node):
            key = str(ref.source)
            if key not in seen and not Path(key).is_absolute():
                seen[key] = ref
    return fmt, list(seen.values())


def pull(id: str, *, hub: str | None = None, offline: bool | None = None, weights: str | None = None,
         all_files: bool = False, allow_draft: bool = False, update: bool = False,
         progress: bool = False) -> PullResult:
    """Resolve a zoo model (or rdf URL) and cache the files a use needs.

    Parameters
    ----------
    id : str
        Zoo id (``affable-shark``, ``affable-shark/v1``) or an http(s) rdf URL.
    weights : str, optional
        Weight format to fetch (default: the first available of onnx,
        torchscript, pytorch_state_dict).
    all_files : bool
        Also fetch test tensors, covers, documentation and (unless
        ``weights`` is given) every weight format.
    update : bool
        Re-resolve the id on the hub instead of using the pinned version.
    hub, offline, allow_draft, progress
        As for :func:`bioimgzoo.hub.sources.source_for_id`.
    """
    from ..package import open_package
    from .sources import source_for_id, source_for_url

    if _URL.match(id):
        source = source_for_url(id, offline=offline, progress=progress, update=update)
    else:
        source = source_for_id(id, hub=hub, offline=offline, allow_draft=allow_draft, progress=progress,
                               update=update)
    package = open_package(source)
    fmt, refs = needed_files(package.descr, weights=weights, all_files=all_files)
    folder = getattr(source, "snapshot_dir", None)
    result = PullResult(id=id, version=getattr(source, "version", None), name=source.name,
                        folder=folder, weights_format=fmt, source=source, package=package)
    if folder is not None:
        rdf = folder / source.pin.rdf_name
        if not rdf.exists():  # e.g. a pin found under another hub in offline mode
            source.layout.link(source.layout.blob(source.pin.rdf_sha256), rdf)
        result.files[source.pin.rdf_name] = rdf
        if getattr(source, "resolved_now", False):
            result.downloaded.append(source.pin.rdf_name)
    for ref in refs:
        key = str(ref.source)
        sha = str(ref.sha256) if getattr(ref, "sha256", None) else None
        if _URL.match(key):
            result.files[key] = source.fetch_url(key, sha256=sha) if hasattr(source, "fetch_url") \
                else package.file(ref)
            continue
        if hasattr(source, "is_cached") and not source.is_cached(key, sha256=sha):
            result.downloaded.append(key)
        result.files[key] = package.file(ref)
    return result
