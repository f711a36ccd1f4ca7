from __future__ import annotations

import zipfile

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.errors import PackageError, PackageNotFoundError
from bioimgzoo.package import FolderSource, ZipSource, open_package, resolve_source


def _zip_folder(folder, dest, prefix=""):
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, prefix + f.name)
    return dest


def test_open_folder_and_rdf_path(zoo_fixture):
    a = open_package(zoo_fixture)
    b = open_package(zoo_fixture / "rdf.yaml")
    assert a.name == b.name == "UNet 2D Nuclei Broad"
    assert isinstance(a.source, FolderSource)
    assert str(a.descr.inputs[0].id) == "raw"


def test_zip_package_extracts_only_what_is_used(zoo_fixture, tmp_path):
    z = _zip_folder(zoo_fixture, tmp_path / "model.zip")
    src = resolve_source(z)
    assert isinstance(src, ZipSource)
    model = bioimgzoo.load(z, weights="onnx")
    x = np.load(zoo_fixture / "test_input.npy")
    np.testing.assert_allclose(model.predict(x, axes="bcyx"), np.load(zoo_fixture / "test_output.npy"),
                               rtol=1e-3, atol=1e-3)
    # resolve_source made a second handle on the same zip: both extract into one place
    assert sorted(p.name for p in src._dir.rglob("*") if p.is_file()) == ["weights.onnx"]


def test_zip_with_top_level_folder(zoo_fixture, tmp_path):
    z = _zip_folder(zoo_fixture, tmp_path / "nested.zip", prefix="unet/")
    assert open_package(z).name == "UNet 2D Nuclei Broad"


def test_zip_slip_is_refused(zoo_fixture, tmp_path):
    text = (zoo_fixture / "rdf.yaml").read_text().replace("source: weights.onnx", "source: ../../evil.onnx")
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("rdf.yaml", text)
    pkg = open_package(z)
    with pytest.raises(PackageError, match="unsafe path"):
        pkg.file(pkg.descr.weights.onnx)
    assert not (tmp_path.parent / "evil.onnx").exists()


def test_not_a_package(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageNotFoundError, match="no rdf.yaml"):
        open_package(tmp_path / "empty")
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(PackageError):
        open_package(bad)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(PackageError, match="neither a zip package nor an rdf.yaml"):
        open_package(tmp_path / "notes.txt")


def test_missing_package_file(zoo_fixture, tmp_path):
    import shutil

    dst = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, dst)
    (dst / "weights.onnx").chmod(0o644)
    (dst / "weights.onnx").unlink()
    with pytest.raises(PackageError, match="'weights.onnx' .* is missing"):
        bioimgzoo.load(dst, weights="onnx")


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    from bioimgzoo._files import atomic_path

    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("hi")
    mode = (tmp_path / "x.txt").stat().st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "y.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
