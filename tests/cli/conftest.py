"""Tiny model packages for the command-line tests (built once per session: exporting is the slow part)."""

from __future__ import annotations

import numpy as np
import pytest

T = pytest.importorskip("bioimgzoo.testing")


@pytest.fixture(scope="session")
def tiny_pkg(tmp_path_factory):
    """1 channel in, 1 out (sigmoid), any size 16 + k*8, halo 2: fast on any image."""
    from bioimageio.spec.model import v0_5 as s

    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("tiny"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 2, "x": 2},
                             processing=[s.SigmoidDescr()])],
        formats=("onnx",))


@pytest.fixture(scope="session")
def two_channel_pkg(tmp_path_factory):
    """2 channels in, 2 out (named c0, c1), any size 16 + k*8."""
    x = np.random.default_rng(1).random((1, 2, 32, 32), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("two"), T.SameConv(cin=2, cout=2),
        inputs=[T.TensorDef("raw", "bcyx", channels=2, sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("out", "bcyx", channels=2, refs={"y": ("raw", "y"), "x": ("raw", "x")})],
        formats=("onnx",))


@pytest.fixture(scope="session")
def identity_pkg(tmp_path_factory):
    """1 channel in, 1 out named 'probability', the output equal to the input: probabilities made in a test
    come back as the model's output, so labels count known objects. Any size 16 + k*8."""
    x = np.random.default_rng(2).random((1, 1, 32, 32), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("identity"), T.Identity(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("probability", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})],
        formats=("onnx",))
