"""The real zoo model unet2d-nuclei-broad: reproduction, tiling, lazy files."""

from __future__ import annotations

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.testing.checks import assert_zoo_close
from bioimgzoo.package import FolderSource


@pytest.fixture(scope="module")
def test_tensors(zoo_fixture):
    return np.load(zoo_fixture / "test_input.npy"), np.load(zoo_fixture / "test_output.npy")


@pytest.mark.parametrize("weights", ["onnx", "torchscript"])
def test_reproduces_test_output(zoo_fixture, test_tensors, weights):
    x, expected = test_tensors
    model = bioimgzoo.load(zoo_fixture, weights=weights)
    assert model.weights_format == weights
    # the test tensor carries the batch axis: the output keeps it
    out = model.predict(x, axes="bcyx")
    assert_zoo_close(out, expected)
    # a plain yx image works too and comes back without batch
    out2 = model.predict(x[0, 0])
    assert out2.shape == expected.shape[1:]
    assert_zoo_close(out2, expected[0])


def test_default_weights_is_onnx(zoo_fixture):
    assert bioimgzoo.load(zoo_fixture).weights_format == "onnx"


class RecordingSource(FolderSource):
    def __init__(self, root):
        super().__init__(root)
        self.fetched = []

    def fetch(self, path, *, sha256):
        self.fetched.append(path)
        return super().fetch(path, sha256=sha256)


def test_onnx_prediction_reads_only_the_onnx_file(zoo_fixture, test_tensors):
    src = RecordingSource(zoo_fixture)
    model = bioimgzoo.load(src, weights="onnx")
    model.predict(test_tensors[0][0, 0])
    assert src.fetched == ["weights.onnx"]


def test_predict_many_list_and_xarray(zoo_fixture, test_tensors):
    import xarray as xr

    x, expected = test_tensors
    model = bioimgzoo.load(zoo_fixture)
    outs = model.predict([x[0, 0], x[0, 0][::-1].copy()])
    assert isinstance(outs, list) and len(outs) == 2
    assert_zoo_close(outs[0], expected[0])
    da = xr.DataArray(x[0, 0], dims=("y", "x"))
    out = model.predict(da)
    assert isinstance(out, xr.DataArray) and out.dims == ("channel", "y", "x")


def test_small_image_is_padded_and_cropped(zoo_fixture, test_tensors):
    x, _ = test_tensors
    model = bioimgzoo.load(zoo_fixture)
    out = model.predict(x[0, 0, :300, :200])
    assert out.shape == (1, 300, 200)
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


@pytest.mark.slow
def test_tiled_2048_matches_whole_image_torchscript(zoo_fixture, test_tensors):
    """Fixed 512 input, halo 32: onnx must tile; the torchscript U-Net runs the whole image."""
    x, _ = test_tensors
    big = np.tile(x[0, 0], (4, 4))  # 2048 x 2048 of real nuclei
    tiled = bioimgzoo.load(zoo_fixture, weights="onnx").predict(big)
    import torch

    ts = torch.jit.load(str(zoo_fixture / "weights.pt")).eval()
    norm = (big - big.mean()) / (big.std() + 1e-6)
    with torch.inference_mode():
        whole = torch.sigmoid(ts(torch.from_numpy(norm[None, None].astype(np.float32)))).numpy()[0]
    diff = np.abs(tiled - whole)
    assert diff.max() <= 1e-2, diff.max()
    assert diff.mean() <= 1e-5, diff.mean()


def test_per_sample_statistics_use_the_whole_image(zoo_fixture, test_tensors):
    """Tiling must not normalise each tile by itself: a bright half must not change the dark half's stats."""
    x, _ = test_tensors
    img = np.tile(x[0, 0], (1, 2))[:, :768].astype(np.float32)  # 512 x 768: two windows along x
    img[:, 384:] *= 5
    model = bioimgzoo.load(zoo_fixture)
    tiled = model.predict(img)
    import torch

    ts = torch.jit.load(str(zoo_fixture / "weights.pt")).eval()
    norm = (img - img.mean()) / (img.std() + 1e-6)
    with torch.inference_mode():
        whole = torch.sigmoid(ts(torch.from_numpy(norm[None, None]))).numpy()[0]
    assert np.abs(tiled - whole).max() < 1e-2
