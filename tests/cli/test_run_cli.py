from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from bioimgzoo.cli import main
from bioimgzoo.testing.checks import assert_zoo_close


@pytest.mark.parametrize("weights", ["onnx", "torchscript"])
def test_cli_predict_reproduces_test_output(zoo_fixture, tmp_path, weights):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(zoo_fixture), str(zoo_fixture / "test_input.npy"), "-o", str(out),
                                  "--weights", weights, "--axes", "bcyx"])
    assert r.exit_code == 0, r.output
    result = np.load(out / "test_input_probability.npy")
    assert_zoo_close(result, np.load(zoo_fixture / "test_output.npy"))


def test_cli_predict_tiff_folder(zoo_fixture, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    x = np.load(zoo_fixture / "test_input.npy")[0, 0]
    tifffile.imwrite(images / "one.tif", x)
    tifffile.imwrite(images / "two.tif", np.stack([x, x[::-1]]), metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(zoo_fixture), str(images), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(out / "two_probability.tif") as t:
        assert t.series[0].shape == (2, 1, 512, 512)
        assert t.series[0].axes == "ZCYX"
    one = tifffile.imread(out / "one_probability.tif")
    assert_zoo_close(one, np.load(zoo_fixture / "test_output.npy")[0])


def test_cli_info(zoo_fixture):
    r = CliRunner().invoke(main, ["info", str(zoo_fixture)])
    assert r.exit_code == 0, r.output
    for text in ("UNet 2D Nuclei Broad", "raw", "probability", "halo 32", "onnx", "torchscript",
                 "zero_mean_unit_variance", "sigmoid", "y=512"):
        assert text in r.output, text
