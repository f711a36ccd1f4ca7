"""Cover images: input beside output, 2:1, contrast-stretched; channels, 3D and class scores handled."""

from __future__ import annotations

import numpy as np
import pytest

from bioimgzoo.exporter._covers import make_cover, to_rgb

iio = pytest.importorskip("imageio.v3")
RNG = np.random.default_rng(0)


def test_two_by_one_png(tmp_path):
    x = RNG.random((1, 1, 40, 80)).astype(np.float32) * 1000
    y = RNG.random((1, 2, 40, 80)).astype(np.float32)
    img = iio.imread(make_cover(x, "bcyx", y, "bcyx", tmp_path / "c.png"))
    assert img.shape == (256, 512, 3) and img.dtype == np.uint8
    assert img[..., :256, :].max() == 255  # stretched: the brightest input pixel is white


def test_contrast_stretch_ignores_outliers():
    x = np.zeros((1, 1, 20, 20), np.float32)
    x[0, 0, :10] = 1.0
    x[0, 0, 0, 0] = 1e6  # one hot pixel must not make the image black
    rgb = to_rgb(x, "bcyx")
    assert rgb[15, 15, 0] == 0 and rgb[5, 5, 0] == pytest.approx(1.0)


def test_two_channels_are_green_and_magenta():
    x = np.zeros((2, 8, 8), np.float32)
    x[0, :, :4] = 1
    x[1, :, 4:] = 1
    rgb = to_rgb(x, "cyx")
    assert tuple(rgb[0, 0]) == (0, 1, 0) and tuple(rgb[0, 7]) == (1, 0, 1)


def test_3d_takes_the_middle_slice():
    x = np.zeros((1, 1, 5, 8, 8), np.float32)
    x[0, 0, 2, 4, 4] = 1
    x[0, 0, 2, 0, 0] = 0.5
    rgb = to_rgb(x, "bczyx")
    assert rgb.shape == (8, 8, 3) and rgb[4, 4, 0] == pytest.approx(1.0)


def test_class_scores_become_bars(tmp_path):
    x = RNG.random((1, 1, 32, 32)).astype(np.float32)
    scores = np.array([[0.1, 2.0, 0.5]], np.float32)
    assert to_rgb(scores, "bc") is None
    img = iio.imread(make_cover(x, "bcyx", scores, "bc", tmp_path / "c.png"))
    right = img[:, 256:]
    # the winning class (middle third) has the tallest, highlighted bar
    col_best, col_other = right[:, 128], right[:, 30]
    assert (col_best.sum(axis=1) > 100).sum() > (col_other.sum(axis=1) > 100).sum()
