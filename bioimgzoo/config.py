"""Every setting bioimgzoo reads from the environment, in one place.

Nothing here does I/O at import time: settings are read when asked for, so
tests (and users) can change the environment between calls.  A value that
does not parse raises :class:`~bioimgzoo.errors.ConfigError` naming the
variable and what it accepts.

Network and cache:

===============================  =============================================  ==========================
variable                         meaning                                        default
===============================  =============================================  ==========================
``BIOIMGZOO_CACHE``              cache folder for downloaded zoo files          the platform's user cache
``BIOIMGZOO_HUB``                base URL of the zoo's Hypha server or mirror   ``https://hypha.aicell.io``
``BIOIMGZOO_OFFLINE``            ``1``/``true``: never touch the network        off
``BIOIMGZOO_TIMEOUT``            seconds one HTTP read may wait                 ``30``
``BIOIMGZOO_RETRIES``            retries of a transient download failure        ``3``
``BIOIMGZOO_DOWNLOAD_DEADLINE``  seconds one file's whole download may take     ``3600``
===============================  =============================================  ==========================

Limits on what a package may make bioimgzoo read or write (hostile or broken
packages are refused with a message naming the limit and this variable):

===============================  =============================================  ==========================
variable                         meaning                                        default
===============================  =============================================  ==========================
``BIOIMGZOO_MAX_RDF_BYTES``      size of ``rdf.yaml``                           8 MiB
``BIOIMGZOO_MAX_YAML_NODES``     nodes of the description, aliases expanded     100000
``BIOIMGZOO_MAX_YAML_DEPTH``     nesting depth of the description               64
``BIOIMGZOO_MAX_FILE_BYTES``     one package file: zip member or download       8 GiB
``BIOIMGZOO_MAX_ZIP_RATIO``      uncompressed / compressed size of a zip        200 (for members over
                                 member                                         32 MiB)
===============================  =============================================  ==========================

The deployed readers validation runs (:mod:`bioimgzoo.validation.consumers.readers`):

===============================  =============================================  ===================
variable                         meaning                                        default
===============================  =============================================  ==========================
``BIOIMGZOO_READERS``            ``build``: build a missing reader environment  ``build``
                                 (once, from the package index);
                                 ``cached``: use built ones only; ``off``
``BIOIMGZOO_READER_ENVS``        folder of the readers' environments            ``<cache>/readers``
===============================  =============================================  ==========================
=======
The model server (``bioimgzoo serve``; its command-line options win):

=================================  ===========================================  ==========================
variable                           meaning                                      default
=================================  ===========================================  ==========================
``BIOIMGZOO_SERVE_TOKEN``          bearer token every API request must carry    none (then only 127.0.0.1)
``BIOIMGZOO_SERVE_ADMIN_TOKEN``    bearer token of model load/unload            none (load/unload off)
=================================  ===========================================  ==========================

bioimageio.spec's ``BIOIMAGEIO_COLLECTION_HTTP_PATTERN`` and ``BIOIMAGEIO_ID_MAP`` are honoured
too (see :func:`collection_http_pattern` and :func:`id_map_url`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

DEFAULT_HUB = "https://hypha.aicell.io"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

#: Zip members at most this large are never refused for their compression ratio
#: (small, highly compressible files such as label test tensors are common).
ZIP_RATIO_EXEMPT_BYTES = 32 << 20


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={os.environ[name]!r} is not understood: set it to 1 (on) or 0 (off), or unset it")


def _number(name: str, default: float, *, integer: bool, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip()) if integer else float(raw.strip())
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}: set it to {kind} (default {default:g}) or unset it") \
            from None
    if not value >= minimum or value != value or value in (float("inf"),):
        raise ConfigError(f"{name}={raw!r} is out of range: it must be at least {minimum:g} "
                          f"(default {default:g}); unset it for the default")
    return value


def cache_dir() -> Path:
    """Root of the download cache (``BIOIMGZOO_CACHE`` or the user cache dir)."""
    env = os.environ.get("BIOIMGZOO_CACHE")
    if env and env.strip():
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bioimgzoo"))


def hub_url() -> str:
    """Base URL of the zoo server, without a trailing slash."""
    url = os.environ.get("BIOIMGZOO_HUB", DEFAULT_HUB).strip().rstrip("/") or DEFAULT_HUB
    if not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"BIOIMGZOO_HUB={url!r} is not an http(s) URL: set it to the zoo server or mirror "
                          f"address (default {DEFAULT_HUB}) or unset it")
    return url


def offline() -> bool:
    """True when the network must never be touched."""
    return _flag("BIOIMGZOO_OFFLINE")


def http_timeout() -> float:
    """Seconds one HTTP read (or connect) may wait before it gives up."""
    return _number("BIOIMGZOO_TIMEOUT", 30.0, integer=False, minimum=0.001)


def http_retries() -> int:
    """How often a transient download failure is retried."""
    return int(_number("BIOIMGZOO_RETRIES", 3, integer=True, minimum=0))


def download_deadline() -> float:
    """Seconds one file's whole download may take, all reads together (a slow-drip server ends here)."""
    return _number("BIOIMGZOO_DOWNLOAD_DEADLINE", 3600.0, integer=False, minimum=0.001)


