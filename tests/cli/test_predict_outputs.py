"""``bioimgzoo predict`` writes Fiji-ready files: ImageJ hyperstacks with the input's calibration; channels picked."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

import bioimgzoo
from bioimgzoo.cli import main

RNG = np.random.default_rng(3)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def pixel_size(t: tifffile.TiffFile) -> tuple[float, float]:
    page = t.pages.first
    (xn, xd), (yn, yd) = page.tags["XResolution"].value, page.tags["YResolution"].value
    return xd / xn, yd / yn


def test_2d_output_keeps_the_input_calibration(tiny_pkg, tmp_path):
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, RNG.random((40, 32), dtype=np.float32), imagej=True,
                     resolution=(1 / 0.325, 1 / 0.325), metadata={"unit": "um"})
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(tmp_path / "out" / "cells_out.tif") as t:
        assert t.is_imagej and t.series[0].axes == "YX" and t.series[0].shape == (40, 32)
        assert t.series[0].dtype == np.float32
        assert pixel_size(t) == pytest.approx((0.325, 0.325), rel=1e-5)
        assert t.imagej_metadata["unit"] == "um"


def test_czyx_input_gives_a_zcyx_hyperstack_with_channel_names(two_channel_pkg, tmp_path):
    src = tmp_path / "stack.ome.tif"
    x = RNG.random((2, 3, 24, 32), dtype=np.float32)
    tifffile.imwrite(src, x, ome=True, metadata={"axes": "CZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25,
                                                 "PhysicalSizeZ": 2.0})
    r = cli("predict", two_channel_pkg, src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(tmp_path / "out" / "stack_out.tif") as t:
        assert t.series[0].axes == "ZCYX" and t.series[0].shape == (3, 2, 24, 32)
        assert t.series[0].dtype == np.float32
        assert pixel_size(t) == pytest.approx((0.5, 0.25), rel=1e-5)
        meta = t.imagej_metadata
        assert meta["spacing"] == pytest.approx(2.0) and meta["unit"] == "um"
        assert meta["channels"] == 2 and meta["Labels"][:2] == ["c0", "c1"]
        got = t.series[0].asarray()
    # the right axis order: slice z of the output is the prediction of slice z of the input
    model = bioimgzoo.load(two_channel_pkg)
    np.testing.assert_allclose(got[1], model.predict(x[:, 1], axes="cyx"), atol=1e-5)


def test_tzyx_input_keeps_time_and_z(tiny_pkg, tmp_path):
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, RNG.random((2, 3, 16, 24), dtype=np.float32), imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "TZYX", "spacing": 1.5, "unit": "um", "finterval": 7.0})
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(tmp_path / "out" / "movie_out.tif") as t:
        assert t.series[0].axes == "TZYX" and t.series[0].shape == (2, 3, 16, 24)
        assert pixel_size(t) == pytest.approx((0.25, 0.25))
        assert t.imagej_metadata["spacing"] == pytest.approx(1.5)
        assert t.imagej_metadata["finterval"] == pytest.approx(7.0)


def test_ome_tiff_and_png_formats(tiny_pkg, tmp_path):
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, RNG.random((24, 24), dtype=np.float32), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um"})
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "ome", "--format", "ome-tiff")
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(tmp_path / "ome" / "img_out.ome.tif") as t:
        assert t.is_ome and t.series[0].axes == "YX"
        pixels = tifffile.xml2dict(t.ome_metadata)["OME"]["Image"]["Pixels"]
        assert pixels["PhysicalSizeX"] == pytest.approx(0.5) and pixels["PhysicalSizeXUnit"] == "µm"
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "png", "--format", "png")
    assert r.exit_code == 0, r.output
    assert "scaled to 0..255" in r.output
    png = iio.imread(tmp_path / "png" / "img_out.png")
    assert png.dtype == np.uint8 and png.shape == (24, 24)


@pytest.fixture
def rgb(tmp_path):
    """The same RGB picture as a PNG and as a 3-channel TIFF."""
    pixels = (RNG.random((24, 32, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "rgb.png", pixels)
    tifffile.imwrite(tmp_path / "three.tif", np.moveaxis(pixels, -1, 0), metadata={"axes": "CYX"})
    return pixels


@pytest.mark.parametrize("name", ["rgb.png", "three.tif"])
def test_channel_and_rgb_options(tiny_pkg, tmp_path, rgb, name):
    model = bioimgzoo.load(tiny_pkg)
    src = tmp_path / name
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "plain")
    assert r.exit_code == 1 and name in r.output and "--channel" in r.output and "--rgb" in r.output
    stem = name.split(".")[0]
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "green", "--channel", "1")
    assert r.exit_code == 0, r.output
    expect_green = model.predict(rgb[..., 1].astype(np.float32), axes="yx")[0]
    assert not np.allclose(expect_green, model.predict(rgb[..., 0].astype(np.float32), axes="yx")[0])
    np.testing.assert_allclose(tifffile.imread(tmp_path / "green" / f"{stem}_out.tif"), expect_green, atol=1e-5)
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "green2", "--rgb", "green")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(tifffile.imread(tmp_path / "green2" / f"{stem}_out.tif"), expect_green, atol=1e-5)
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "lum", "--rgb", "luminance")
    assert r.exit_code == 0, r.output
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "lum" / f"{stem}_out.tif"),
                               model.predict(lum, axes="yx")[0], atol=1e-4)
    r = cli("predict", tiny_pkg, src, "-o", tmp_path / "bad", "--channel", "5")
    assert r.exit_code == 1 and "has 3 channels" in r.output and name in r.output


def test_api_channels(two_channel_pkg):
    model = bioimgzoo.load(two_channel_pkg)
    x = RNG.random((3, 16, 16), dtype=np.float32)
    picked = model.predict(x, axes="cyx", channels=[2, 0])
    np.testing.assert_allclose(picked, model.predict(x[[2, 0]], axes="cyx"), atol=1e-6)
    with pytest.raises(bioimgzoo.errors.InputError, match="pass axes= too"):
        model.predict(x, channels=[0, 1])
    with pytest.raises(bioimgzoo.errors.InputError, match="image 2: the image has 2 channels .* asks for 2"):
        model.predict([x, x[:2]], axes="cyx", channels=[0, 2])


@pytest.fixture(scope="module")
def upsampling_pkg(tmp_path_factory):
    """Output at twice the input's resolution (output axis scale 0.5)."""
    T = pytest.importorskip("bioimgzoo.testing")
    x = RNG.random((1, 1, 16, 16), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("up"), T.Upsample2x(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("up", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, scale={"y": 0.5, "x": 0.5})],
        formats=("onnx",))


def test_output_pixel_size_follows_the_models_scale(upsampling_pkg, tmp_path):
    src = tmp_path / "low.tif"
    tifffile.imwrite(src, RNG.random((16, 24), dtype=np.float32), imagej=True, resolution=(1.0, 1.0),
                     metadata={"unit": "um"})
    r = cli("predict", upsampling_pkg, src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(tmp_path / "out" / "low_up.tif") as t:
        assert t.series[0].shape == (32, 48)
        assert pixel_size(t) == pytest.approx((0.5, 0.5))  # twice the pixels over the same field
