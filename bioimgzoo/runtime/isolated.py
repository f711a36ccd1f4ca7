"""``isolated=True``: run a package's network in a virtual environment with its declared dependencies.

``isolated=True`` (CLI ``--isolated``) runs the network in a virtual
environment built once per dependency file and cached by its sha256 under
``<cache>/envs/<sha256>`` (see :func:`bioimgzoo.config.cache_dir`):

* the venv uses ``--system-site-packages``, so torch, numpy and bioimgzoo of
  the current environment are reused, never reinstalled (torch is pinned to
  the running version while the package's requirements are installed);
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

import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import config, trust
from ..errors import UntrustedCodeError, WeightsError
from .dependencies import Dependencies, _installed, declared_dependencies

log = logging.getLogger("bioimgzoo")

__all__ = ["ensure_environment", "IsolatedEngine", "create_isolated_engine"]

_MARKER = ".bioimgzoo-env.json"



# ------------------------------------------------------------------ the environment
def _envs_root() -> Path:
    return config.cache_dir() / "envs"


def ensure_environment(deps: Dependencies) -> Path:
    """The python of the venv for ``deps`` (built once, atomically; cached by the file's sha256)."""
    from ..hub.cache import CacheLayout

    if deps.conda_only:
        raise WeightsError(f"{deps.path.name} asks for conda-only packages: {', '.join(deps.conda_only)}. "
                           "bioimgzoo installs pip packages only: conda install them into this environment "
                           "(they are reused), or add their pip names to the file's pip section")
    root = _envs_root()
    final = root / deps.sha256
    layout = CacheLayout(config.cache_dir())
    with layout.locked(f"env-{deps.sha256}", what=f"the environment of {deps.path.name}"):
        if (final / _MARKER).is_file():
            return _python(final)
        with layout.writing():
            root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".build-{deps.sha256[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _build(tmp, deps)
            (tmp / _MARKER).write_text(json.dumps({"dependencies": deps.path.name, "sha256": deps.sha256,
                                                   "pip": list(deps.pip)}))
            if final.exists():  # a leftover without marker (killed mid-rename on some file system)
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the environment for %s in %s", deps.path.name, final)
    return _python(final)


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: Sequence[str], *, cwd: Path | None, what: str) -> None:
    proc = subprocess.run(list(map(str, cmd)), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise WeightsError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _build(venv: Path, deps: Dependencies) -> None:
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=None,
         what="creating the virtual environment")
    if not deps.pip:
        return
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-env-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("\n".join(deps.pip) + "\n")
        pins = Path(tmp) / "constraints.txt"
        # torch of this environment, never a second (GBs) one; numpy may move within the venv
        pins.write_text("".join(f"{d}=={importlib.metadata.version(d)}\n" for d in ("torch",) if _installed(d)))
        # this environment's pip installs into the venv (--python): nothing to bootstrap there;
        # relative paths in the file (--find-links ./wheels) are relative to the file's folder
        _run([sys.executable, "-m", "pip", "--python", _python(venv), "install", "--disable-pip-version-check",
              "-r", reqs, "-c", pins], cwd=deps.path.parent,
             what=f"installing the dependencies of {deps.path.name} ({', '.join(deps.pip)})")


# ------------------------------------------------------------------------ the engine
class IsolatedEngine:
    """Runs a state-dict network in a worker process of the package's environment."""

    format = "pytorch_state_dict"

    def __init__(self, python: Path, spec: dict, *, device: str):
        self.device = device
        self._tmp = Path(tempfile.mkdtemp(prefix="bioimgzoo-isolated-"))
        (self._tmp / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ)
        # bioimgzoo itself, wherever it is installed (editable or not), for the worker
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
        # the worker's own output (warnings, prints) goes to a file: an undrained pipe would block it
        self._log = self._tmp / "worker.log"
        with open(self._log, "w") as log_file:
            self._proc = subprocess.Popen([str(python), "-m", "bioimgzoo.runtime.isolated", str(self._tmp)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                          text=True, env=env)
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._tmp)
        self._reply("loading the network in its environment")
        self._calls = 0

    def _reply(self, what: str) -> str:
        line = self._proc.stdout.readline()
        if line.startswith("ok"):
            return line
        if line.startswith("error "):
            kind, message = json.loads(line[6:])
            raise (UntrustedCodeError if kind == "UntrustedCodeError" else WeightsError)(message)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        err = self._log.read_text(errors="replace").strip().splitlines()[-5:] if self._log.is_file() else []
        raise WeightsError(f"{what}: the worker process ended unexpectedly" + (":\n" + "\n".join(err) if err else ""))

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._calls += 1
        call = self._tmp / f"call{self._calls}"
        call.mkdir()
        for i, a in enumerate(inputs):
            np.save(call / f"in{i}.npy", np.ascontiguousarray(a))
        self._proc.stdin.write(f"run {call}\n")
        self._proc.stdin.flush()
        n = int(self._reply("running the network in its environment").split()[1])
        outs = [np.load(call / f"out{i}.npy") for i in range(n)]
        shutil.rmtree(call, ignore_errors=True)
        return outs

    def close(self) -> None:
        self._finalizer()


def _shutdown(proc: subprocess.Popen, tmp: Path) -> None:
    try:
        if proc.poll() is None:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(timeout=10)
    except Exception:
        proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def create_isolated_engine(package: Any, weights_format: str, *, device: str, trust_code: bool) -> IsolatedEngine:
    """The engine for ``isolated=True``: the package's environment, then a worker running its network."""
    if weights_format != "pytorch_state_dict":
        raise WeightsError(f"isolated=True (--isolated) runs pytorch_state_dict weights, whose architecture "
                           f"code needs the package's dependencies; {weights_format} weights need none: load "
                           "without it, or choose --weights pytorch_state_dict")
    name = getattr(package, "name", "this package")
    for ref in trust.code_refs(package.descr, weights_format=weights_format):
        trust.check_trusted(ref, trust_code=trust_code, what=name)
    deps = declared_dependencies(package, weights_format)
    if deps is None:
        raise WeightsError(f"{name} declares no dependency file (weights.{weights_format}.dependencies), so an "
                           "isolated environment would hold nothing new: load it without isolated=True")
    python = ensure_environment(deps)
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
