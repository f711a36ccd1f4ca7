"""The download cache: one layout, content-addressed blobs, pins, named links, locks.

Layout (every path below is composed by :class:`CacheLayout`, built by
:func:`cache_layout`; no other code joins cache paths)::

    $BIOIMGZOO_CACHE/                     default: platformdirs.user_cache_dir("bioimgzoo")
    ├── blobs/{sha256}                    file content, named by its own sha256.  A blob appears
    │                                     only by an atomic rename after its hash was verified;
    │                                     it is read-only and never modified afterwards.
    ├── packages/
    │   ├── zoo/{hub_key}/{alias}/        one zoo model as served by one hub
    │   │   ├── refs/{request}.json       pin: what "latest", "v1", "stage", ... resolved to
    │   │   │                             (resolved version, rdf sha256, files URL, query
    │   │   │                             parameters, manifest sha256, time of resolution)
    │   │   └── snapshots/{rdf_sha256}/{path}
    │   │                                 the package's files under their own names: links to
    │   │                                 blobs (symlink; hardlink or copy where symlinks fail).
    │   │                                 Filled lazily; a complete snapshot is a plain package
    │   │                                 folder any tool can open.
    │   └── url/{url_key}/                a package opened from an http(s) rdf URL: the same
    │                                     refs/ (one pin, "rdf") and snapshots/
    ├── urls/{url_key}/{file name}        absolute file URLs that an rdf references (links to blobs)
    ├── locks/{name}.lock                 inter-process locks: one per blob being downloaded,
    │                                     one per pin being resolved
    └── tmp/                              downloads in progress, under unique names.  No lookup
                                          ever reads here; leftovers of killed processes are
                                          swept once they are an hour old.

``hub_key`` is the hub's host (and path) plus a hash of its full URL, so two
hubs never share pins; ``url_key`` is the URL's host plus a hash of the URL.

Invariants:

1. A blob exists only if its content hashed to its name.  A killed download
   leaves at most a file in ``tmp/``, which no lookup trusts.
2. A link or a pin is written (atomically) only after the blob it refers to
   exists, so a lookup that finds one finds complete, verified content.
3. A lookup -- a cache hit, or anything in offline mode -- does no network I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from .. import config
from .._files import atomic_path, sha256_file

__all__ = ["CacheLayout", "cache_layout", "Pin", "CachedSnapshot", "VerifyReport"]

log = logging.getLogger("bioimgzoo.hub")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: A temp download untouched for this long belongs to a killed process.
STALE_TMP_SECONDS = 3600.0


def _slug(text: str) -> str:
    """File-name-safe rendering of ``text`` (keeps it readable in ``ls``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def hub_key(hub_identity: str) -> str:
    """Cache folder name of a hub: readable host part plus a hash of the full identity."""
    parts = urlsplit(hub_identity)
    readable = _slug(f"{parts.netloc}{parts.path}")[:60] if parts.netloc else _slug(hub_identity)[:60]
    return f"{readable}-{_short_hash(hub_identity)}"


def url_key(url: str) -> str:
    """Cache folder name of a URL: its host plus a hash of the whole URL."""
    return f"{_slug(urlsplit(url).netloc)[:40]}-{_short_hash(url)}"


def request_key(request: str) -> str:
    """File name of a pin for a version request (``latest``, ``v1``, ``1.2``, ``stage``)."""
    slug = _slug(request)
    return slug if slug == request else f"{slug}-{_short_hash(request)}"


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Pin:
    """What one request (an id with or without version, or a URL) resolved to.

    Stored as ``refs/{request}.json``.  Everything a later load needs is in
    here, so a pinned package opens with no network at all.
    """

    #: ``zoo`` (Hypha id), ``id_map`` (legacy id map), ``pattern``
    #: (BIOIMAGEIO_COLLECTION_HTTP_PATTERN) or ``url`` (an rdf URL).
    origin: str
    #: The model id (alias) or the rdf URL.
    id: str
    #: Hub identity the pin belongs to ("" for URL sources).
    hub: str
    #: Resolved concrete version (``v1``, ``stage``) or None when the server has no versions.
    version: str | None
    rdf_sha256: str
    rdf_name: str
    #: URL of the folder holding the package files (ends with ``/``).
    base_url: str
    #: Query parameters sent with every file request (``{"version": "v1"}``).
    params: dict = field(default_factory=dict)
    #: sha256 of the artifact manifest (JSON) when the hub served one.
    manifest_sha256: str | None = None
    resolved_at: str = field(default_factory=now_iso)

    @classmethod
    def from_json(cls, data: dict) -> "Pin":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class CachedSnapshot:
    """One cached package version, for ``cache list``."""

    kind: str  # "zoo" or "url"
    id: str
    hub: str
    version: str | None
    rdf_sha256: str
    requests: list[str]
    resolved_at: str
    folder: Path
    files: list[str]
    size: int


@dataclass
class VerifyReport:
    checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)
    stale_tmp: int = 0

    @property
    def ok(self) -> bool:
        return not self.corrupt


