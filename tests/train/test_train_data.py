"""Synthetic data generators and folder loading."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from bioimgzoo.errors import InputError
from bioimgzoo.train.data import load_folder, synthetic_noisy_pairs, synthetic_nuclei


def test_synthetic_nuclei_shapes_dtypes_and_content():
    images, labels = synthetic_nuclei(3, (80, 96), seed=1)
    assert images.shape == labels.shape == (3, 80, 96)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    for img, lab in zip(images, labels):
        ids = np.unique(lab)
        assert ids[0] == 0 and len(ids) > 5  # background plus several nuclei
        assert np.array_equal(ids, np.arange(len(ids)))  # consecutive instance ids
        # nuclei are brighter than the background on average
        assert img[lab > 0].mean() > img[lab == 0].mean() + 10


def test_synthetic_nuclei_deterministic_by_seed():
    a = synthetic_nuclei(2, (64, 64), seed=7)
    b = synthetic_nuclei(2, (64, 64), seed=7)
    c = synthetic_nuclei(2, (64, 64), seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_synthetic_nuclei_some_touch():
    # over several images, some nuclei share an edge (4-neighbours with two different labels)
    _, labels = synthetic_nuclei(4, (128, 128), seed=2, coverage=(0.35, 0.4))
    touching = 0
    for lab in labels:
        a, b = lab[:, :-1], lab[:, 1:]
        touching += int(((a > 0) & (b > 0) & (a != b)).sum())
    assert touching > 0


def test_synthetic_noisy_pairs():
    noisy, clean = synthetic_noisy_pairs(3, (64, 64), seed=0, sigma=0.1)
    assert noisy.shape == clean.shape == (3, 64, 64)
    assert noisy.dtype == clean.dtype == np.float32
    assert clean.min() >= 0 and clean.max() <= 1
    assert abs(float((noisy - clean).std()) - 0.1) < 0.01
    again = synthetic_noisy_pairs(3, (64, 64), seed=0, sigma=0.1)
    assert np.array_equal(noisy, again[0])


@pytest.mark.parametrize("bad", [dict(n=0), dict(shape=(4, 4))])
def test_generators_reject_bad_arguments(bad):
    kwargs = {"n": 1, "shape": (32, 32), **bad}
    with pytest.raises(InputError):
        synthetic_nuclei(kwargs["n"], kwargs["shape"], seed=0)


def test_load_folder_matches_by_stem(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "b.tif", np.ones((8, 9), np.float32))
    np.save(tmp_path / "img" / "a.npy", np.zeros((8, 9), np.float32))
    iio.imwrite(tmp_path / "lab" / "a.png", np.zeros((8, 9), np.uint8))
    tifffile.imwrite(tmp_path / "lab" / "b.tiff", np.full((8, 9), 2, np.uint16))
    images, labels, names = load_folder(tmp_path / "img", tmp_path / "lab")
    assert names == ["a", "b"]
    assert images[1].mean() == 1 and labels[1].max() == 2


def test_load_folder_errors_name_the_problem(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", np.ones((8, 8), np.float32))
    tifffile.imwrite(tmp_path / "lab" / "z.tif", np.ones((8, 8), np.uint8))
    with pytest.raises(InputError, match="no label image for a"):
        load_folder(tmp_path / "img", tmp_path / "lab")
    with pytest.raises(InputError, match="does not exist"):
        load_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_folder(tmp_path / "empty")
    tifffile.imwrite(tmp_path / "lab" / "a.tif", np.ones((9, 8), np.uint8))
    (tmp_path / "lab" / "z.tif").unlink()
    with pytest.raises(InputError, match="same height and width"):
        load_folder(tmp_path / "img", tmp_path / "lab")


def test_load_folder_reads_with_bioimgzoo_io_and_puts_rgb_channels_first(tmp_path):
    (tmp_path / "img").mkdir()
    iio.imwrite(tmp_path / "img" / "a.png", np.zeros((8, 9, 3), np.uint8))
    tifffile.imwrite(tmp_path / "img" / "b.tif", np.zeros((8, 9, 4), np.uint8), photometric="rgb",
                     extrasamples=["unassalpha"])
    np.save(tmp_path / "img" / "c.npy", np.zeros((2, 8, 9), np.float32))
    images, labels, names = load_folder(tmp_path / "img")
    assert names == ["a", "b", "c"] and labels is None
    assert [im.shape for im in images] == [(3, 8, 9), (3, 8, 9), (2, 8, 9)]
    (tmp_path / "img" / "d.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="d.tif"):
        load_folder(tmp_path / "img")
