"""Bad input ends in one clear error (API) or one message and exit 1 (CLI), never a partial file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import bioimgzoo
from bioimgzoo.cli import main
from bioimgzoo.errors import (
    BioimgzooError,
    IntegrityError,
    InputError,
    InvalidDescriptionError,
    PackageNotFoundError,
    WeightsError,
)


@pytest.fixture
def pkg_copy(zoo_fixture, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def cli(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result


def test_missing_source():
    with pytest.raises(PackageNotFoundError, match="does not exist"):
        bioimgzoo.load("./no/such/model")
    r = cli("info", "./no/such/model")
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output


def test_broken_yaml(pkg_copy):
    (pkg_copy / "rdf.yaml").write_text("name: [unclosed\n  weights: {")
    with pytest.raises(InvalidDescriptionError, match="not valid YAML"):
        bioimgzoo.load(pkg_copy)


def test_invalid_description_lists_fields(pkg_copy):
    text = (pkg_copy / "rdf.yaml").read_text().replace("type: model", "type: model\ninputs: 3", 1)
    (pkg_copy / "rdf.yaml").write_text(text.replace("\ninputs:\n", "\nold_inputs:\n", 1))
    with pytest.raises(InvalidDescriptionError, match="inputs"):
        bioimgzoo.load(pkg_copy)


def test_unknown_weight_format(zoo_fixture):
    with pytest.raises(WeightsError, match="unknown weight format 'tensorflow_js'"):
        bioimgzoo.load(zoo_fixture, weights="tensorflow_js")
    # TensorFlow weights are run (through ONNX); this package has none
    with pytest.raises(WeightsError, match="no tensorflow_saved_model_bundle weights; available: onnx, torchscript"):
        bioimgzoo.load(zoo_fixture, weights="tensorflow")
    with pytest.raises(WeightsError, match="no pytorch_state_dict weights"):
        bioimgzoo.load(zoo_fixture, weights="pytorch_state_dict")


def test_sha256_mismatch(pkg_copy, tmp_path):
    data = bytearray((pkg_copy / "weights.onnx").read_bytes())
    data[-10] ^= 0xFF
    (pkg_copy / "weights.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        bioimgzoo.load(pkg_copy, weights="onnx")
    np.save(tmp_path / "img.npy", np.zeros((512, 512), np.float32))
    r = cli("predict", pkg_copy, tmp_path / "img.npy", "-o", tmp_path / "out", "--weights", "onnx")
    assert r.exit_code == 1 and "sha256 mismatch" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_corrupt_weights_without_sha(pkg_copy):
    (pkg_copy / "weights.pt").write_bytes(b"not a torchscript file")
    text = (pkg_copy / "rdf.yaml").read_text()
    text = text.replace("    sha256: a4b0659a1b48454588b12179855ad0a0c9b69ccaa89b8bb06e6271e8f60b02fe\n", "")
    (pkg_copy / "rdf.yaml").write_text(text)
    with pytest.raises(WeightsError, match="TorchScript"):
        bioimgzoo.load(pkg_copy, weights="torchscript")


def test_wrong_channels_axes_dtype(zoo_fixture):
    model = bioimgzoo.load(zoo_fixture)
    with pytest.raises(InputError, match=r"'raw' expects 1 channel .* has 3"):
        model.predict(np.zeros((3, 64, 64), np.float32), axes="cyx")
    with pytest.raises(InputError, match="axes"):
        model.predict(np.zeros((64, 64), np.float32), axes="zyx")
    with pytest.raises(InputError, match="not numeric"):
        model.predict(np.array([["a"]]))


def test_cli_bad_image_leaves_no_partial_output(zoo_fixture, tmp_path):
    good = tmp_path / "a.npy"
    np.save(good, np.random.rand(1, 512, 512).astype(np.float32))
    bad = tmp_path / "b.npy"
    np.save(bad, np.random.rand(3, 64, 64).astype(np.float32))
    out = tmp_path / "out"
    r = cli("predict", zoo_fixture, good, bad, "-o", out, "--axes", "cyx")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "channel" in r.output
    # the good image's output is complete; nothing half-written is left for the bad one
    assert sorted(p.name for p in out.iterdir()) == ["a_probability.npy", "bioimgzoo-results.csv"]
    assert np.load(out / "a_probability.npy").shape == (1, 512, 512)


def test_debug_shows_traceback(tmp_path):
    r = CliRunner().invoke(main, ["--debug", "info", str(tmp_path / "nothing")])
    assert r.exit_code != 0 and isinstance(r.exception, BioimgzooError)