def max_rdf_bytes() -> int:
    """Largest description file (rdf.yaml) read, in bytes."""
    return int(_number("BIOIMGZOO_MAX_RDF_BYTES", 8 << 20, integer=True, minimum=1))


def max_yaml_nodes() -> int:
    """Most nodes a description may hold, with YAML aliases expanded (an alias bomb ends here)."""
    return int(_number("BIOIMGZOO_MAX_YAML_NODES", 100_000, integer=True, minimum=1))


def max_yaml_depth() -> int:
    """Deepest nesting of mappings and lists a description may have."""
    return int(_number("BIOIMGZOO_MAX_YAML_DEPTH", 64, integer=True, minimum=1))


def max_file_bytes() -> int:
    """Largest single package file extracted from a zip or downloaded, in bytes."""
    return int(_number("BIOIMGZOO_MAX_FILE_BYTES", 8 << 30, integer=True, minimum=1))


def max_zip_ratio() -> float:
    """Largest uncompressed/compressed size ratio of a zip member over :data:`ZIP_RATIO_EXEMPT_BYTES`."""
    return _number("BIOIMGZOO_MAX_ZIP_RATIO", 200.0, integer=False, minimum=1)


def readers_mode() -> str:
    """``build``, ``cached`` or ``off``: whether validation builds, only uses, or skips the reader environments.

    Offline (:func:`offline`) ``build`` acts as ``cached``.
    """
    raw = os.environ.get("BIOIMGZOO_READERS", "").strip().lower() or "build"
    if raw not in ("build", "cached", "off"):
        raise ConfigError(f"BIOIMGZOO_READERS={os.environ['BIOIMGZOO_READERS']!r} is not understood: set it to "
                          "build (default), cached or off, or unset it")
    return raw


def reader_envs_dir() -> Path:
    """Folder of the deployed readers' virtual environments (``BIOIMGZOO_READER_ENVS``, else ``<cache>/readers``)."""
    env = os.environ.get("BIOIMGZOO_READER_ENVS")
    if env and env.strip():
        return Path(env).expanduser()
    return cache_dir() / "readers"


#: pip's own settings that decide what it installs (where from, which versions): part of an isolated
#: environment's key (see bioimgzoo.runtime.isolated)
PIP_SOURCE_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_PRE",
                        "PIP_ONLY_BINARY", "PIP_NO_BINARY", "PIP_CONSTRAINT", "PIP_CONFIG_FILE")


def pip_source_settings() -> dict[str, str]:
    """The values of :data:`PIP_SOURCE_VARIABLES` that are set (pip reads them; bioimgzoo only keys by them)."""
    return {k: os.environ[k] for k in PIP_SOURCE_VARIABLES if os.environ.get(k)}


def collection_http_pattern() -> str | None:
    """bioimageio.spec's URL pattern for ids, when the user set it."""
    return os.environ.get("BIOIMAGEIO_COLLECTION_HTTP_PATTERN") or None


def hub_url_set() -> bool:
    """Whether the user named the hub with ``BIOIMGZOO_HUB`` (it then wins over the collection pattern)."""
    return "BIOIMGZOO_HUB" in os.environ


def id_map_url() -> str | None:
    """bioimageio.spec's ``BIOIMAGEIO_ID_MAP`` (the legacy id map's URL), when the user set it."""
    return os.environ.get("BIOIMAGEIO_ID_MAP") or None


def serve_token() -> str | None:
    """The server's API token (``BIOIMGZOO_SERVE_TOKEN``), None when unset or blank."""
    return os.environ.get("BIOIMGZOO_SERVE_TOKEN", "").strip() or None


def serve_admin_token() -> str | None:
    """The server's admin token for model load/unload (``BIOIMGZOO_SERVE_ADMIN_TOKEN``), None when unset."""
    return os.environ.get("BIOIMGZOO_SERVE_ADMIN_TOKEN", "").strip() or None


def malloc_trim() -> bool:
    """Whether streaming hands freed memory back to the system after each work unit (glibc's ``malloc_trim``).

    On by default; ``BIOIMGZOO_NO_MALLOC_TRIM=1`` turns it off (to compare allocators, or where it misbehaves).
    """
    return not _flag("BIOIMGZOO_NO_MALLOC_TRIM")