class CacheLayout:
    """All paths of the cache under ``root``; see the module docstring for the tree."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    # ------------------------------------------------------------------ paths
    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def packages_dir(self) -> Path:
        return self.root / "packages"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def blob(self, sha256: str) -> Path:
        sha256 = sha256.lower()
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.blobs_dir / sha256

    def zoo_package_dir(self, hub_identity: str, alias: str) -> Path:
        return self.packages_dir / "zoo" / hub_key(hub_identity) / _slug(alias)

    def url_package_dir(self, url: str) -> Path:
        return self.packages_dir / "url" / url_key(url)

    def pin_path(self, package_dir: Path, request: str) -> Path:
        return package_dir / "refs" / f"{request_key(request)}.json"

    def snapshot_dir(self, package_dir: Path, rdf_sha256: str) -> Path:
        return package_dir / "snapshots" / rdf_sha256.lower()

    def url_file_link(self, url: str) -> Path:
        name = _slug(urlsplit(url).path.rsplit("/", 1)[-1]) or "file"
        return self.root / "urls" / url_key(url) / name

    def new_tmp(self, hint: str = "download") -> Path:
        """A fresh, unique temp file name in ``tmp/`` (same file system as ``blobs/``)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{_slug(hint)[:40]}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part"

    # ------------------------------------------------------------------ locks
    def lock(self, name: str):
        """An inter-process lock (``filelock``), released even when the holder is killed."""
        import filelock

        self.locks_dir.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(self.locks_dir / f"{_slug(name)[:100]}.lock"))

    @contextlib.contextmanager
    def locked(self, name: str, *, what: str) -> Iterator[None]:
        """Hold lock ``name``; say so when another process makes us wait."""
        import filelock

        lock = self.lock(name)
        try:
            lock.acquire(timeout=1.0)
        except filelock.Timeout:
            log.info("waiting for another process that is downloading %s", what)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ blobs
    def has_blob(self, sha256: str) -> bool:
        return self.blob(sha256).is_file()

    def commit_blob(self, tmp: Path, sha256: str) -> Path:
        """Move a verified temp file to ``blobs/{sha256}`` (atomic; idempotent)."""
        blob = self.blob(sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if blob.is_file():  # another process committed the same content first
            tmp.unlink(missing_ok=True)
            return blob
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o444)  # blobs are immutable; links point at them
        os.replace(tmp, blob)
        return blob

    def store_bytes(self, data: bytes) -> str:
        """Store small content (rdf, manifest) as a blob; return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha):
            tmp = self.new_tmp(sha)
            try:
                tmp.write_bytes(data)
                self.commit_blob(tmp, sha)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return sha

    def read_blob_verified(self, sha256: str) -> bytes | None:
        """Bytes of a small blob, re-hashed; a corrupt blob is removed and None returned."""
        blob = self.blob(sha256)
        try:
            data = blob.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256.lower():
            log.warning("cache entry %s is corrupt: removing it", blob)
            self._remove(blob)
            return None
        return data

    # ------------------------------------------------------------------ links
    def link_target_ok(self, link: Path, blob: Path) -> bool:
        """True when ``link`` already presents ``blob``'s content."""
        try:
            if link.is_symlink():
                return os.path.basename(os.readlink(link)) == blob.name and blob.is_file()
            return link.is_file() and (os.path.samefile(link, blob)
                                       or link.stat().st_size == blob.stat().st_size)
        except OSError:
            return False

    def link(self, blob: Path, link: Path) -> Path:
        """Make ``link`` present ``blob`` (relative symlink; hardlink or copy as fallbacks).

        Created under a temp name and renamed, so a reader never sees a
        half-made link and concurrent writers do not collide.
        """
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:12]}.lnk")
        try:
            try:
                os.symlink(os.path.relpath(blob, link.parent), tmp)
            except (OSError, NotImplementedError):
                try:
                    os.link(blob, tmp)
                except OSError:
                    shutil.copyfile(blob, tmp)
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return link

    # ------------------------------------------------------------------ pins
    def read_pin(self, package_dir: Path, request: str) -> Pin | None:
        """The pin for ``request`` when it and its rdf blob are present."""
        path = self.pin_path(package_dir, request)
        try:
            pin = Pin.from_json(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        if not self.has_blob(pin.rdf_sha256):
            return None
        return pin

    def write_pin(self, package_dir: Path, request: str, pin: Pin) -> None:
        path = self.pin_path(package_dir, request)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(pin), indent=1), "utf-8")
        # the rdf under its own name makes the snapshot a complete package folder
        self.link(self.blob(pin.rdf_sha256), self.snapshot_dir(package_dir, pin.rdf_sha256) / pin.rdf_name)

    def iter_pins(self) -> Iterator[tuple[str, Path, str, Pin]]:
        """Yield ``(kind, package_dir, request_file_stem, pin)`` for every pin in the cache."""
        for kind, pattern in (("zoo", "zoo/*/*/refs/*.json"), ("url", "url/*/refs/*.json")):
            for path in sorted(self.packages_dir.glob(pattern)):
                try:
                    pin = Pin.from_json(json.loads(path.read_text("utf-8")))
                except (OSError, ValueError, TypeError):
                    continue
                yield kind, path.parent.parent, path.stem, pin

    def find_zoo_pins(self, alias: str, request: str) -> list[Pin]:
        """Pins of ``alias``/``request`` under any hub, newest first (offline fallback)."""
        found = []
        for kind, _pkg, stem, pin in self.iter_pins():
            if kind == "zoo" and pin.id == alias and stem == request_key(request) \
                    and self.has_blob(pin.rdf_sha256):
                found.append(pin)
        return sorted(found, key=lambda p: p.resolved_at, reverse=True)

    def cached_ids(self) -> list[str]:
        return sorted({pin.id for kind, _p, _s, pin in self.iter_pins() if kind == "zoo"})

    # ------------------------------------------------------------------ management
    def list_snapshots(self) -> list[CachedSnapshot]:
        """Every cached package version, with its pins, files and size."""
        by_snapshot: dict[Path, CachedSnapshot] = {}
        for kind, pkg_dir, stem, pin in self.iter_pins():
            folder = self.snapshot_dir(pkg_dir, pin.rdf_sha256)
            snap = by_snapshot.get(folder)
            if snap is None:
                files, size = [], 0
                if folder.is_dir():
                    for p in sorted(folder.rglob("*")):
                        if p.name.endswith(".lnk") or not p.is_file():
                            continue
                        files.append(p.relative_to(folder).as_posix())
                        size += p.stat().st_size
                snap = by_snapshot[folder] = CachedSnapshot(
                    kind=kind, id=pin.id, hub=pin.hub, version=pin.version, rdf_sha256=pin.rdf_sha256,
                    requests=[], resolved_at=pin.resolved_at, folder=folder, files=files, size=size)
            snap.requests.append(stem)
            snap.resolved_at = max(snap.resolved_at, pin.resolved_at)
        return sorted(by_snapshot.values(), key=lambda s: (s.id, s.hub, s.version or ""))

    def total_size(self) -> int:
        return sum(p.stat().st_size for p in self.blobs_dir.glob("*") if p.is_file()) \
            if self.blobs_dir.is_dir() else 0

    def sweep_tmp(self, *, max_age: float = STALE_TMP_SECONDS) -> int:
        """Remove temp downloads not touched for ``max_age`` seconds; return how many."""
        removed = 0
        if not self.tmp_dir.is_dir():
            return 0
        cutoff = time.time() - max_age
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
        return removed

    def _link_files(self) -> Iterator[Path]:
        for top in (self.packages_dir, self.root / "urls"):
            if top.is_dir():
                for p in top.rglob("*"):
                    if p.is_symlink() or (p.is_file() and "refs" not in p.parts):
                        yield p

    def verify(self) -> VerifyReport:
        """Re-hash every blob; remove corrupt blobs, dangling links and pins without rdf."""
        report = VerifyReport()
        if self.blobs_dir.is_dir():
            for blob in sorted(self.blobs_dir.iterdir()):
                if not blob.is_file():
                    continue
                report.checked += 1
                if not _SHA256.match(blob.name) or sha256_file(blob) != blob.name:
                    report.corrupt.append(blob.name)
                    self._remove(blob)
        for link in list(self._link_files()):
            if link.is_symlink() and not link.exists():
                report.dangling.append(str(link.relative_to(self.root)))
                self._remove(link)
        for _kind, pkg_dir, stem, pin in list(self.iter_pins()):
            if not self.has_blob(pin.rdf_sha256):
                self._remove(pkg_dir / "refs" / f"{stem}.json")
        report.stale_tmp = self.sweep_tmp()
        return report

    def clear(self, model_id: str | None = None) -> tuple[int, int]:
        """Remove one model (every hub and version, or a URL package) or everything.

        Returns ``(entries removed, bytes freed)``.
        """
        before = self.total_size()
        if model_id is None:
            removed = 0
            for sub in ("blobs", "packages", "urls", "tmp"):
                path = self.root / sub
                if path.exists():
                    removed += sum(1 for _ in path.rglob("*") if _.is_file() or _.is_symlink())
                    _rmtree(path)
            return removed, before
        removed = 0
        # an id clears every version under every hub; a URL clears that URL's package
        alias = model_id.removeprefix("bioimage-io/").split("/")[0]
        targets = [pkg_dir for kind, pkg_dir, _stem, pin in self.iter_pins()
                   if pin.id == model_id or (kind == "zoo" and pin.id == alias)]
        for pkg_dir in set(targets):
            removed += 1
            _rmtree(pkg_dir)
        self.gc()
        return removed, before - self.total_size()

    def gc(self) -> int:
        """Remove blobs that no pin, snapshot or URL link refers to; return how many."""
        referenced: set[str] = set()
        inodes: set[tuple[int, int]] = set()
        for _kind, _pkg, _stem, pin in self.iter_pins():
            referenced.add(pin.rdf_sha256)
            if pin.manifest_sha256:
                referenced.add(pin.manifest_sha256)
        for link in self._link_files():
            with contextlib.suppress(OSError):
                if link.is_symlink():
                    referenced.add(os.path.basename(os.readlink(link)))
                else:
                    st = link.stat()
                    inodes.add((st.st_dev, st.st_ino))
        removed = 0
        if self.blobs_dir.is_dir():
            for blob in self.blobs_dir.iterdir():
                with contextlib.suppress(OSError):
                    st = blob.stat()
                    if blob.name not in referenced and (st.st_dev, st.st_ino) not in inodes:
                        self._remove(blob)
                        removed += 1
        self.sweep_tmp()
        return removed

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.chmod(0o644)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _rmtree(path: Path) -> None:
    def _onerror(func, p, _exc):  # read-only blobs: make writable, then retry
        with contextlib.suppress(OSError):
            os.chmod(p, 0o755)
            func(p)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=_onerror)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def cache_layout(root: str | os.PathLike | None = None) -> CacheLayout:
    """The cache at ``root`` (default: ``BIOIMGZOO_CACHE`` / the user cache dir)."""
    return CacheLayout(root if root is not None else config.cache_dir())
