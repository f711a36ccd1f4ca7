"""OME-Zarr and zarr in and out: metadata that validates and reopens, pyramids, labels, lazy TIFFs, bad paths."""

from __future__ import annotations

import numpy as np
import pytest

from bioimgzoo.errors import InputError
from bioimgzoo.io.zarr import OmeZarrWriter, open_image

RNG = np.random.default_rng(3)


def _write(path, ngff, *, label=True):
    w = OmeZarrWriter(path, ngff=ngff)
    data = RNG.random((1, 600, 530), dtype=np.float32)
    a = w.create("prob", shape=data.shape, dtype="float32", chunks=(1, 256, 256), shards=(1, 512, 512), axes="cyx",
                 scale=[1.0, 0.5, 0.25], units={"y": "micrometer", "x": "micrometer"})
    a[...] = data
    labels = (data > 0.5).astype(np.uint8)
    if label:
        b = w.create("mask", shape=data.shape, dtype="uint8", chunks=(1, 256, 256), shards=(1, 512, 512),
                     axes="cyx", scale=[1.0, 0.5, 0.25], label=True)
        b[...] = labels
    w.finish()
    return data, labels


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_ome_zarr_written_validates_reopens_and_keeps_scales(tmp_path, ngff):
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models import open_ome_zarr

    path = tmp_path / "out.ome.zarr"
    data, labels = _write(path, ngff)
    root = zarr.open_group(str(path), mode="r")
    open_ome_zarr(root, version=ngff)  # raises unless valid
    open_ome_zarr(root["labels/mask"], version=ngff)
    nodes = list(Reader(parse_url(str(path)))())
    assert len(nodes[0].data) == 3  # 600 -> 300 -> 150: halved while larger than 256
    assert any(type(s).__name__ == "Label" for n in nodes for s in n.specs)
    img = open_image(path)
    assert (img.axes, img.ngff, img.scale, img.units["x"]) == ("cyx", ngff, {"c": 1.0, "y": 0.5, "x": 0.25},
                                                                "micrometer")
    np.testing.assert_array_equal(img.read((slice(0, 1), slice(0, 600), slice(0, 530))), data)
    # level 1: 2x2 means (edge-padded at the odd edge) for intensities, every second pixel for labels
    lvl1 = open_image(path, level=1)
    assert lvl1.scale == {"c": 1.0, "y": 1.0, "x": 0.5}
    padded = np.pad(data, [(0, 0), (0, 0), (0, 0)])
    np.testing.assert_allclose(lvl1.read((slice(0, 1), slice(0, 300), slice(0, 265))),
                               padded.reshape(1, 300, 2, 265, 2).mean(axis=(2, 4)), rtol=1e-6)
    lab1 = open_image(path / "labels" / "mask", level=1)
    np.testing.assert_array_equal(lab1.read((slice(0, 1), slice(0, 300), slice(0, 265))), labels[:, ::2, ::2])
    arr = root["0"]
    if ngff == "0.4":
        assert arr.metadata.zarr_format == 2 and arr.metadata.dimension_separator == "/"
        assert arr.metadata.compressor.cname == "zstd"
    else:
        assert arr.metadata.zarr_format == 3 and list(arr.metadata.dimension_names) == ["c", "y", "x"]
        assert arr.shards == (1, 512, 512) and arr.chunks == (1, 256, 256)


def test_metadata_comes_last(tmp_path):
    path = tmp_path / "half.ome.zarr"
    w = OmeZarrWriter(path)
    w.create("prob", shape=(1, 64, 64), dtype="float32", chunks=(1, 32, 32), axes="cyx", scale=[1, 1, 1])
    with pytest.raises(InputError, match="without OME-Zarr image metadata"):
        open_image(path)  # an unfinished store is never taken for a result


def test_existing_output_is_refused_without_overwrite(tmp_path):
    path = tmp_path / "out.ome.zarr"
    _write(path, "0.4", label=False)
    with pytest.raises(InputError, match="exists: pass --overwrite"):
        OmeZarrWriter(path)
    OmeZarrWriter(path, overwrite=True)


def test_a_folder_that_is_not_zarr_is_one_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="not a zarr store"):
        open_image(tmp_path / "images")
    with pytest.raises(InputError, match="does not exist"):
        open_image(tmp_path / "missing.zarr")


def test_plain_zarr_array_and_dimension_names(tmp_path):
    import zarr

    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=(40, 50), chunks=(16, 16), dtype="uint16",
                          dimension_names=["y", "x"])
    z[...] = np.arange(2000, dtype=np.uint16).reshape(40, 50)
    img = open_image(tmp_path / "a.zarr")
    assert img.axes == "yx" and img.shape == (40, 50) and img.ngff is None
    np.testing.assert_array_equal(img.read((slice(3, 5), slice(0, 2))), [[150, 151], [200, 201]])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_is_read_lazily(tmp_path, compression):
    import pickle

    import tifffile

    data = RNG.integers(0, 4000, (3, 64, 96)).astype(np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, compression=compression, tile=(32, 32) if compression else None,
                     metadata={"axes": "ZYX"})
    img = open_image(path)
    assert img.axes == "zyx" and img.shape == data.shape
    assert type(img.array).__module__.startswith("zarr" if compression else "numpy")
    np.testing.assert_array_equal(img.read((1, slice(10, 20), slice(30, 90))), data[1, 10:20, 30:90])
    again = pickle.loads(pickle.dumps(img))  # a worker gets the path, not the pixels
    assert len(pickle.dumps(img)) < 2000
    np.testing.assert_array_equal(again.read((2, slice(0, 5), slice(0, 5))), data[2, :5, :5])
