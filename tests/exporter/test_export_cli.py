"""``bioimgzoo export``: from a module path + checkpoint, or from a model card."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bioimgzoo.cli import main
from bioimgzoo.testing import nets as N

torch = pytest.importorskip("torch")
HERE = Path(__file__).resolve().parent


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    net = N.UNet2d(depth=1)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": "some-trainer/1", "model": net.state_dict(), "step": 10}, ckpt)  # a training checkpoint
    example = tmp_path / "ex.npy"
    np.save(example, np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32))
    return net, ckpt, example


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_export_from_module_and_checkpoint(tmp_path, files):
    net, ckpt, example = files
    out = tmp_path / "cli.zip"
    code, text = _run(["export", "--module", "bioimgzoo.testing.nets:UNet2d", "--kwargs", '{"depth": 1}',
                       "--checkpoint", str(ckpt), "--example", str(example), "--axes", "bcyx",
                       "--name", "CLI UNet 2D", "--description", "Exported from the command line.",
                       "--author", "Test Author", "--weights", "torchscript,onnx",
                       "--postprocessing", '[{"id": "sigmoid"}]', "--out", str(out)])
    assert code == 0, text
    assert out.is_file()
    assert "min 10, step 2" in text or "step 2" in text  # probing is printed
    assert "DeepImageJ" in text and "ilastik" in text and "passed" in text  # each consumer tool's verdict
    assert "within" in text and "test_input.npy" in text  # checked tolerance and test tensors
    assert "WARNING: no --checkpoint" not in text
    # the exported network is the checkpoint's, not a fresh random one
    with zipfile.ZipFile(out) as zf:
        import io

        x = np.load(io.BytesIO(zf.read("test_input.npy")))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
    with torch.no_grad():
        ref = torch.sigmoid(net.eval()(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_export_from_card(tmp_path, files):
    net, ckpt, example = files
    shutil.copy(N.__file__, tmp_path / "my_nets.py")
    card = tmp_path / "card.yaml"
    card.write_text(
        "name: Card UNet 2D\n"
        "description: Exported from a model card.\n"
        "authors: [{name: Test Author, github_user: bioimageiobot}]\n"
        "tags: [fluorescence-light-microscopy, nuclei, unet, semantic-segmentation]\n"
        "cite: [{text: 'Ronneberger et al. 2015', doi: 10.1007/978-3-319-24574-4_28}]\n"
        "intended_use: tests\n"
        "validation: {metrics: {iou: 0.5}}\n"
        "export:\n"
        "  module: my_nets.py:UNet2d\n"
        "  kwargs: {depth: 1}\n"
        "  checkpoint: ckpt.pt\n"
        "  example: ex.npy\n"
        "  out: out/card.zip\n"
        "  weights: [pytorch_state_dict, onnx]\n")
    code, text = _run(["export", "--card", str(card), "--json"])
    assert code == 0, text
    import json

    report = json.loads(text)
    assert report["weights_formats"] == ["pytorch_state_dict", "onnx"]
    assert not [r for r in report["deepimagej"] if r["status"] == "failed"]
    out = tmp_path / "out" / "card.zip"
    with zipfile.ZipFile(out) as zf:
        # the class is taken from my_nets.py's source (the file is not run) and shipped on its own
        assert "architecture.py" in zf.namelist() and "my_nets.py" not in zf.namelist()
        assert "class UNet2d" in zf.read("architecture.py").decode()
        assert "| iou | 0.5 |" in zf.read("README.md").decode()


@pytest.mark.parametrize("args, message", [
    (["--module", "no.such.module:Net"], "cannot import"),
    (["--module", "bioimgzoo.testing.nets:Nope"], "has no 'Nope'"),
    (["--module", "bioimgzoo.testing.nets:UNet2d", "--kwargs", "{bad json"], "not valid JSON"),
    (["--module", "bioimgzoo.testing.nets:UNet2d", "--kwargs", '{"depth": 3}'], "does not fit"),
])
def test_errors_are_one_message(tmp_path, files, args, message):
    _, ckpt, example = files
    out = tmp_path / "x.zip"
    result = CliRunner().invoke(main, ["export", *args, "--checkpoint", str(ckpt), "--example", str(example),
                                       "--name", "Broken CLI", "--description", "d", "--author", "A",
                                       "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_missing_inputs_are_named(tmp_path):
    result = CliRunner().invoke(main, ["export", "--module", "bioimgzoo.testing.nets:UNet2d"])
    assert result.exit_code == 1 and "--example" in result.output


def test_no_checkpoint_warns_and_an_image_example_gets_batch_and_channel(tmp_path):
    import tifffile

    example = tmp_path / "plane.tif"
    tifffile.imwrite(example, np.random.default_rng(0).random((40, 40)).astype(np.float32))
    out = tmp_path / "random.zip"
    result = CliRunner().invoke(main, [
        "export", "--module", "bioimgzoo.testing.nets:SameConv", "--example", str(example), "--name",
        "Random same conv", "--description", "d", "--author", "Test Author", "--weights", "torchscript",
        "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "WARNING: no --checkpoint" in result.output and "random weights" in result.output
    assert "(1, 1, 40, 40) as bcyx (added batch and channel axes" in result.output
    assert out.is_file()


@pytest.mark.parametrize("shape, suffix, axes, want_shape, want_axes", [
    ((20, 30), ".png", None, (1, 1, 20, 30), "bcyx"),
    ((20, 30, 3), ".png", None, (1, 3, 20, 30), "bcyx"),
    ((5, 20, 30), ".tif", None, (1, 1, 5, 20, 30), "bczyx"),
    ((2, 20, 30), ".tif", "cyx", (1, 2, 20, 30), "bcyx"),
    ((1, 1, 20, 30), ".npy", None, (1, 1, 20, 30), "bcyx"),
])
def test_example_layout(shape, suffix, axes, want_shape, want_axes):
    from bioimgzoo.cli.export import _example_layout

    arr, got_axes, what = _example_layout(np.zeros(shape, np.float32), Path("ex" + suffix), axes)
    assert arr.shape == want_shape and got_axes == want_axes
    assert (what is None) == (shape == want_shape)


def test_authors_are_required_never_the_login_name(tmp_path, files):
    _, ckpt, example = files
    result = CliRunner().invoke(main, ["export", "--module", "bioimgzoo.testing.nets:UNet2d", "--kwargs",
                                       '{"depth": 1}', "--checkpoint", str(ckpt), "--example", str(example),
                                       "--name", "No authors", "--description", "d", "--out", str(tmp_path / "a.zip")])
    assert result.exit_code == 1 and "--author" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a.zip").exists()
