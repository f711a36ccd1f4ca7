"""``isolated=True``: run a package's network in a virtual environment with its declared dependencies.

Installing a package runs its code (build backends, ``setup.py``, ``.pth``
files), so ``isolated=True`` (CLI ``--isolated``) needs ``trust_code=True``
(``--trust-code``) like any other package code, for every package, bioimgzoo's
own allow-listed networks included.  Even then it installs only requirement
specifiers from the package index (:func:`.dependencies.index_requirements`
refuses pip options, paths, URLs, VCS and direct references before pip runs),
or, when the *user* names a folder of wheels (``wheels=DIR``, CLI
``--wheels DIR``), only wheels from that folder (``--no-index --find-links
DIR --only-binary :all:``).  pip runs in an empty temporary folder, with the
requirements as arguments (never ``-r``: a requirements file may carry options).

The environment is built once and cached under ``<cache>/envs/<key>`` (see
:func:`bioimgzoo.config.cache_dir`), ``key`` the sha256 of everything that
decides its content (:func:`environment_key`): the requirements, the wheel
folder's files (names and sha256), this interpreter and its version, the
site-packages it inherits, torch's and pip's versions and pip's source
settings (``PIP_INDEX_URL`` and the like, :func:`bioimgzoo.config.pip_source_settings`).

* the venv is made without ``--system-site-packages`` (from a virtual
  environment that would give the *base* interpreter's packages, not this
  environment's); instead a ``.pth`` file in its own site-packages adds this
  environment's site-packages *after* its own, so torch, numpy and bioimgzoo
  are reused, never reinstalled (torch is pinned to the running version while
  the requirements are installed), and what the package needs shadows them;
* it is built in a temp folder beside its final place and renamed there
  when complete, under a file lock, so a failed or interrupted build leaves
  nothing and two processes never build it twice;
* conda-only entries (not pip-installable, not already present; see
  :mod:`.dependencies`) end in one error listing them.

The network then runs in a worker process of that environment
(:class:`IsolatedEngine`): each batch of windows goes there and back as
``.npy`` files in a temp folder; tiling, processing and stitching stay here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import config, trust
from ..errors import InputError, UntrustedCodeError, WeightsError
from .worker import WorkerProcess
from .dependencies import Dependencies, installed, declared_dependencies, index_requirements

log = logging.getLogger("bioimgzoo")

__all__ = ["ensure_environment", "environment_key", "IsolatedEngine", "create_isolated_engine"]

_MARKER = ".bioimgzoo-env.json"
#: layout of the environments (part of their key: a change of how they are built builds them anew)
_LAYOUT = 2


# ------------------------------------------------------------------ the environment
def _envs_root() -> Path:
    return config.cache_dir() / "envs"


def _parent_site_dirs() -> list[str]:
    """This environment's site-packages (a venv's own, the base's when it includes them, the user's)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(os.path.realpath(d) for d in dirs) if os.path.isdir(d)]


def _wheel_files(wheels: Path) -> dict[str, str]:
    """name -> sha256 of each file pip's ``--find-links`` would see in ``wheels`` (its top level)."""
    from .._files import sha256_file

    return {p.name: sha256_file(p) for p in sorted(wheels.iterdir()) if p.is_file()}


def _check_wheels(wheels: Any) -> Path | None:
    if wheels is None:
        return None
    folder = Path(wheels).expanduser()
    if not folder.is_dir():
        raise InputError(f"wheels={str(wheels)!r} (--wheels) is not a folder: name the folder that holds the wheels "
                         "to install")
    return folder.resolve()


def environment_key(requirements: Sequence[str], *, wheels: Path | None = None) -> tuple[str, dict]:
    """``(sha256, what it hashes)``: everything that decides the content of an isolated environment."""
    torch_version = importlib.metadata.version("torch") if installed("torch") else None
    content = {"layout": _LAYOUT, "requirements": sorted(requirements),
               "wheels": None if wheels is None else {"folder": str(wheels), "files": _wheel_files(wheels)},
               "python": [os.path.realpath(sys.executable), sys.version], "inherits": _parent_site_dirs(),
               "torch": torch_version, "pip": importlib.metadata.version("pip") if installed("pip") else None,
               "pip_settings": config.pip_source_settings()}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return digest, content


