"""Corrupt zarr inputs end in one message, never a traceback (issue 20).

Stores are written here by hand (metadata JSON and chunk files), as a broken
converter, a truncated copy or a hostile sender would leave them: chunks of
size 0 or of the wrong rank, chunk files of the wrong size, record and
date types, empty arrays, pyramid levels that point outside the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bioimgzoo.errors import InputError
from bioimgzoo.io.zarr import open_image

from ..runtime.test_streaming import same_conv  # noqa: F401 (fixture: a tiny onnx package)


def v2_array(path: Path, **meta) -> Path:
    path.mkdir(parents=True)
    m = {"zarr_format": 2, "shape": [64, 64], "chunks": [32, 32], "dtype": "<f4", "compressor": None,
         "fill_value": 0, "filters": None, "order": "C"}
    m.update(meta)
    (path / ".zarray").write_text(json.dumps(m))
    return path


def v3_array(path: Path, chunk_shape, data_type="float32") -> Path:
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps({
        "zarr_format": 3, "node_type": "array", "shape": [64, 64], "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk_shape}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}}, "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}))
    return path


def _corrupt_stores(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (store, words the one message must hold)."""
    out = {
        "zero chunks v2": (v2_array(tmp / "zero.zarr", chunks=[0, 0]), "chunks must have one size of at least 1"),
        "zero chunks v3": (v3_array(tmp / "zero3.zarr", [0, 32]), "chunks must have one size of at least 1"),
        "chunks of the wrong rank": (v2_array(tmp / "rank.zarr", chunks=[32]), "cannot open"),
        "negative chunks": (v2_array(tmp / "neg.zarr", chunks=[-1, 32]), "cannot open"),
        "record dtype": (v2_array(tmp / "rec.zarr", dtype=[["a", "<f4"], ["b", "<i4"]], fill_value=None),
                         "records of fields"),
        "date dtype": (v2_array(tmp / "date.zarr", dtype="<M8[s]", fill_value=None), "not numbers"),
        "object dtype": (v2_array(tmp / "obj.zarr", dtype="|O"), "cannot open"),
        "empty": (v2_array(tmp / "empty.zarr", shape=[0, 64]), "without pixels"),
    }
    short = v2_array(tmp / "short-chunk.zarr")
    (short / "0.0").write_bytes(b"\0" * 100)  # a chunk file of 25 values where 1024 belong
    out["chunk file of the wrong size"] = (short, "cannot be read")
    long = v2_array(tmp / "long-chunk.zarr")
    (long / "1.1").write_bytes(b"\0" * (4 * 1024 + 3))
    out["chunk file too long"] = (long, "cannot be read")
    garbage = v2_array(tmp / "garbage.zarr", compressor={"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1,
                                                          "blocksize": 0})
    (garbage / "0.1").write_bytes(b"not blosc at all")
    out["undecodable chunk"] = (garbage, "cannot be read")
    # an OME-Zarr whose pyramid level points outside the store
    ome = tmp / "escape.ome.zarr"
    ome.mkdir()
    (ome / ".zgroup").write_text('{"zarr_format": 2}')
    (ome / ".zattrs").write_text(json.dumps({"multiscales": [{"version": "0.4", "axes": [
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "../zero.zarr", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]}))
    out["level outside the store"] = (ome, "metadata")  # refused by the NGFF validation or by the key check
    return out


def test_corrupt_stores_are_one_message_from_the_cli(same_conv, tmp_path):
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    for name, (store, words) in _corrupt_stores(tmp_path).items():
        out = tmp_path / f"out-{store.name}.ome.zarr"
        r = CliRunner().invoke(main, ["predict", str(same_conv), str(store), "-o", str(out), "--axes", "yx",
                                      "--tile", "32"])
        assert r.exit_code == 1, (name, r.output)
        assert "Traceback" not in r.output and r.output.strip().startswith("Error:"), (name, r.output)
        assert words in r.output, (name, r.output)
        assert r.output.count("\n") <= 3, (name, r.output)
        assert not out.exists() or "multiscales" not in (out / ".zattrs").read_text(), name  # never a "result"


def test_corrupt_stores_are_input_errors_from_the_api(tmp_path):
    for name, (store, words) in _corrupt_stores(tmp_path).items():
        with pytest.raises(InputError) as info:
            img = open_image(store)
            img.read((slice(0, 64), slice(0, 64)))
        assert words in str(info.value), name


def test_a_zarr_array_object_with_damaged_chunks(same_conv, tmp_path):
    import zarr

    import bioimgzoo

    store = v2_array(tmp_path / "a.zarr")
    (store / "0.0").write_bytes(b"\0" * 10)
    array = zarr.open_array(str(store), mode="r")
    with pytest.raises(InputError, match="cannot be read"):
        bioimgzoo.load(same_conv).predict(array, axes="yx", tile=32, out=tmp_path / "o.ome.zarr")
    assert np.asarray(zarr.open_array(str(store), mode="r")[32:, 32:]).sum() == 0  # the rest reads fine
