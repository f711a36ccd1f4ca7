"""Packages made by other producers' own code, in virtual environments of their own, cached between runs.

A producer (StarDist's ``export_bioimageio``, bioimageio.core 0.5's
``build_model`` as ZeroCostDL4Mic/DeepImageJ notebooks call it, torch-em,
BiaPy) often pins what bioimgzoo cannot have beside it (bioimageio.core
0.5 or 0.10, Keras 2).  So each gets a virtual environment, built once and
kept under ``~/.cache/bioimgzoo-tests/venvs/<name>-<hash of its
requirements>`` (pip's own cache makes a rebuild quick); its build script
runs there in a subprocess and writes the package and the producer's own
predictions under ``~/.cache/bioimgzoo-tests/packages/<name>-<hash of
requirements and script>``.  Both are built in a temporary folder and
renamed into place under a file lock, so a failed or interrupted build
leaves nothing and a rerun of the suite reuses them.  bioimgzoo is then
tested on the package in the test's own environment.

Where a producer does not install here, the test skips, saying why (pip's
last lines).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Sequence

import pytest

CACHE = Path.home() / ".cache" / "bioimgzoo-tests"
#: torch from this environment's version (a CPU build here); never an unpinned torch (GBs of CUDA)
_MARKER = ".complete"


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _locked(name: str):
    import filelock

    CACHE.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(CACHE / f"{name}.lock"))


def _rename_into_place(tmp: Path, final: Path) -> None:
    if final.exists():  # a leftover without its marker
        shutil.rmtree(final)
    os.rename(tmp, final)


def producer_python(name: str, requirements: Sequence[str], *, pip_options: Sequence[str] = ()) -> Path:
    """The python of a cached venv with ``requirements`` installed (built now if missing); skips if pip fails."""
    key = _key(sys.version, *requirements, *pip_options)
    final = CACHE / "venvs" / f"{name}-{key}"
    python = final / "bin" / "python"
    failed = CACHE / "venvs" / f"{name}-{key}.failed"
    if (final / _MARKER).is_file():
        return python
    if failed.is_file():  # pip already said no with these requirements: say it again without trying
        pytest.skip(failed.read_text())
    with _locked(f"venv-{name}-{key}"):
        if (final / _MARKER).is_file():
            return python
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".build-{name}-{uuid.uuid4().hex[:8]}"
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
            proc = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q",
                                   "--disable-pip-version-check", *pip_options, *requirements],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join(line for line in (proc.stderr or proc.stdout).splitlines()
                                 if "is ignored" not in line)[-1500:]
                reason = f"{name}'s producer environment does not install here ({' '.join(requirements)}):\n{tail}"
                failed.write_text(reason)
                pytest.skip(reason)
            # the venv's scripts name its folder: rewrite nothing, the venv is used through its python only
            (tmp / _MARKER).write_text(json.dumps(list(requirements)))
            _rename_into_place(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return python


def producer_package(name: str, python: Path, script: str, *, args: Sequence[str] = (), timeout: float = 900) -> Path:
    """Run ``script`` (its source) with ``python`` to build a package into a cached folder; the folder.

    The script gets the output folder as ``sys.argv[1]`` and writes there
    what the test reads (the package and the producer's own predictions).
    """
    req = (python.parent.parent / _MARKER).read_text() if (python.parent.parent / _MARKER).is_file() else ""
    key = _key(req, script, *args)
    final = CACHE / "packages" / f"{name}-{key}"
    if (final / _MARKER).is_file():
        return final
    with _locked(f"package-{name}-{key}"):
        if (final / _MARKER).is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".build-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            (tmp / "build.py").write_text(script)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("BIOIMGZOO_", "PYTHONPATH"))}
            env.update({"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                        "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2"})
            proc = subprocess.run([str(python), str(tmp / "build.py"), str(tmp), *args], capture_output=True,
                                  text=True, timeout=timeout, cwd=tmp, env=env)
            if proc.returncode != 0:
                raise AssertionError(f"{name}'s producer script failed (exit {proc.returncode}):\n"
                                     + (proc.stderr or proc.stdout)[-3000:])
            (tmp / _MARKER).write_text("ok")
            _rename_into_place(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def layered_python(name: str, base: Path, requirements: Sequence[str], *, no_deps: Sequence[str] = ()) -> Path:
    """The python of a cached venv that reuses ``base``'s packages (after its own) plus ``requirements``.

    torch-em, BiaPy and CAREamics need torch 2.14.1 with torchvision (5.5 GB,
    see ``scripts.TORCH_PAIR``): one venv holds that pair and the others
    layer on it, as does bioimgzoo (run from this source tree, on
    ``PYTHONPATH``) where a package's code needs torchvision.  A ``.pth``
    file appends ``base``'s site-packages *before* pip runs, so pip counts
    what ``base`` has (its torch: never a second copy) and installs into this
    venv only what is missing or of another version, which then shadows
    ``base``'s.  ``no_deps`` are installed after, without their dependencies
    (a producer whose pins exclude ``base``'s torch; the caller says why).
    Skips, with pip's last lines, where pip fails.
    """
    # base's site-packages and those its own .pth files add (a .pth line is not itself read for .pth files)
    base_site = subprocess.run([str(base), "-c", "import sys; print('\\n'.join(p for p in sys.path "
                                "if p.rstrip('/').endswith('site-packages')))"],
                               check=True, capture_output=True, text=True).stdout.strip()
    key = _key(sys.version, base_site, *requirements, *(["--no-deps", *no_deps] if no_deps else []))
    final = CACHE / "venvs" / f"{name}-{key}"
    python = final / "bin" / "python"
    failed = CACHE / "venvs" / f"{name}-{key}.failed"
    if (final / _MARKER).is_file():
        return python
    if failed.is_file():
        pytest.skip(failed.read_text())
    with _locked(f"venv-{name}-{key}"):
        if (final / _MARKER).is_file():
            return python
        tmp = final.parent / f".build-{name}-{uuid.uuid4().hex[:8]}"
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
            site = subprocess.run([str(tmp / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            Path(site, "zz_base_site_packages.pth").write_text(base_site + "\n")
            for args in [list(requirements)] + ([["--no-deps", *no_deps]] if no_deps else []):
                proc = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q",
                                       "--disable-pip-version-check", *args], capture_output=True, text=True)
                if proc.returncode != 0:
                    break
            if proc.returncode != 0:
                tail = "\n".join(line for line in (proc.stderr or proc.stdout).splitlines()
                                 if "is ignored" not in line and "outside environment" not in line)[-1500:]
                reason = f"{name}'s environment does not install here ({' '.join(requirements)}):\n{tail}"
                failed.write_text(reason)
                pytest.skip(reason)
            (tmp / _MARKER).write_text(json.dumps({"base": base_site, "requirements": list(requirements),
                                                   "no_deps": list(no_deps)}))
            _rename_into_place(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return python
