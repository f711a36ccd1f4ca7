"""The other direction, with the real readers in test-made virtual environments (built once per machine in the
tests' persistent folder): a package bioimgzoo exports passes bioimageio.core 0.10.4's ``test_description``, and
BiaPy 3.7.1's own ``check_bmz_model_compatibility`` accepts it and its model loading gives our output."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from bioimgzoo.testing import checks as C
from tests.conftest import PERSISTENT_ENVS

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow
VENVS = PERSISTENT_ENVS / "venvs"


def _venv_or_skip(call):
    from bioimgzoo.testing.reader_venvs import VenvUnavailable

    try:
        return call()
    except VenvUnavailable as e:
        pytest.skip(f"the reader's environment cannot be built here: {e}")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """bioimgzoo's own U-Net (what train and the demo export), all three weights formats."""
    from bioimgzoo.exporter import export_package
    from bioimgzoo.train.nets import UNet2d

    out = tmp_path_factory.mktemp("venvs") / "unet.zip"
    module = C.seeded(UNet2d, depth=2, base=4)
    x = np.random.default_rng(1).random((1, 1, 64, 64)).astype(np.float32)
    export_package(module, x, out, name="Readers UNet 2D", **C.meta(),
                   preprocessing=[{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}],
                   postprocessing=[{"id": "sigmoid"}])
    return out


def test_core_0_10_test_description_passes(package):
    from bioimgzoo.testing.reader_venvs import run_core_test

    result = _venv_or_skip(lambda: run_core_test(package, VENVS, github_users=["bioimageiobot"]))
    assert "error" not in result, result
    assert result["core"] == "0.10.4" and result["spec"] == "0.5.10.2"
    failed = [d for d in result["details"] if d["status"] == "failed"]
    assert result["status"] == "passed" and not failed, failed
    # every weights format was run (core names them in its details)
    names = " ".join(d["name"] for d in result["details"])
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert fmt in names, names


def test_biapy_accepts_and_loads_the_network(package, tmp_path):
    from bioimgzoo.package import open_package
    from bioimgzoo.runtime.engines import create_engine
    from bioimgzoo.testing.reader_venvs import run_biapy

    with zipfile.ZipFile(package) as zf:
        x = np.load(io.BytesIO(zf.read("test_input.npy")))
    net_in = ((x - x.mean(axis=(2, 3), keepdims=True)) / (x.std(axis=(2, 3), keepdims=True) + 1e-6)).astype(np.float32)
    np.save(tmp_path / "x.npy", net_in)
    result = _venv_or_skip(lambda: run_biapy(package, tmp_path / "x.npy", tmp_path / "y.npy", VENVS,
                                             github_users=["bioimageiobot"]))
    assert "error" not in result, result
    assert result["biapy"] == "3.7.1" and result["spec"] == "0.5.7.4"
    assert result["check"]["error"] is False, result["check"]
    assert result["load_description"] == "ModelDescr" and result["ran"]
    ours = create_engine(open_package(package), "pytorch_state_dict", device="cpu", trust_code=False,
                         n_outputs=1).run([net_in])[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ours, atol=1e-5, rtol=0)
