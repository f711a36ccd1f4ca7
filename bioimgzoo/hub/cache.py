"""The download cache: one layout, content-addressed blobs, pins, named links, locks.

Layout (every path below is composed by :class:`CacheLayout`, built by
:func:`cache_layout`; no other code joins cache paths)::

    $BIOIMGZOO_CACHE/                     default: platformdirs.user_cache_dir("bioimgzoo")
    ├── blobs/{sha256}                    file content, named by its own sha256.  A blob appears
    │                                     only by an atomic rename after its hash was verified;
    │                                     it is read-only and never modified afterwards.
    ├── sizes/{sha256}                    the blob's size in bytes (decimal text), written just
    │                                     before the blob: a cache hit compares it with the blob
    │                                     (cheap re-verification; `cache verify` re-hashes fully)
    ├── packages/
    │   ├── zoo/{hub_key}/{alias}/        one zoo model as served by one hub
    │   │   ├── refs/{request}.json       pin: what "latest", "v1", "stage", ... resolved to
    │   │   │                             (resolved version, rdf sha256, files URL, query
    │   │   │                             parameters, manifest sha256, time of resolution)
    │   │   └── snapshots/{rdf_sha256}/{path}
    │   │                                 the package's files under their own names: links to
    │   │                                 blobs (hardlink; symlink or copy where hardlinks fail).
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
4. A hit is re-checked cheaply before use: the link must be the blob named by
   the expected sha256 (same file, or a symlink resolving to it) and the blob
   must have the size recorded in ``sizes/``; anything else is a miss (a
   fresh download replaces the blob) -- or, offline, an IntegrityError.

Snapshot entries are hardlinks, not symlinks, so a snapshot is a plain
folder: package readers refuse symlinks that lead out of a package folder.

A cache that cannot be written (``BIOIMGZOO_CACHE`` is a file, a read-only
folder, a full disk) raises one :class:`~bioimgzoo.errors.ConfigError` (or
HubError for a full disk) naming the folder and the fix, at the first write;
a read-only cache still serves what it holds.
"""

from __future__ import annotations

import contextlib
import errno
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
from typing import Callable, Iterator
from urllib.parse import urlsplit

