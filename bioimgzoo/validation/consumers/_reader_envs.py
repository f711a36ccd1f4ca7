"""The deployed readers' virtual environments: built once, cached, used from a subprocess.

A reader is a pinned set of requirements (``bioimageio.spec==0.5.7.4``, as BiaPy
pins it); its environment lives in ``<readers>/<name>-<hash of the pins>``
(:func:`bioimgzoo.config.reader_envs_dir`), a plain venv *without* this
environment's packages (an old bioimageio.spec must not see the new one).  It
is built in a temporary folder beside its final place and renamed there when
complete, under the cache's file lock (:class:`bioimgzoo.hub.cache.CacheLayout`),
so a failed or interrupted build leaves nothing and two processes never build
it twice; a marker file records the pins and the versions installed.

``BIOIMGZOO_READERS=build`` (the default) builds a missing environment from the
package index (pip, as configured on the machine); ``cached`` and offline use
only built ones; ``off`` uses none.  A reader whose environment is missing or
does not build is *skipped* with the reason, never passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ... import config

log = logging.getLogger("bioimgzoo")

__all__ = ["ReaderEnv", "EnvUnavailable", "reader_python"]

_MARKER = ".bioimgzoo-reader.json"
#: builds that failed in this process: not tried again for every package of a run
_FAILED: dict[str, str] = {}


class EnvUnavailable(Exception):
    """The reader's environment is not there and is not built (the message says why)."""


@dataclass(frozen=True)
class ReaderEnv:
    """A reader's environment: a name and the pip requirements that make it."""

    name: str
    requirements: tuple[str, ...]
    #: the module whose ``__version__`` the marker records
    probe: str = "bioimageio.spec"

    @property
    def key(self) -> str:
        digest = hashlib.sha256(("\n".join(self.requirements) + f"\n{sys.version_info[:2]}").encode()).hexdigest()
        return f"{self.name}-{digest[:12]}"


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_versions(env: ReaderEnv) -> dict | None:
    """The marker of a built environment (``{requirements, versions}``), or None."""
    marker = config.reader_envs_dir() / env.key / _MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def reader_python(env: ReaderEnv, *, build: bool = True) -> Path:
    """The python of ``env``'s environment, built first if missing and allowed; raises :class:`EnvUnavailable`.

    ``build=False`` uses a built environment only (``bioimgzoo info`` downloads nothing).
    """
    mode = config.readers_mode()
    if mode == "off":
        raise EnvUnavailable("the deployed readers are turned off (BIOIMGZOO_READERS=off)")
    root = config.reader_envs_dir()
    final = root / env.key
    if (final / _MARKER).is_file():
        return _python(final)
    if mode == "cached" or config.offline() or not build:
        why = "offline (BIOIMGZOO_OFFLINE)" if config.offline() else "BIOIMGZOO_READERS=cached" if build else \
            "this command downloads nothing"
        raise EnvUnavailable(f"its environment ({', '.join(env.requirements)}) is not built and is not built "
                             f"now: {why}. Run once with the package index reachable (bioimgzoo validate builds "
                             f"it under {root})")
    if env.key in _FAILED:
        raise EnvUnavailable(_FAILED[env.key])
    try:
        return _build_locked(env, root, final)
    except EnvUnavailable as e:
        _FAILED[env.key] = str(e)
        raise


def _build_locked(env: ReaderEnv, root: Path, final: Path) -> Path:
    from ...hub.cache import CacheLayout

    def build(tmp: Path) -> dict:
        log.warning("building the reader environment %s once (%s) in %s", env.name, ", ".join(env.requirements),
                    final)
        return {"requirements": list(env.requirements), "versions": _build(tmp, env)}

    CacheLayout(root).built_once(final, lock=f"reader-{env.key}", what=f"the reader environment {env.name}",
                                 marker=_MARKER, build=build)
    return _python(final)


def _run(cmd: Sequence[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EnvUnavailable(f"{what} took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise EnvUnavailable(f"{what} failed (exit {proc.returncode}): {tail[:400]}")
    return proc.stdout


def _build(venv: Path, env: ReaderEnv) -> dict:
    _run([sys.executable, "-m", "venv", "--without-pip", venv], "creating the virtual environment", 120)
    # this environment's pip installs into the venv (--python): nothing to bootstrap there
    _run([sys.executable, "-m", "pip", "--python", _python(venv), "install", "--disable-pip-version-check",
          "--no-input", *env.requirements], f"installing {', '.join(env.requirements)}", 1200)
    dists = [re.split(r"[=<>!~ \[]", r, maxsplit=1)[0] for r in env.requirements]
    code = "import importlib.metadata as m, json, sys; print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    out = _run([_python(venv), "-c", code, *dists], "reading the installed versions", 120)
    return json.loads(out.strip().splitlines()[-1])