def ensure_environment(deps: Dependencies, *, wheels: str | os.PathLike | None = None) -> Path:
    """The python of the venv for ``deps`` (built once, atomically; cached by :func:`environment_key`).

    ``wheels``: a folder of wheels the user names; pip then installs from it alone.
    """
    from ..hub.cache import CacheLayout

    if deps.conda_only:
        raise WeightsError(f"{deps.path.name} asks for conda-only packages: {', '.join(deps.conda_only)}. "
                           "bioimgzoo installs pip packages only: conda install them into this environment "
                           "(they are reused), or add their pip names to the file's pip section")
    requirements = index_requirements(deps.pip, where=f"the dependency file {deps.path.name}")
    folder = _check_wheels(wheels)
    key, content = environment_key(requirements, wheels=folder)
    root = _envs_root()
    final = root / key
    if (final / _MARKER).is_file():
        return _python(final)

    def build(tmp: Path) -> dict:
        _build(tmp, requirements, deps, wheels=folder)
        return {"dependencies": deps.path.name, **content}

    CacheLayout(config.cache_dir()).built_once(final, lock=f"env-{key}", what=f"the environment of {deps.path.name}",
                                               marker=_MARKER, build=build)
    log.info("the environment for %s is in %s", deps.path.name, final)
    return _python(final)


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: Sequence[str], *, cwd: Path | None, what: str) -> str:
    proc = subprocess.run(list(map(str, cmd)), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(line[:300] for line in (proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise WeightsError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _build(venv: Path, requirements: Sequence[str], deps: Dependencies, *, wheels: Path | None) -> None:
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=None, what="creating the virtual environment")
    # this environment's packages after the venv's own: a .pth line starting with "import" runs at start-up,
    # and addsitedir also reads the .pth files there (editable installs such as bioimgzoo's own)
    purelib = Path(_run([_python(venv), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=None, what="locating the environment's site-packages").strip())
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / "_bioimgzoo_parent.pth").write_text(
        f"import site; list(map(site.addsitedir, {_parent_site_dirs()!r}))\n")
    if not requirements:
        return
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-env-") as tmp:
        pins = Path(tmp) / "constraints.txt"
        # torch of this environment, never a second (GBs) one; numpy may move within the venv
        pins.write_text("".join(f"{d}=={importlib.metadata.version(d)}\n" for d in ("torch",) if installed(d)))
        source = ["--no-index", "--find-links", wheels, "--only-binary", ":all:"] if wheels is not None else []
        empty = Path(tmp) / "empty"
        empty.mkdir()
        # this environment's pip installs into the venv (--python); in an empty folder, so that nothing a name
        # could mean is found beside it; requirements as arguments, never a requirements file (options)
        _run([sys.executable, "-m", "pip", "--python", _python(venv), "install", "--disable-pip-version-check",
              *source, "-c", pins, *requirements], cwd=empty,
             what=f"installing the dependencies of {deps.path.name} ({', '.join(requirements)})")


# ------------------------------------------------------------------------ the engine
class IsolatedEngine:
    """Runs a state-dict network in a worker process of the package's environment."""

    format = "pytorch_state_dict"

    def __init__(self, python: Path, spec: dict, *, device: str):
        self.device = device
        self._worker = WorkerProcess(python, "bioimgzoo.runtime.isolated", spec, what="worker process",
                                     prefix="bioimgzoo-isolated-")
        self._worker.reply("loading the network in its environment")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._worker.run(inputs, "running the network in its environment")

    def close(self) -> None:
        self._worker.close()


def create_isolated_engine(package: Any, weights_format: str, *, device: str, trust_code: bool,
                           wheels: str | os.PathLike | None = None) -> IsolatedEngine:
    """The engine for ``isolated=True``: the package's environment, then a worker running its network."""
    name = getattr(package, "name", "this package")
    if not trust_code:  # every package: an allow-listed network's dependencies run code when installed too
        raise UntrustedCodeError(f"isolated=True installs the packages {name} lists as its dependencies, and "
                                 "installing a package runs its code (build scripts, .pth files). Pass "
                                 "trust_code=True (CLI: --trust-code) with it only if you trust the package, or "
                                 "load it without isolated=True")
    if weights_format != "pytorch_state_dict":
        raise WeightsError(f"isolated=True (--isolated) runs pytorch_state_dict weights, whose architecture "
                           f"code needs the package's dependencies; {weights_format} weights need none: load "
                           "without it, or choose --weights pytorch_state_dict")
    for ref in trust.code_refs(package.descr, weights_format=weights_format):
        trust.check_trusted(ref, trust_code=trust_code, what=name)
    deps = declared_dependencies(package, weights_format)
    if deps is None:
        raise WeightsError(f"{name} declares no dependency file (weights.{weights_format}.dependencies), so an "
                           "isolated environment would hold nothing new: load it without isolated=True")
    python = ensure_environment(deps, wheels=wheels)
    entry = getattr(package.descr.weights, weights_format)
    arch = entry.architecture
    spec = {"weights": str(package.file(entry)), "callable": str(arch.callable),
            "kwargs": dict(getattr(arch, "kwargs", None) or {}), "device": device, "trust_code": trust_code,
            "name": name}
    if hasattr(arch, "import_from"):
        spec["import_from"] = str(arch.import_from)
    else:
        spec["source"] = str(package.file(arch))
    try:
        return IsolatedEngine(python, spec, device=device)
    except WeightsError as e:
        raise WeightsError(f"in the isolated environment {python.parent.parent} (built from {deps.path.name}: "
                           f"{deps.listing()}): {e}") from e


# ------------------------------------------------------------------------ the worker
class _LocalFiles:
    """The stand-in package of the worker: its files are already fetched and verified."""

    def __init__(self, spec: dict):
        self.name = spec["name"]
        self._source = spec.get("source")

    def file(self, ref: Any) -> Path:
        return Path(self._source)


def _worker(folder: Path) -> None:
    from types import SimpleNamespace

    from ..errors import BioimgzooError
    from .engines import StateDictEngine

    spec = json.loads((folder / "spec.json").read_text())
    arch = SimpleNamespace(callable=spec["callable"], kwargs=spec["kwargs"])
    if "import_from" in spec:
        arch.import_from = spec["import_from"]
    else:
        arch.source = spec["source"]
    out = sys.stdout
    sys.stdout = sys.stderr  # the network's prints must not garble the replies

    def reply(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    try:
        engine = StateDictEngine(Path(spec["weights"]), arch, package=_LocalFiles(spec), device=spec["device"],
                                 trust_code=spec["trust_code"])
    except BioimgzooError as e:
        reply("error " + json.dumps([type(e).__name__, str(e)]))
        return
    reply("ok")
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd != "run":
            return
        call = Path(arg)
        try:
            n = len(list(call.glob("in*.npy")))
            outs = engine.run([np.load(call / f"in{i}.npy") for i in range(n)])
            for i, o in enumerate(outs):
                np.save(call / f"out{i}.npy", o)
            reply(f"ok {len(outs)}")
        except BioimgzooError as e:
            reply("error " + json.dumps([type(e).__name__, str(e)]))


if __name__ == "__main__":  # the worker: python -m bioimgzoo.runtime.isolated FOLDER
    _worker(Path(sys.argv[1]))