from .. import config
from .._files import atomic_path, sha256_file
from ..errors import ConfigError, HubError

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

    @property
    def sizes_dir(self) -> Path:
        return self.root / "sizes"

    def size_path(self, sha256: str) -> Path:
        """The sidecar recording ``blobs/{sha256}``'s size (see the module docstring)."""
        return self.sizes_dir / self.blob(sha256).name

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
        with self.writing():
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{_slug(hint)[:40]}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part"

    # ------------------------------------------------------------------ write errors
    def write_error(self, e: OSError) -> Exception:
        """The one clear error for a cache that cannot be written (translated at this boundary)."""
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        reason = e.strerror or str(e) or type(e).__name__
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return HubError(f"the disk holding the download cache {self.root} is full ({reason}{where}): free "
                            "space (bioimgzoo cache clear ID), or point BIOIMGZOO_CACHE at a folder on a larger "
                            "disk")
        if self.root.exists() and not self.root.is_dir():
            return ConfigError(f"BIOIMGZOO_CACHE={str(self.root)!r} is a file, not a folder: point "
                               "BIOIMGZOO_CACHE at a folder (it is created if missing), or unset it for the "
                               "default cache")
        return ConfigError(f"cannot write to the download cache {self.root} ({reason}{where}): make the folder "
                           "writable, or point BIOIMGZOO_CACHE at a writable folder. Models already in a "
                           "read-only cache still load (offline: --offline / BIOIMGZOO_OFFLINE=1)")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Translate OSErrors of cache writes into :meth:`write_error` (no traceback for the user)."""
        try:
            yield
        except OSError as e:
            raise self.write_error(e) from e

    # ------------------------------------------------------------------ locks
    def lock(self, name: str):
        """An inter-process lock (``filelock``), released even when the holder is killed."""
        import filelock

        path = self.locks_dir / f"{_slug(name)[:100]}.lock"
        with self.writing():
            self.locks_dir.mkdir(parents=True, exist_ok=True)
            # open it once ourselves: an unwritable lock file fails here, clearly, instead of
            # inside the lock library (which may retry it as "held by someone else")
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o666))
        return filelock.FileLock(str(path))

    @contextlib.contextmanager
    def locked(self, name: str, *, what: str) -> Iterator[None]:
        """Hold lock ``name``; say so when another process makes us wait."""
        import filelock

        lock = self.lock(name)
        with self.writing():
            try:
                lock.acquire(timeout=1.0)
            except filelock.Timeout:
                log.info("waiting for another process that is downloading %s", what)
                lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def built_once(self, final: Path, *, lock: str, what: str, marker: str,
                   build: Callable[[Path], dict]) -> Path:
        """``final``, a folder made once: ``build(tmp)`` fills a fresh folder beside it and returns what the
        ``marker`` file records; it is renamed into place under lock ``lock``, so a failed or interrupted build
        leaves nothing and two processes never build it twice.  A folder without its marker is a leftover
        (killed mid-rename on some file system): replaced.
        """
        with self.locked(lock, what=what):
            if (final / marker).is_file():
                return final
            with self.writing():
                final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".build-{final.name[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                content = build(tmp)
                (tmp / marker).write_text(json.dumps(content))
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return final

    # ------------------------------------------------------------------ blobs
    def has_blob(self, sha256: str) -> bool:
        return self.blob(sha256).is_file()

    def recorded_size(self, sha256: str) -> int | None:
        """The size recorded for ``blobs/{sha256}`` at commit, or None (no or unreadable record)."""
        try:
            text = self.size_path(sha256).read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def _record_size(self, sha256: str, size: int) -> None:
        with atomic_path(self.size_path(sha256)) as tmp:
            tmp.write_text(str(size), "ascii")

    def blob_problem(self, sha256: str) -> str | None:
        """Why ``blobs/{sha256}`` cannot be used as it is (None: present and intact, as far as a stat tells).

        Cheap: a stat and a tiny read.  A blob from before size records
        existed is hashed once and then recorded (the record is skipped in a
        read-only cache).
        """
        blob = self.blob(sha256)
        try:
            st = blob.stat()
        except OSError:
            return "missing"
        if not blob.is_file():
            return "not a file"
        recorded = self.recorded_size(sha256)
        if recorded is None:
            if sha256_file(blob) != blob.name:
                return "its content does not match its sha256"
            with contextlib.suppress(OSError):
                self._record_size(blob.name, st.st_size)
            return None
        if recorded != st.st_size:
            return f"it has {st.st_size} bytes, {recorded} were stored"
        return None

    def blob_ok(self, sha256: str) -> bool:
        return self.blob_problem(sha256) is None

    def commit_blob(self, tmp: Path, sha256: str) -> Path:
        """Move a verified temp file to ``blobs/{sha256}`` (atomic; idempotent).

        The size record is written first, so a blob never exists without
        one; a damaged blob already there is replaced.
        """
        blob = self.blob(sha256)
        with self.writing():
            blob.parent.mkdir(parents=True, exist_ok=True)
            size = tmp.stat().st_size
            if blob.is_file() and self.blob_ok(sha256):  # another process committed the same content first
                tmp.unlink(missing_ok=True)
                return blob
            self._record_size(blob.name, size)
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o444)  # blobs are immutable; links point at them
            os.replace(tmp, blob)
        return blob

    def store_bytes(self, data: bytes) -> str:
        """Store small content (rdf, manifest) as a blob; return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha) or not self.blob_ok(sha):
            tmp = self.new_tmp(sha)
            try:
                with self.writing():
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
            self._remove_blob(blob)
            return None
        return data

    # ------------------------------------------------------------------ links
    def link_target_ok(self, link: Path, blob: Path) -> bool:
        """True when ``link`` presents exactly ``blob`` and the blob passes its cheap check.

        A symlink must resolve to the blob itself (not merely a file of the
        same name elsewhere), a hardlink must be the same file; a copy (the
        last-resort fallback) must have the blob's recorded size.
        """
        try:
            if not self.blob_ok(blob.name):
                return False
            if link.is_symlink():
                return os.path.realpath(link) == os.path.realpath(blob)
            if not link.is_file():
                return False
            return os.path.samefile(link, blob) or link.stat().st_size == self.recorded_size(blob.name)
        except (OSError, ValueError):
            return False

    def link_present(self, link: Path) -> bool:
        """True when ``link`` (a file with no declared sha256) is there and, if a symlink, one into ``blobs/``."""
        try:
            if link.is_symlink():
                target = Path(os.path.realpath(link))
                return (target.parent == Path(os.path.realpath(self.blobs_dir)) and bool(_SHA256.match(target.name))
                        and self.blob_ok(target.name))
            return link.is_file()
        except OSError:
            return False

    def link(self, blob: Path, link: Path) -> Path:
        """Make ``link`` present ``blob`` (hardlink; relative symlink or copy as fallbacks).

        Hardlinks first: a snapshot of plain files is a package folder that
        readers accept (they refuse symlinks that leave the folder).  Created
        under a temp name and renamed, so a reader never sees a half-made
        link and concurrent writers do not collide.
        """
        with self.writing():
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:12]}.lnk")
            try:
                try:
                    os.link(blob, tmp)
                except OSError:
                    try:
                        os.symlink(os.path.relpath(blob, link.parent), tmp)
                    except (OSError, NotImplementedError):
                        shutil.copyfile(blob, tmp)
                os.replace(tmp, link)
                # renaming a hardlink over another link of the same file does nothing (POSIX): tmp stays
                if os.path.lexists(tmp):
                    os.unlink(tmp)
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
        with self.writing(), atomic_path(path) as tmp:
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
        """Re-hash every blob and every link that is not one; remove what is corrupt or dangling.

        Corrupt blobs (and their size records) go; a link survives only when
        it is a blob (hardlink), resolves to one (symlink) or -- a copy --
        hashes to one; size records are rewritten from the verified blobs;
        pins whose rdf is gone are removed.
        """
        report = VerifyReport()
        good: dict[tuple[int, int], str] = {}
        if self.blobs_dir.is_dir():
            for blob in sorted(self.blobs_dir.iterdir()):
                if not blob.is_file():
                    continue
                report.checked += 1
                if blob.is_symlink() or not _SHA256.match(blob.name) or sha256_file(blob) != blob.name:
                    report.corrupt.append(blob.name)
                    self._remove_blob(blob)
                    continue
                st = blob.stat()
                good[(st.st_dev, st.st_ino)] = blob.name
                if self.recorded_size(blob.name) != st.st_size:
                    with contextlib.suppress(OSError):
                        self._record_size(blob.name, st.st_size)
        names = set(good.values())
        blobs_real = Path(os.path.realpath(self.blobs_dir))
        for link in list(self._link_files()):
            try:
                if link.is_symlink():
                    target = Path(os.path.realpath(link))
                    ok = target.parent == blobs_real and target.name in names
                else:
                    st = link.stat()
                    # not a blob's hardlink: a copy (kept when its content is a blob's) or a link to a
                    # blob that was just removed as corrupt
                    ok = (st.st_dev, st.st_ino) in good or sha256_file(link) in names
            except OSError:
                ok = False
            if not ok:
                report.dangling.append(str(link.relative_to(self.root)))
                self._remove(link)
        if self.sizes_dir.is_dir():
            for record in list(self.sizes_dir.iterdir()):
                if record.name not in names:
                    self._remove(record)
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
            for sub in ("blobs", "sizes", "packages", "urls", "tmp"):
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
                        self._remove_blob(blob)
                        removed += 1
        self.sweep_tmp()
        return removed

    def _remove_blob(self, blob: Path) -> None:
        """Remove a blob and its size record."""
        self._remove(blob)
        if _SHA256.match(blob.name):
            self._remove(self.size_path(blob.name))

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
    """The cache at ``root`` (default: ``BIOIMGZOO_CACHE`` / the user cache dir).

    Raises
    ------
    ConfigError
        The cache path is an existing file: every use of the cache (also
        ``cache list``) would be wrong, so it is refused here, once.
    """
    layout = CacheLayout(root if root is not None else config.cache_dir())
    if layout.root.exists() and not layout.root.is_dir():
        raise ConfigError(f"BIOIMGZOO_CACHE={str(layout.root)!r} is a file, not a folder: point BIOIMGZOO_CACHE "
                          "at a folder (it is created if missing), or unset it for the default cache")
    return layout
