from __future__ import annotations

import json

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
        # an ImageJ hyperstack: z stays z (a single channel is not stored as an axis)
        assert t.is_imagej and t.series[0].axes == "ZYX" and t.series[0].shape == (2, 512, 512)
        assert t.series[0].dtype == np.float32
    one = tifffile.imread(out / "one_probability.tif")
    assert_zoo_close(one[None], np.load(zoo_fixture / "test_output.npy")[0])


def test_cli_info(zoo_fixture):
    r = CliRunner().invoke(main, ["info", str(zoo_fixture)])
    assert r.exit_code == 0, r.output
    for text in ("UNet 2D Nuclei Broad", "raw", "probability", "halo 32", "onnx", "torchscript",
                 "zero_mean_unit_variance", "sigmoid", "y: 512 only", "x: 512 only", "y: = raw.y",
                 "license: MIT", "10.1007/978-3-319-24574-4_28", "Constantin Pape", "weights.onnx, 1.8 MB"):
        assert text in r.output, text
    assert "64, 80, 96" not in r.output  # the old fixed example, true of no model in particular


def test_cli_info_json_sizes_and_metadata(tiny_pkg, zoo_fixture):
    r = CliRunner().invoke(main, ["info", "--json", str(tiny_pkg)])
    assert r.exit_code == 0, r.output
    facts = json.loads(r.output)
    y = next(a for a in facts["inputs"][0]["axes"] if a["id"] == "y")
    assert (y["min"], y["step"], y["examples"]) == (16, 8, [16, 24, 32, 40])
    out_y = next(a for a in facts["outputs"][0]["axes"] if a["id"] == "y")
    assert out_y["reference"]["tensor"] == "raw" and out_y["halo"] == 2
    assert facts["license"] == "MIT" and facts["cite"][0]["doi"] == "10.1234/5678"
    assert facts["authors"][0]["name"] == "bioimgzoo tests"
    assert facts["weights"][0]["format"] == "onnx" and facts["weights"][0]["bytes"] > 0
    assert set(facts["consumers"]) >= {"deepimagej", "ilastik"}
    text = CliRunner().invoke(main, ["info", str(tiny_pkg)]).output
    assert "y: 16 + k*8 (16, 24, 32, 40, ...)" in text
    fixture = json.loads(CliRunner().invoke(main, ["info", "--json", str(zoo_fixture)]).output)
    fy = next(a for a in fixture["inputs"][0]["axes"] if a["id"] == "y")
    assert (fy["min"], fy["step"], fy["examples"]) == (512, 0, [512])
