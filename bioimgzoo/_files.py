"""Small file helpers shared by the whole package: hashing, atomic writes, this user's secret.

Every file bioimgzoo writes for the user (predictions, packages, cache
entries) goes through :func:`atomic_path`: it is written under a unique
temporary name in the destination folder and renamed into place only when
complete, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it to ``dest`` on success.

    On any exception the temporary file is removed and ``dest`` is untouched.
    ``suffix`` defaults to ``dest``'s own suffixes, so writers that pick a
    format from the file name (tifffile, numpy, zipfile) still work.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it private; the result should not be
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def user_secret() -> bytes:
    """32 random bytes kept for this user in the cache (``<cache>/keys/secret``, mode 0600), created once.

    Keys the digests bioimgzoo writes beside data it must trust later (a
    resume record, a measured receptive field): someone who can edit those
    files, but not the user's cache, cannot make an entry that verifies.
    When the cache cannot hold it, a secret for this process only is used
    (what it signed is then simply not trusted later).
    """
    import logging
    import threading

    from . import config

    folder = config.cache_dir() / "keys"
    path = folder / "secret"
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError:
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".secret-{os.getpid()}-{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        if path.exists():  # another process made it meanwhile: theirs is the one
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError as e:
        logging.getLogger("bioimgzoo").warning("cannot keep a secret in %s (%s): what this run signs is not trusted "
                                               "by later runs", folder, e)
    return _PROCESS_SECRET


_PROCESS_SECRET = os.urandom(32)
