"""Virtual environments with the readers consumers deploy, for tests and ``scripts/readers_table.py``.

* ``core-0.10``: bioimageio.core 0.10.4 (bioimageio.spec 0.5.10.2, the zoo's CI) with onnxruntime, to run its
  ``test_description`` on a package.
* ``biapy``: BiaPy 3.7.1 with bioimageio.core 0.9.6 (bioimageio.spec 0.5.7.4), to run BiaPy's own
  ``check_bmz_model_compatibility`` and load the network with ``build_bmz_model``.  BiaPy's package root
  imports its training engine, which imports timm and torchvision; the package index's torchvision 0.28.0 is a
  CUDA build that does not load beside the CPU torch 2.13.0 here (``operator torchvision::nms does not
  exist``).  So BiaPy is installed with ``--no-deps`` plus what ``biapy.models`` imports, and the worker
  imports ``biapy.models`` without running ``biapy/__init__.py`` (BiaPy's own code, unchanged).

Neither installs torch: a ``.pth`` file appends this environment's site-packages *after* the venv's own, so
torch 2.13.0 is reused and the venv's bioimageio packages come first.  The venvs live in a persistent folder
(built once; pip's cache makes a rebuild quick) and are built under a lock, atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Sequence

__all__ = ["VENVS", "venv_python", "run_core_test", "run_biapy", "VenvUnavailable"]

#: name -> pip requirements (pydantic<2.14: bioimageio.spec 0.5.x breaks with pydantic 2.14)
VENVS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # (requirements, installed with --no-deps)
    "core-0.10": (("bioimageio.core==0.10.4", "pydantic<2.14", "onnxruntime"), ()),
    "biapy": (("bioimageio.core==0.9.6", "pydantic<2.14", "pyyaml", "yacs", "torchinfo", "requests",
               "scikit-image", "scikit-learn", "matplotlib", "pandas", "h5py", "tqdm", "edt", "fill-voids",
               "numba", "zarr>=3.1.5", "imagecodecs", "pooch", "xarray==2025.1.*", "pytorch-msssim", "safetensors",
               "nibabel", "tensorboardX", "pydot", "opencv-python-headless"), ("biapy==3.7.1",)),
}


class VenvUnavailable(Exception):
    """The venv cannot be built here (the message says why: pip's last lines)."""


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _pip(venv: Path, args: Sequence[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(_python(venv)), "install",
                           "--disable-pip-version-check", "--no-input", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise VenvUnavailable(f"pip install {' '.join(args)} failed: {tail[:600]}")


def venv_python(name: str, root: Path) -> Path:
    """The python of venv ``name`` under ``root`` (built once; raises :class:`VenvUnavailable`)."""
    import filelock

    reqs, nodeps = VENVS[name]
    final = root / name
    marker = final / ".bioimgzoo-test-venv.json"
    if marker.is_file():
        return _python(final)
    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root / f".{name}.lock")):
        if marker.is_file():
            return _python(final)
        tmp = root / f".build-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], check=True,
                           capture_output=True)
            _pip(tmp, reqs)
            if nodeps:
                _pip(tmp, ["--no-deps", *nodeps])
            # this environment's torch (and its dependencies) after the venv's own packages
            site = subprocess.run([str(_python(tmp)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            Path(site, "zz_parent_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
            marker_tmp = tmp / marker.name
            marker_tmp.write_text(json.dumps({"requirements": list(reqs), "no_deps": list(nodeps)}))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except subprocess.CalledProcessError as e:
            raise VenvUnavailable(f"creating the venv failed: {e}") from e
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _python(final)


def _run(python: Path, code: str, *args: str, timeout: float = 900) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: " + " | ".join(proc.stderr.strip().splitlines()[-6:])}
    return json.loads(lines[-1])


_CORE_TEST = r'''
import json, sys
import bioimageio.core as core, bioimageio.spec as spec
from bioimageio.core import test_description
from bioimageio.spec._internal.constants import KNOWN_GITHUB_USERS
KNOWN_GITHUB_USERS.update(json.loads(sys.argv[2]))
s = test_description(sys.argv[1], devices=["cpu"])
details = [{"name": d.name, "status": d.status, "errors": [str(e.msg)[:300] for e in d.errors]} for d in s.details]
print(json.dumps({"core": core.__version__, "spec": spec.__version__, "status": s.status, "details": details}))
'''


def run_core_test(package: Path, root: Path, *, github_users: Sequence[str] = ()) -> dict:
    """bioimageio.core 0.10's ``test_description`` on ``package``: ``{core, spec, status, details}``."""
    return _run(venv_python("core-0.10", root), _CORE_TEST, str(package), json.dumps([u.lower() for u in github_users]))


_BIAPY = r'''
import importlib.util, json, sys, types, zipfile, io
spec_ = importlib.util.find_spec("biapy")
pkg = types.ModuleType("biapy"); pkg.__path__ = list(spec_.submodule_search_locations); sys.modules["biapy"] = pkg
import numpy as np, torch, yaml
import importlib.metadata as md
from biapy.models import check_bmz_model_compatibility, build_bmz_model
from bioimageio.spec import load_description
from bioimageio.spec._internal.constants import KNOWN_GITHUB_USERS
from yacs.config import CfgNode as CN
path, inp, outp = sys.argv[1], sys.argv[2], sys.argv[3]
KNOWN_GITHUB_USERS.update(json.loads(sys.argv[4]))
with zipfile.ZipFile(path) as zf:
    rdf = yaml.safe_load(zf.read("rdf.yaml"))
report = check_bmz_model_compatibility(rdf)
out = {"biapy": md.version("biapy"), "spec": md.version("bioimageio.spec"), "check": {k: report[k] for k in
       ("error", "reason_message", "preproc_info")}}
descr = load_description(path)
out["load_description"] = type(descr).__name__
if type(descr).__name__ == "ModelDescr":
    x = np.load(inp)
    cfg = CN(); cfg.PROBLEM = CN(); cfg.PROBLEM.NDIM = "2D"; cfg.DATA = CN()
    cfg.DATA.PATCH_SIZE = (x.shape[2], x.shape[3], x.shape[1])
    net = build_bmz_model(cfg, descr, torch.device("cpu"))
    net.eval()
    with torch.no_grad():
        y = net(torch.from_numpy(x))
    np.save(outp, (y[0] if isinstance(y, (list, tuple)) else y).numpy())
    out["ran"] = True
print(json.dumps(out, default=str))
'''


def run_biapy(package: Path, network_input: Path, output: Path, root: Path, *,
              github_users: Sequence[str] = ()) -> dict:
    """BiaPy 3.7.1 on ``package``: its compatibility check, ``load_description`` and ``build_bmz_model``, the
    network run on ``network_input`` (saved to ``output``): ``{biapy, spec, check, load_description, ran}``."""
    return _run(venv_python("biapy", root), _BIAPY, str(package), str(network_input), str(output),
                json.dumps([u.lower() for u in github_users]))
