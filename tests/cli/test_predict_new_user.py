"""What a new user trips over in ``bioimgzoo predict``: inputs that are outputs, z stacks, noisy batches,
options dropped silently, labels of an OME-Zarr output (issue 24, items 2 to 5)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from bioimgzoo.cli import main


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def disks(shape, centres, radius, value=0.95):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for cy, cx in centres:
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = value
    return out


def known_stack(n_slices=6, size=64):
    """A z stack of probabilities with known round objects: slice k holds k % 3 + 2 disks that never touch.

    Returns the stack and the number of objects per slice."""
    rng = np.random.default_rng(3)
    planes, counts = [], []
    for k in range(n_slices):
        n = k % 3 + 2
        centres = [(12 + 20 * (i // 3) + int(rng.integers(-2, 3)), 12 + 20 * (i % 3) + int(rng.integers(-2, 3)))
                   for i in range(n)]
        planes.append(disks((size, size), centres, 6))
        counts.append(n)
    return np.stack(planes), counts


# ------------------------------------------------------------------ 3. inputs are inputs
def test_globs_and_folders_never_pick_up_earlier_outputs(tiny_pkg, tmp_path):
    small = tmp_path / "small"
    for name in ("img_00", "img_01"):
        (small / "day1").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(small / "day1" / f"{name}.tif", np.random.default_rng(0).random((24, 24), np.float32))
    results = small / "results"
    glob = f"{small}/**/*.tif"
    r = cli("predict", tiny_pkg, glob, "-o", results)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in results.glob("*.tif")) == ["img_00_out.tif", "img_01_out.tif"]
    # the same command again (README style): the results folder is inside the glob, but is never input
    r = cli("predict", tiny_pkg, glob, "-o", results, "--overwrite")
    assert r.exit_code == 0, r.output
    assert "Left out 2 file(s) written by bioimgzoo (inside the output folder)" in r.output
    assert sorted(p.name for p in results.glob("*.tif")) == ["img_00_out.tif", "img_01_out.tif"]
    # outputs written beside the inputs (-o the input folder): recognised by bioimgzoo's own naming
    r = cli("predict", tiny_pkg, small / "day1", "-o", small / "day1")
    assert r.exit_code == 0, r.output
    r = cli("predict", tiny_pkg, small / "day1", "-o", small / "day1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert "named as its outputs" in r.output
    assert not list(small.rglob("*_out_out.tif"))
    # a file named on its own is taken as given: the user asked for it
    r = cli("predict", tiny_pkg, small / "day1" / "img_00_out.tif", "-o", tmp_path / "again")
    assert r.exit_code == 0 and (tmp_path / "again" / "img_00_out_out.tif").is_file()


# ------------------------------------------------------------------ 4. stacks
def test_z_stack_without_metadata_is_read_as_z_and_labelled_per_slice(identity_pkg, tmp_path):
    stack, counts = known_stack()
    tifffile.imwrite(tmp_path / "stack.tif", stack)  # no axis metadata: 6 x 64 x 64
    out = tmp_path / "out"
    r = cli("predict", identity_pkg, tmp_path / "stack.tif", "-o", out, "--labels")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "read as a z stack" in warnings[0] and "--axes" in warnings[0]
    labels = tifffile.imread(out / "stack_labels.tif")
    assert labels.shape == stack.shape
    # every object of every slice has a label of its own: counting the labels counts the objects
    assert len(np.unique(labels)) - 1 == sum(counts)
    assert [len(np.unique(p)) - 1 for p in labels] == counts
    # --axes says otherwise: the model's one channel cannot take 6, the message names --axes
    r = cli("predict", identity_pkg, tmp_path / "stack.tif", "-o", tmp_path / "o2", "--axes", "cyx")
    assert r.exit_code == 1 and "--axes" in r.output


def test_labels_3d_links_objects_across_z(identity_pkg, tmp_path):
    # three columns of disks through 5 slices: 15 objects per slice, 3 objects in 3D
    column = disks((64, 64), [(16, 16), (16, 44), (44, 30)], 7)
    stack = np.stack([column] * 5)
    tifffile.imwrite(tmp_path / "cols.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    r = cli("predict", identity_pkg, tmp_path / "cols.tif", "-o", tmp_path / "flat", "--labels")
    assert r.exit_code == 0, r.output
    assert len(np.unique(tifffile.imread(tmp_path / "flat" / "cols_labels.tif"))) - 1 == 15
    r = cli("predict", identity_pkg, tmp_path / "cols.tif", "-o", tmp_path / "deep", "--labels", "--labels-3d")
    assert r.exit_code == 0, r.output
    linked = tifffile.imread(tmp_path / "deep" / "cols_labels.tif")
    assert len(np.unique(linked)) - 1 == 3
    # without --labels it cannot apply: said before anything runs
    r = cli("predict", identity_pkg, tmp_path / "cols.tif", "-o", tmp_path / "none", "--labels-3d")
    assert r.exit_code == 1 and "add --labels" in r.output and not (tmp_path / "none").exists()


# ------------------------------------------------------------------ 5. quiet batches, visible work
def test_a_batch_of_30_small_images_prints_one_padding_warning(tiny_pkg, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(30):
        tifffile.imwrite(folder / f"img_{i:02d}.tif", np.random.default_rng(i).random((10, 12), np.float32))
    r = cli("predict", tiny_pkg, folder, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert r.output.count("smaller than the model's minimum") == 1
    assert "Warning (x30): the same warning for 30 images" in r.output
    # each image keeps its own warning in the record
    with open(tmp_path / "out" / "bioimgzoo-results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and all("padded along y 10 -> 16" in r["message"] for r in rows)


def test_a_failed_run_never_replaces_the_record_of_a_good_one(tiny_pkg, tmp_path):
    a = tmp_path / "a.tif"
    tifffile.imwrite(a, np.random.default_rng(0).random((24, 24), np.float32))
    out = tmp_path / "out"
    assert cli("predict", tiny_pkg, a, "-o", out).exit_code == 0
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00\x08\x00\x00\x00\x99")
    r = cli("predict", tiny_pkg, bad, "-o", out)
    assert r.exit_code == 1
    assert r.output.count("cannot read") == 1  # the error once, the summary names the file
    with open(out / "bioimgzoo-results.csv", newline="", encoding="utf-8") as f:
        rows = [(r["run"], r["input"].rsplit("/", 1)[-1], r["status"]) for r in csv.DictReader(f)]
    assert rows == [("1", "a.tif", "done"), ("2", "bad.tif", "failed")]


def test_labelling_reports_progress(identity_pkg, tmp_path, monkeypatch):
    from bioimgzoo.cli import _progress

    seen = []
    stage = _progress.BatchProgress.stage

    def recording(self, image, what):
        done = stage(self, image, what)

        def report(fraction):
            seen.append((what, fraction))
            done(fraction)
        return report

    monkeypatch.setattr(_progress.BatchProgress, "stage", recording)
    image = np.zeros((400, 400), np.float32)
    for i in range(12):
        image += disks((400, 400), [(30 + 30 * i, 30 + 30 * (i % 5))], 10)
    tifffile.imwrite(tmp_path / "many.tif", np.clip(image, 0, 1))
    r = cli("predict", identity_pkg, tmp_path / "many.tif", "-o", tmp_path / "out", "--labels")
    assert r.exit_code == 0, r.output
    fractions = [f for what, f in seen if what == "Labels"]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(what == "Writing" for what, _ in seen)


# ------------------------------------------------------------------ 2. nothing dropped silently
def test_labels_with_an_ome_zarr_output_write_an_ngff_label_image(identity_pkg, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    stack, counts = known_stack(4)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out.ome.zarr"
    r = cli("predict", identity_pkg, tmp_path / "stack.tif", "-o", out, "--labels")
    assert r.exit_code == 0, r.output
    assert "NGFF label image" in r.output
    # read back the way napari does: ome-zarr's reader finds the label image from the image
    nodes = list(Reader(parse_url(str(out)))())
    labels = [n for n in nodes if n.specs and any(isinstance(s, Label) for s in n.specs)]
    assert len(labels) == 1
    data = np.asarray(labels[0].data[0])
    assert data.shape == stack.shape and np.issubdtype(data.dtype, np.integer)
    assert [len(np.unique(p)) - 1 for p in data] == counts and len(np.unique(data)) - 1 == sum(counts)
    assert labels[0].metadata.get("name") == "instances"
    # --labels-3d in the store too: the objects of neighbouring slices are linked
    column = np.stack([disks((64, 64), [(20, 20), (40, 44)], 7)] * 3)
    tifffile.imwrite(tmp_path / "cols.tif", column, imagej=True, metadata={"axes": "ZYX"})
    r = cli("predict", identity_pkg, tmp_path / "cols.tif", "-o", tmp_path / "cols.ome.zarr", "--labels",
            "--labels-3d")
    assert r.exit_code == 0, r.output
    import zarr

    linked = zarr.open_group(str(tmp_path / "cols.ome.zarr"), mode="r")["labels/instances/0"][...]
    assert len(np.unique(linked)) - 1 == 2


def test_labels_too_big_for_memory_are_refused_before_running(identity_pkg, tmp_path, monkeypatch):
    from bioimgzoo.runtime import stored_labels

    tifffile.imwrite(tmp_path / "img.tif", np.zeros((64, 64), np.float32))
    monkeypatch.setattr(stored_labels, "memory_available", lambda: 64 * 64 * 10)  # a machine too small
    out = tmp_path / "out.ome.zarr"
    r = cli("predict", identity_pkg, tmp_path / "img.tif", "-o", out, "--labels")
    assert r.exit_code == 1 and "nothing was run" in r.output and "Traceback" not in r.output
    assert not out.exists()


@pytest.mark.parametrize("option", [["--channel", "0"], ["--format", "npy"], ["--skip-existing"],
                                    ["--threshold", "0.3"], ["--labels-3d"]])
def test_options_an_ome_zarr_output_cannot_take_are_refused_before_running(identity_pkg, tmp_path, option):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((32, 32), np.float32))
    out = tmp_path / "out.ome.zarr"
    r = cli("predict", identity_pkg, tmp_path / "img.tif", "-o", out, *option)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{option[0]} cannot apply to an OME-Zarr output: nothing was run" in r.output
    assert not out.exists()


def test_threshold_without_labels_is_refused(tiny_pkg, tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((24, 24), np.float32))
    r = cli("predict", tiny_pkg, tmp_path / "img.tif", "-o", tmp_path / "out", "--threshold", "0.3")
    assert r.exit_code == 1 and "--threshold 0.3 applies to --labels only" in r.output
