"""``bioimgzoo train segmentation|n2v`` and ``bioimgzoo finetune`` through click's CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("bioimgzoo.exporter._export", reason="the exporter is not written yet")

from bioimgzoo.cli import main  # noqa: E402
from bioimgzoo.package import open_package  # noqa: E402

TINY = ["--depth", "2", "--base", "4", "--patch", "64", "--batch-size", "2", "--eval-every", "2", "-q"]


@pytest.fixture
def folders(tmp_path, nuclei, noisy_pairs):
    images, labels = nuclei
    noisy, clean = noisy_pairs
    for name in ("img", "lab", "noisy", "clean"):
        (tmp_path / name).mkdir()
    for i in range(4):
        tifffile.imwrite(tmp_path / "img" / f"n{i}.tif", images[i])
        tifffile.imwrite(tmp_path / "lab" / f"n{i}.tif", labels[i])
        np.save(tmp_path / "noisy" / f"p{i}.npy", noisy[i])
        np.save(tmp_path / "clean" / f"p{i}.npy", clean[i])
    return tmp_path


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_train_segmentation_and_resume(folders):
    out = folders / "seg.zip"
    args = ["train", "segmentation", "--images", str(folders / "img"), "--labels", str(folders / "lab"),
            "--out", str(out), "--author", "Tester", "--maintainer", "Tester:bioimageiobot", *TINY]
    r = _run(args + ["--steps", "2"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and (folders / "seg.loss.png").is_file()
    assert (folders / "seg.checkpoints" / "last.pt").is_file()
    assert "validation" in r.output and f"wrote {out}" in r.output
    r = _run(args + ["--steps", "4", "--resume"])
    assert r.exit_code == 0, r.output
    assert "trained 4 steps" in r.output
    pkg = open_package(out)
    assert [a.name for a in pkg.descr.authors] == ["Tester"]
    assert [(m.name, m.github_user) for m in pkg.descr.maintainers] == [("Tester", "bioimageiobot")]
    assert "semantic-segmentation" in pkg.descr.tags  # the workflow tag from the task
    import re
    import zipfile

    readme = zipfile.ZipFile(out).read("README.md").decode()
    # units everywhere: the duration in hours and seconds, the patch in pixels
    assert re.search(r"training_duration\*\*: [0-9.e-]+ h \([0-9]+ s\)", readme), readme
    assert "patch_size**: 64 x 64 pixels" in readme and "training_batch_size**: 2 patches per step" in readme


def test_train_needs_authors_never_the_login_name(folders):
    import getpass

    out = folders / "seg.zip"
    r = CliRunner().invoke(main, ["train", "segmentation", "--images", str(folders / "img"), "--labels",
                                  str(folders / "lab"), "--out", str(out), "--steps", "1", *TINY])
    assert r.exit_code == 1 and "--author" in r.output and not out.exists()
    try:
        login = getpass.getuser()
    except Exception:  # no login name here: nothing more to check
        return
    assert f"'{login}'" not in r.output


def test_train_n2v_with_clean_images(folders):
    out = folders / "n2v.zip"
    r = _run(["train", "n2v", "--images", str(folders / "noisy"), "--clean", str(folders / "clean"),
              "--out", str(out), "--steps", "2", "--author", "Tester", "--name", "Tiny denoiser", *TINY])
    assert r.exit_code == 0, r.output
    assert "psnr" in r.output
    pkg = open_package(out)
    assert [p.id for p in pkg.descr.outputs[0].postprocessing if p.id != "ensure_dtype"] == ["scale_linear"]


def test_finetune_command(folders, exported_package):
    out = folders / "ft.zip"
    r = _run(["finetune", str(exported_package), "--images", str(folders / "img"), "--labels", str(folders / "lab"),
              "--out", str(out), "--steps", "2", "--patch", "64", "--batch-size", "2", "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "parent:" in r.output and "fine-tuned:" in r.output
    child, parent = open_package(out).descr, open_package(exported_package).descr
    assert str(child.parent.id) == "tiny-nuclei-test"
    assert [str(t.id) for t in child.inputs + child.outputs] == [str(t.id) for t in parent.inputs + parent.outputs]
    assert [a.name for a in child.authors] == [a.name for a in parent.authors]


@pytest.mark.parametrize("args, message", [
    (["train", "segmentation", "--images", "{img}", "--labels", "{missing}", "--out", "{out}"], "does not exist"),
    (["train", "segmentation", "--images", "{img}", "--labels", "{lab}", "--out", "{tmp}/m.tif"], "ending in .zip"),
    (["train", "segmentation", "--images", "{img}", "--labels", "{lab}", "--out", "{out}", "--patch", "60"],
     "multiple of 8"),
    (["train", "segmentation", "--images", "{img}", "--labels", "{lab}", "--out", "{out}", "--resume"],
     "no checkpoint"),
    (["finetune", "{tmp}/nothing.zip", "--images", "{img}", "--out", "{out}"], "does not exist"),
])
def test_errors_are_one_message_and_exit_1(folders, args, message):
    fmt = {"img": folders / "img", "lab": folders / "lab", "missing": folders / "missing", "out": folders / "m.zip",
           "tmp": folders}
    r = CliRunner().invoke(main, [a.format(**fmt) for a in args] + ["--author", "Tester"])
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert r.output.count("Error:") == 1
    assert not (folders / "m.zip").exists()
