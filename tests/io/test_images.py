"""Image files: calibration read from ImageJ/OME metadata, Fiji-ready TIFFs written, PNG scaling said."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bioimgzoo.errors import InputError
from bioimgzoo.io import Calibration, png_ready, read_calibration, read_image, write_image

RNG = np.random.default_rng(11)


def test_imagej_calibration_is_read(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 8, 9), np.uint16), imagej=True, resolution=(1 / 0.325, 1 / 0.5),
                     metadata={"axes": "TZYX", "spacing": 2.0, "unit": "micron", "finterval": 30.0})
    cal = read_calibration(path)
    assert cal.pixel_size == pytest.approx({"x": 0.325, "y": 0.5, "z": 2.0, "t": 30.0}, rel=1e-5)
    assert cal.unit == "um" and cal.time_unit == "s"


def test_ome_calibration_and_channel_names_are_read(tmp_path):
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 9), np.float32), ome=True,
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                               "Channel": {"Name": ["dapi", "gfp"]}})
    cal = read_calibration(path)
    assert cal.pixel_size == pytest.approx({"x": 0.2, "y": 0.2}) and cal.unit == "um"
    assert cal.channel_names == ("dapi", "gfp")


def test_no_calibration_without_metadata(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((8, 9), np.uint8))  # 1 pixel per inch-less unit: meaningless
    assert not read_calibration(path)
    np.save(tmp_path / "a.npy", np.zeros(3))
    assert not read_calibration(tmp_path / "a.npy")


@pytest.mark.parametrize("axes,shape,expect_axes", [
    ("yx", (8, 9), "YX"),
    ("cyx", (2, 8, 9), "CYX"),
    ("zcyx", (3, 2, 8, 9), "ZCYX"),
    ("czyx", (2, 3, 8, 9), "ZCYX"),  # reordered to ImageJ's TZCYX
    ("tzyx", (2, 3, 8, 9), "TZYX"),
    ("ztcyx", (3, 2, 2, 8, 9), "TZCYX"),
    (("batch", "channel", "y", "x"), (1, 2, 8, 9), "CYX"),  # a batch of one is dropped
])
def test_tiffs_are_imagej_hyperstacks_in_tzcyx_order(tmp_path, axes, shape, expect_axes):
    data = RNG.random(shape, dtype=np.float32)
    cal = Calibration({"x": 0.5, "y": 0.25, "z": 2.0, "t": 4.0}, "um", "s", ("a", "b"))
    path = write_image(tmp_path / "o.tif", data, axes=axes, calibration=cal)
    with tifffile.TiffFile(path) as t:
        assert t.is_imagej and t.series[0].axes == expect_axes
        got = t.series[0].asarray()
    letters = [a[0] if len(a) > 1 else a for a in axes]
    letters = "".join("" if a == "b" else a for a in letters)
    order = sorted(range(len(letters)), key=lambda i: "tzcyx".index(letters[i]))
    np.testing.assert_array_equal(got, np.transpose(data.reshape([n for n, a in zip(shape, axes) if a != "batch"]),
                                                    order))
    back = read_calibration(path)
    assert back.pixel_size["x"] == pytest.approx(0.5) and back.pixel_size["y"] == pytest.approx(0.25)
    if "z" in expect_axes:
        assert back.pixel_size["z"] == pytest.approx(2.0)
    if "C" in expect_axes:
        assert back.channel_names == ("a", "b")
    array, read_axes = read_image(path)
    assert read_axes == expect_axes.lower()


def test_types_imagej_cannot_hold(tmp_path):
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    with tifffile.TiffFile(write_image(tmp_path / "l.tif", labels, axes="yx")) as t:
        assert t.is_imagej and t.series[0].dtype == np.uint16  # labels up to 65535: exactly
    big = labels * 100000
    with tifffile.TiffFile(write_image(tmp_path / "b.tif", big, axes="yx")) as t:
        assert t.series[0].dtype == np.float32 and np.array_equal(t.series[0].asarray(), big)
    index = RNG.random((4, 3), dtype=np.float32)  # an index axis: no place in a hyperstack
    with tifffile.TiffFile(write_image(tmp_path / "i.tif", index, axes=("batch", "index"))) as t:
        assert not t.is_imagej and t.series[0].axes == "QI" and np.array_equal(t.series[0].asarray(), index)


def test_png_ready_scales_and_says_so():
    prob = RNG.random((8, 9)).astype(np.float32)
    out, how = png_ready(prob[None], ("channel", "y", "x"))
    assert out.dtype == np.uint8 and out.shape == (8, 9) and "0..1 scaled to 0..255" in how
    np.testing.assert_array_equal(out, np.round(prob * 255).astype(np.uint8))
    out, how = png_ready(np.array([[-2.0, 2.0]]), "yx")
    assert list(out[0]) == [0, 255] and "-2..2" in how
    out, how = png_ready(np.arange(6).reshape(2, 3) * 1000, "yx")
    assert out.dtype == np.uint16 and "kept" in how
    rgb, _ = png_ready(RNG.random((3, 4, 5)), "cyx")
    assert rgb.shape == (4, 5, 3)
    with pytest.raises(InputError, match="--format tif"):
        png_ready(RNG.random((2, 4, 5)), "cyx")
