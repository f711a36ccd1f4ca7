"""A network in another process: the client side of the line protocol both worker kinds speak.

Used where the network must not run in this interpreter: a package's own
environment (:mod:`.isolated`) and TensorFlow (:mod:`.tf_weights`).  The
worker is ``python -m <module> <folder>``; it reads commands from stdin, one
per line (``run <call folder>``, ``quit``, or its own), and answers one line:
``ok ...`` or ``error <json>`` (a message, or ``[error class, message]``).
Arrays go both ways as ``.npy`` files in a temporary folder; the worker's own
output (warnings, prints) goes to a log file, whose last lines explain a worker
that ended unexpectedly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import UntrustedCodeError, WeightsError

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """Starts ``python -m module folder`` with ``spec`` in ``folder/spec.json`` and talks to it.

    Parameters
    ----------
    python : path
        The interpreter (another environment's, or this one's).
    module : str
        The worker module (``bioimgzoo.runtime.isolated``, ...).
    spec : mapping
        What the worker loads, written as JSON beside it.
    env : mapping, optional
        Variables set for the worker (bioimgzoo itself is always on its path).
    what : str
        Names the worker in messages (``"TensorFlow process"``).
    """

    def __init__(self, python: str | os.PathLike, module: str, spec: Mapping, *, env: Mapping[str, str] | None = None,
                 what: str = "worker process", prefix: str = "bioimgzoo-worker-"):
        self.what = what
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        (self.folder / "spec.json").write_text(json.dumps(dict(spec)))
        environ = dict(os.environ)
        # bioimgzoo itself, wherever it is installed (editable or not), for the worker
        here = str(Path(__file__).resolve().parents[2])
        environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [environ.get("PYTHONPATH")])])
        environ.update(env or {})
        # the worker's own output goes to a file: an undrained pipe would block it
        self._log = self.folder / "worker.log"
        with open(self._log, "w") as log_file:
            self._proc = subprocess.Popen([str(python), "-m", module, str(self.folder)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log_file, text=True, env=environ)
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self.folder)
        self._calls = 0

    def reply(self, doing: str) -> str:
        """The worker's answer to the last command (``ok ...``); its error, or its death, as one WeightsError."""
        line = self._proc.stdout.readline()
        if line.startswith("ok"):
            return line
        if line.startswith("error "):
            payload = json.loads(line[6:])
            kind, message = payload if isinstance(payload, list) else ("WeightsError", f"{doing}: {payload}")
            raise (UntrustedCodeError if kind == "UntrustedCodeError" else WeightsError)(message)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        err = self._log.read_text(errors="replace").strip().splitlines()[-5:] if self._log.is_file() else []
        raise WeightsError(f"{doing}: the {self.what} ended unexpectedly" + (":\n" + "\n".join(err) if err else ""))

    def call(self, command: str, doing: str) -> str:
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self.reply(doing)

    def run(self, inputs: Sequence[np.ndarray], doing: str) -> list[np.ndarray]:
        """The network's outputs for ``inputs``, through ``.npy`` files."""
        self._calls += 1
        call = self.folder / f"call{self._calls}"
        call.mkdir()
        for i, a in enumerate(inputs):
            np.save(call / f"in{i}.npy", np.ascontiguousarray(a))
        n = int(self.call(f"run {call}", doing).split()[1])
        outs = [np.load(call / f"out{i}.npy") for i in range(n)]
        shutil.rmtree(call, ignore_errors=True)
        return outs

    def close(self) -> None:
        self._finalizer()


def _shutdown(proc: subprocess.Popen, folder: Path) -> None:
    try:
        if proc.poll() is None:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 -- a worker that does not quit is killed
        proc.kill()
    shutil.rmtree(folder, ignore_errors=True)
