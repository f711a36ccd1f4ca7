"""Every setting bioimgzoo reads from the environment, in one place.

Nothing here does I/O at import time: settings are read when asked for, so
tests (and users) can change the environment between calls.

=====================  =============================================  ==========================
variable               meaning                                        default
=====================  =============================================  ==========================
``BIOIMGZOO_CACHE``    cache folder for downloaded zoo files          the platform's user cache
``BIOIMGZOO_HUB``      base URL of the zoo's Hypha server or mirror   ``https://hypha.aicell.io``
``BIOIMGZOO_OFFLINE``  ``1``/``true``: never touch the network        off
``BIOIMGZOO_TIMEOUT``  seconds before an HTTP request gives up        ``30``
``BIOIMGZOO_RETRIES``  retries of a transient download failure        ``3``
=====================  =============================================  ==========================

bioimageio.spec's ``BIOIMAGEIO_COLLECTION_HTTP_PATTERN`` is honoured too
(see :func:`collection_http_pattern`).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HUB = "https://hypha.aicell.io"

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def cache_dir() -> Path:
    """Root of the download cache (``BIOIMGZOO_CACHE`` or the user cache dir)."""
    env = os.environ.get("BIOIMGZOO_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bioimgzoo"))


def hub_url() -> str:
    """Base URL of the zoo server, without a trailing slash."""
    return os.environ.get("BIOIMGZOO_HUB", DEFAULT_HUB).rstrip("/")


def offline() -> bool:
    """True when the network must never be touched."""
    return _flag("BIOIMGZOO_OFFLINE")


def http_timeout() -> float:
    """Seconds before one HTTP request gives up."""
    return float(os.environ.get("BIOIMGZOO_TIMEOUT", "30"))


def http_retries() -> int:
    """How often a transient download failure is retried."""
    return int(os.environ.get("BIOIMGZOO_RETRIES", "3"))


def collection_http_pattern() -> str | None:
    """bioimageio.spec's URL pattern for ids, when the user set it."""
    return os.environ.get("BIOIMAGEIO_COLLECTION_HTTP_PATTERN") or None
