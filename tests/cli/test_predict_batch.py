"""``bioimgzoo predict`` on batches: nothing lost, nothing overwritten, bad files named, the run goes on."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from bioimgzoo.cli import main

RNG = np.random.default_rng(7)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def manifest_rows(out, run="last"):
    """The rows of one run of the results CSV (every run keeps its rows): the last by default, or all."""
    with open(out / "bioimgzoo-results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if run == "all":
        return rows
    last = max(int(r["run"]) for r in rows) if run == "last" else run
    return [r for r in rows if int(r["run"]) == last]


def manifest(out):
    """Rows by "file name:status"."""
    return {os.path.basename(r["input"]) + ":" + r["status"]: r for r in manifest_rows(out)}


def image(path, shape=(24, 24), **meta):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, RNG.random(shape, dtype=np.float32), **meta)
    return path


def test_same_names_from_two_folders_give_two_outputs(tiny_pkg, tmp_path):
    a = image(tmp_path / "imgs" / "a" / "x.tif")
    b = image(tmp_path / "imgs" / "b" / "x.tif")
    out = tmp_path / "out"
    r = cli("predict", tiny_pkg, a, b, "-o", out)
    assert r.exit_code == 0, r.output
    got = {p.relative_to(out).as_posix() for p in out.rglob("*.tif")}
    assert got == {"a/x_out.tif", "b/x_out.tif"}
    # each output is its own input's prediction, not the other's
    assert not np.array_equal(tifffile.imread(out / "a" / "x_out.tif"), tifffile.imread(out / "b" / "x_out.tif"))
    rows = manifest_rows(out)
    assert sorted(r["outputs"] for r in rows) == [str(out / "a" / "x_out.tif"), str(out / "b" / "x_out.tif")]
    assert all(r["status"] == "done" and float(r["seconds"]) >= 0 for r in rows)


def test_names_that_would_still_collide_are_refused_before_writing(tiny_pkg, tmp_path):
    a = image(tmp_path / "imgs" / "x.tif")
    b = image(tmp_path / "imgs" / "x.tiff")
    out = tmp_path / "out"
    r = cli("predict", tiny_pkg, a, b, "-o", out)
    assert r.exit_code == 1 and "would both write" in r.output and "Traceback" not in r.output
    assert not any(out.iterdir())


def test_second_run_writes_nothing_without_overwrite(tiny_pkg, tmp_path):
    a = image(tmp_path / "a.tif")
    b = image(tmp_path / "b.tif")
    out = tmp_path / "out"
    assert cli("predict", tiny_pkg, a, "-o", out).exit_code == 0
    first = (out / "a_out.tif").stat().st_mtime_ns
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    time.sleep(0.01)
    r = cli("predict", tiny_pkg, a, b, "-o", out)
    assert r.exit_code == 1
    assert "already exist" in r.output and "a_out.tif" in r.output and "--overwrite" in r.output
    assert "--skip-existing" in r.output and "nothing was written" in r.output
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before  # not even b, nor the manifest
    # resume: only the image without results is predicted
    r = cli("predict", tiny_pkg, a, b, "-o", out, "--skip-existing")
    assert r.exit_code == 0, r.output
    assert (out / "a_out.tif").stat().st_mtime_ns == first and (out / "b_out.tif").is_file()
    assert "skipped 1" in r.output
    assert set(manifest(out)) == {"a.tif:skipped", "b.tif:done"}
    # the first run's record is kept beside it
    assert [(r["run"], os.path.basename(r["input"]), r["status"]) for r in manifest_rows(out, "all")] == \
        [("1", "a.tif", "done"), ("2", "a.tif", "skipped"), ("2", "b.tif", "done")]
    r = cli("predict", tiny_pkg, a, "-o", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (out / "a_out.tif").stat().st_mtime_ns != first


def test_bad_images_are_named_and_the_batch_goes_on(tiny_pkg, tmp_path):
    good1 = image(tmp_path / "imgs" / "good1.tif")
    corrupt = tmp_path / "imgs" / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00\x08\x00\x00\x00\x99")  # a TIFF header, then nothing: a truncated file
    wrong = image(tmp_path / "imgs" / "three_channels.tif", (3, 24, 24), metadata={"axes": "CYX"})
    good2 = image(tmp_path / "imgs" / "good2.tif")
    out = tmp_path / "out"
    r = cli("predict", tiny_pkg, good1, corrupt, wrong, good2, "-o", out)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert sorted(p.name for p in out.glob("*.tif")) == ["good1_out.tif", "good2_out.tif"]
    summary = r.output[r.output.index("2 of 4 image(s) failed"):]
    assert "corrupt.tif" in summary and "three_channels.tif" in summary
    # each error is printed once, with its reason (the summary names the files only)
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2 and r.output.count("cannot read") == 1
    assert "corrupt.tif" in errors[0] and "cannot read" in errors[0]
    assert "three_channels.tif" in errors[1] and "--channel" in errors[1] and "--rgb" in errors[1]
    rows = manifest(out)
    assert set(rows) == {"good1.tif:done", "corrupt.tif:failed", "three_channels.tif:failed", "good2.tif:done"}
    assert "3" in rows["three_channels.tif:failed"]["message"]


def test_invalid_axis_letters_are_refused_before_loading(tmp_path):
    a = image(tmp_path / "a.tif")
    r = cli("predict", tmp_path / "no-model-needed", a, "-o", tmp_path / "out", "--axes", "ab")
    assert r.exit_code == 1 and "--axes 'ab'" in r.output and "unknown axis 'a'" in r.output


def test_messages_name_cli_options(tiny_pkg, tmp_path):
    a = image(tmp_path / "a.tif")
    r = cli("predict", tiny_pkg, a, "-o", tmp_path / "out", "--batch-size", "0")
    assert r.exit_code == 1 and "--batch-size=0 is not valid" in r.output and "batch_size=" not in r.output
    r = cli("predict", tiny_pkg, a, "-o", tmp_path / "out2", "--axes", "zyx")
    assert r.exit_code == 1 and "axes=" not in r.output


def test_small_image_is_padded_with_a_warning(tiny_pkg, tmp_path):
    a = image(tmp_path / "small.tif", (10, 12))
    r = cli("predict", tiny_pkg, a, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "small.tif is smaller than the model's minimum" in r.output
    assert "y 10 -> 16 (+6)" in r.output and "x 12 -> 16 (+4)" in r.output
    assert tifffile.imread(tmp_path / "out" / "small_out.tif").shape == (10, 12)


def test_mistyped_folder_gets_both_readings_without_network(tmp_path, monkeypatch, zoo_fixture):
    from bioimgzoo.package import sources

    def no_network(*args, **kwargs):
        raise AssertionError("the zoo was asked about a mistyped local folder")

    monkeypatch.setitem(sources._RESOLVERS, "id", no_network)
    (tmp_path / "unet2d-nuclei-broad").symlink_to(zoo_fixture, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    r = cli("info", "unet2d-nuclei-brod")
    assert time.perf_counter() - t0 < 5
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "not a file or folder" in r.output and "zoo id" in r.output
    assert "did you mean unet2d-nuclei-broad?" in r.output


def test_unknown_name_mentions_both_readings(tmp_path, monkeypatch):
    from bioimgzoo.errors import ModelNotFoundError
    from bioimgzoo.package import sources

    def not_in_zoo(text, **kwargs):
        raise ModelNotFoundError(f"no model {text!r} on the test zoo")

    monkeypatch.setitem(sources._RESOLVERS, "id", not_in_zoo)
    monkeypatch.chdir(tmp_path)
    r = cli("info", "no-such-thing")
    assert r.exit_code == 1
    assert "neither an existing file or folder" in r.output and "no model 'no-such-thing'" in r.output


@pytest.mark.parametrize("content", ["truncated", "junk"])
def test_damaged_zip_says_damaged(tiny_pkg, tmp_path, content):
    import shutil

    whole = shutil.make_archive(str(tmp_path / "pkg"), "zip", tiny_pkg.parent)
    data = open(whole, "rb").read()
    bad = tmp_path / "model.zip"
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else os.urandom(500))
    r = cli("info", bad)
    assert r.exit_code == 1 and "damaged" in r.output and "re-download" in r.output
