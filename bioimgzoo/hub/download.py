"""Cached downloads: decide what to do (pure), then do it (locked, verified, atomic).

:func:`download_action` looks at the cache only and says ``"hit"`` (the
named path is ready), ``"link"`` (the content is cached under another name:
just link it) or ``"download"``.  :func:`cached_fetch` carries the decision
out; in offline mode a ``"download"`` becomes an
:class:`~bioimgzoo.errors.OfflineError` and the network is never touched.

A download goes to a unique temp file in ``tmp/``, is hashed while it
streams, verified against the expected sha256, and only then renamed into
``blobs/``; all of it under a per-blob file lock, so two processes pulling
the same model download it once and never see each other's partial files.
A download over a limit (size, deadline; see :mod:`.transport`) leaves
nothing behind: the temp file is removed and nothing is committed.

A hit is re-verified cheaply first (see :meth:`.CacheLayout.blob_problem`):
a blob whose size differs from the one recorded at commit, or a link that is
not the expected blob, is a miss -- downloaded again online, an
:class:`~bioimgzoo.errors.IntegrityError` offline.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BioimgzooError, IntegrityError, OfflineError
from . import transport
from .cache import CacheLayout, cache_layout

__all__ = ["Action", "download_action", "cached_fetch", "download_blob"]

log = logging.getLogger("bioimgzoo.hub")


@dataclass(frozen=True)
class Action:
    """What :func:`cached_fetch` must do for one file."""

    kind: Literal["hit", "link", "download"]
    #: The blob to link (kind ``"link"``).
    blob: Path | None = None
    #: Why a cached blob cannot be used (kind ``"download"`` of a damaged entry), else None.
    damaged: str | None = None


def download_action(layout: CacheLayout, *, link: Path, sha256: str | None) -> Action:
    """Decide, from the cache alone, how to make ``link`` hold the file.

    With a known ``sha256`` the content-addressed blob decides; without one,
    an existing link is the pinned content (it was written only after a
    complete download).
    """
    if sha256:
        blob = layout.blob(sha256)
        problem = layout.blob_problem(sha256)
        if problem == "missing":
            return Action("download")
        if problem:
            return Action("download", damaged=problem)
        if layout.link_target_ok(link, blob):
            return Action("hit")
        return Action("link", blob)
    if layout.link_present(link):
        return Action("hit")
    return Action("download")


def download_blob(url: str, *, params: dict | None = None, sha256: str | None = None, progress: bool = False,
                  what: str, layout: CacheLayout | None = None) -> Path:
    """Download ``url`` into the blob store (verified when ``sha256`` is given); return the blob."""
    layout = layout or cache_layout()
    tmp = layout.new_tmp(sha256 or url.rsplit("/", 1)[-1])
    try:
        try:
            actual = transport.download_to(url, tmp, params=params, sha256=sha256, progress=progress, what=what)
        except BioimgzooError:  # a DownloadError is a ConnectionError, an OSError: not the disk's fault
            raise
        except OSError as e:  # writing the temp file: a full disk, a folder made read-only meanwhile
            raise layout.write_error(e) from e
        return layout.commit_blob(tmp, actual)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful commit (or after a refused download)


def cached_fetch(url: str, *, link: Path, sha256: str | None, params: dict | None = None,
                 offline: bool = False, progress: bool = False, what: str,
                 layout: CacheLayout | None = None, offline_hint: str = "") -> Path:
    """Return ``link`` holding the content of ``url``, downloading only on a cache miss.

    Parameters
    ----------
    url, params
        Where the file lives (``params`` become the query string).
    link
        Named path inside the cache (a snapshot entry) to present the file at.
    sha256
        Expected content hash; None trusts a previously completed download.
    offline
        Never touch the network: a miss raises :class:`OfflineError`.
    what
        Name of the file in messages (``"zoo model x: weights.onnx"``).
    """
    layout = layout or cache_layout()
    sha256 = sha256.lower() if sha256 else None
    action = download_action(layout, link=link, sha256=sha256)
    if action.kind == "hit":
        return link
    if action.kind == "link":
        return layout.link(action.blob, link)
    if action.damaged:
        log.warning("%s: the cached copy is damaged (%s): %s", what, action.damaged,
                    "offline, it cannot be replaced" if offline else "downloading it again")
    if offline:
        if action.damaged:
            raise IntegrityError(
                f"{what}: the cached copy in {layout.root} is damaged ({action.damaged}) and offline mode is on, "
                "so it cannot be downloaded again. Turn offline mode off (unset BIOIMGZOO_OFFLINE / drop "
                "--offline) to replace it; `bioimgzoo cache verify` checks and cleans the whole cache.")
        raise OfflineError(
            f"{what} is not in the cache ({layout.root}) and offline mode is on. "
            + (offline_hint or "Download it first on a machine with network (bioimgzoo pull ... --all-files), "
               "or turn offline mode off (unset BIOIMGZOO_OFFLINE / drop --offline)."))
    lock_name = f"blob-{sha256}" if sha256 else "url-" + hashlib.sha256(
        (url + repr(sorted((params or {}).items()))).encode()).hexdigest()[:32]
    with layout.locked(lock_name, what=what):
        # another process may have finished the same download while we waited
        action = download_action(layout, link=link, sha256=sha256)
        if action.kind == "hit":
            return link
        if action.kind == "link":
            return layout.link(action.blob, link)
        layout.sweep_tmp()
        blob = download_blob(url, params=params, sha256=sha256, progress=progress, what=what, layout=layout)
        return layout.link(blob, link)
