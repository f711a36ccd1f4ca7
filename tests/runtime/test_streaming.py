"""Streaming prediction: zarr in, OME-Zarr out, equal to the in-memory prediction; resume; clusters; bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bioimageio.spec.model import v0_5 as s

import bioimgzoo
import bioimgzoo.testing as T
from bioimgzoo.errors import InputError
from bioimgzoo.io.zarr import OmeZarrWriter, open_image

from .test_fixed_size import arch, careamics_package  # noqa: F401 (fixtures: a CAREamics-style package)

RNG = np.random.default_rng(11)


def zmuv(*axes):
    return s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId(a) for a in axes]))


@pytest.fixture(scope="module")
def same_conv(tmp_path_factory):
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("same"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x, processing=[zmuv("y", "x")])],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4},
                             processing=[s.SigmoidDescr()])], formats=("onnx",))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """Integer output (binarized): written as an NGFF label image."""
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    post = [s.BinarizeDescr(kwargs=s.BinarizeKwargs(threshold=0.0)),
            s.EnsureDtypeDescr(kwargs=s.EnsureDtypeKwargs(dtype="uint8"))]
    return T.write_package(
        tmp_path_factory.mktemp("seg"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x, processing=[zmuv("y", "x")])],
        outputs=[T.TensorDef("mask", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4},
                             processing=post)], formats=("onnx",))


def ome_input(path, data, axes, scale, ngff="0.4"):
    w = OmeZarrWriter(path, ngff=ngff)
    a = w.create("raw", shape=data.shape, dtype=data.dtype, chunks=[min(64, n) for n in data.shape], axes=axes,
                 scale=scale, units={a: "micrometer" for a in axes if a in "zyx"})
    a[...] = data
    w.finish()
    return path


@pytest.mark.parametrize("work_unit", [32, 48])
def test_streamed_output_equals_in_memory(same_conv, tmp_path, work_unit):
    import zarr

    model = bioimgzoo.load(same_conv)
    x = (RNG.random((100, 90), dtype=np.float32) * 200).astype(np.float32)
    src = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32), dtype="float32")
    src[...] = x
    ref = model.predict(x, axes="yx", tile=32)
    seen = []
    out = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=tmp_path / "o.ome.zarr",
                        work_unit=work_unit, on_unit=lambda k, u, c: seen.append(u.index))
    assert len(seen) == len(set(seen)) > 1
    assert np.abs(np.asarray(out[...]) - ref).max() <= 1e-5
    assert not (tmp_path / "o.ome.zarr" / ".bioimgzoo").exists()  # the record goes once the store is complete
    # no out=: a zarr array streams in, the output is stitched in memory
    assert np.abs(model.predict(src, axes="yx", tile=32, work_unit=work_unit) - ref).max() <= 1e-5


def test_shared_tiles_spilled_to_disk_give_the_same_output(same_conv, tmp_path, monkeypatch):
    """With no memory for shared tiles every kept tile waits on disk: same output, files gone after."""
    import zarr

    from bioimgzoo.runtime.executor import streaming

    spills = []
    close = streaming.SharedTiles.close

    def counting_close(self):
        spills.append(self.spilled)
        close(self)

    monkeypatch.setattr(streaming, "SHARED_TILE_BYTES", 0)
    monkeypatch.setattr(streaming.SharedTiles, "close", counting_close)
    model = bioimgzoo.load(same_conv)
    x = (RNG.random((100, 90), dtype=np.float32) * 200).astype(np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32), dtype="float32")[...] = x
    ref = model.predict(x, axes="yx", tile=32)
    out = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=tmp_path / "o.ome.zarr", work_unit=32)
    assert spills and spills[0] > 0  # tiles shared by units of the next row went to disk and came back
    assert np.abs(np.asarray(out[...]) - ref).max() <= 1e-5
    assert not (tmp_path / "o.ome.zarr" / ".bioimgzoo").exists()


@pytest.mark.parametrize("nan_policy", ["warn", "zero", "fail"])
def test_non_finite_inputs_stream_as_they_predict_in_memory(same_conv, tmp_path, nan_policy):
    """The screening rides on the statistics pass; with NaN/inf found, the statistics follow nan_policy."""
    import zarr

    model = bioimgzoo.load(same_conv)
    x = (RNG.random((100, 90), dtype=np.float32) * 200).astype(np.float32)
    x[3, 5], x[70, 80], x[40, 2] = np.nan, np.inf, -np.inf
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32), dtype="float32")[...] = x
    kw = dict(axes="yx", tile=32, nan_policy=nan_policy)
    if nan_policy == "fail":
        with pytest.raises(InputError, match="3 non-finite values"):
            model.predict(str(tmp_path / "in.zarr"), out=tmp_path / "o.ome.zarr", **kw)
        return
    ref = model.predict(x, **kw)
    out = np.asarray(model.predict(str(tmp_path / "in.zarr"), out=tmp_path / "o.ome.zarr", work_unit=32, **kw)[...])
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isfinite(ref).sum() > 0.5 * ref.size
    assert np.nanmax(np.abs(out - ref)) <= 1e-5


def test_shared_tiles_spill_what_is_needed_last():
    from bioimgzoo.runtime.executor.streaming import SharedTiles

    region = (slice(0, 2), slice(0, 2))
    part = lambda v: {"out": (region, np.full((2, 2), v, np.float32))}  # noqa: E731
    # tile 0 is used by units 0 and 1 (next), tile 1 by units 0 and 5 (later): the budget holds one of them
    tiles = SharedTiles({0: [0, 1], 1: [0, 5]}, budget=16)
    tiles[0] = part(0)
    tiles[1] = part(1)
    assert tiles.spilled == 1 and 1 in tiles._spilled and 0 in tiles._held
    np.testing.assert_array_equal(tiles[1]["out"][1], 1)  # read back from disk
    tiles.unit_done([0, 1])
    assert 0 in tiles and 1 in tiles
    tiles.unit_done([0])
    assert 0 not in tiles and 1 in tiles  # its last user is done: dropped
    folder = tiles._folder
    tiles.close()
    assert folder is not None and not folder.exists()


def test_streamed_statistics_equal_in_memory(same_conv):
    from bioimgzoo.runtime.executor import NumpySource
    from bioimgzoo.runtime.executor.statistics import streaming_sample_measures
    from bioimgzoo.runtime.processing import Measure, compute_sample_measures

    axes = {"raw": ("batch", "channel", "y", "x")}
    measures = [Measure("raw", "mean", ("y", "x")), Measure("raw", "std", ("y", "x")),
                Measure("raw", "quantile", ("y", "x"), 0.003), Measure("raw", "quantile", ("y", "x"), 0.998),
                Measure("raw", "quantile", ("channel", "y", "x"), 0.5, "sample", "inverted_cdf")]
    for x in (RNG.integers(0, 256, (1, 2, 123, 77)).astype(np.uint8),
              RNG.integers(0, 60000, (1, 2, 123, 77)).astype(np.uint16),
              RNG.normal(50, 9, (1, 2, 123, 77)).astype(np.float32)):
        ref = compute_sample_measures(measures, {"raw": x}, axes)
        got = streaming_sample_measures(measures, {"raw": NumpySource(x)}, axes, elements=3000)
        for m in measures:
            assert got[m].dtype == np.asarray(ref[m]).dtype and got[m].shape == np.asarray(ref[m]).shape
            if m.kind == "quantile":  # exact order statistics, for every type
                np.testing.assert_array_equal(got[m], ref[m])
            else:  # float64 for integers (rounding only); float32 data: float32 rounding of the in-memory sums
                np.testing.assert_allclose(got[m], ref[m], rtol=1e-12 if x.dtype.kind == "u" else 2e-6)


@pytest.mark.parametrize("shape,chunks", [((1, 2, 123, 77), (1, 1, 32, 16)), ((300, 5000), (64, 1024)),
                                          ((7, 9), (100, 100))])
def test_statistics_blocks_are_whole_chunks_covering_the_image_once(shape, chunks):
    from bioimgzoo.runtime.executor.statistics import iter_blocks

    seen = np.zeros(shape, np.int32)
    for block in iter_blocks(shape, elements=4096, chunks=chunks):
        seen[block] += 1
        for r, c, n in zip(block, chunks, shape):  # starts on a chunk edge, whole chunks but at the image's end
            assert r.start % min(c, n) == 0 and ((r.stop - r.start) % min(c, n) == 0 or r.stop == n)
    assert (seen == 1).all()


def test_streamed_statistics_of_a_chunked_source_equal_in_memory():
    from bioimgzoo.runtime.executor import NumpySource
    from bioimgzoo.runtime.executor.statistics import streaming_sample_measures
    from bioimgzoo.runtime.processing import Measure, compute_sample_measures

    class Chunked(NumpySource):
        chunks = (1, 1, 16, 32)

    axes = {"raw": ("batch", "channel", "y", "x")}
    measures = [Measure("raw", "mean", ("y", "x")), Measure("raw", "std", ("y", "x")),
                Measure("raw", "quantile", ("y", "x"), 0.01), Measure("raw", "quantile", ("y", "x"), 0.99)]
    x = RNG.integers(0, 60000, (1, 2, 123, 77)).astype(np.uint16)
    ref = compute_sample_measures(measures, {"raw": x}, axes)
    got = streaming_sample_measures(measures, {"raw": Chunked(x)}, axes, elements=3000)
    for m in measures:
        np.testing.assert_allclose(got[m], ref[m], rtol=1e-12)


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_ome_zarr_in_and_out_keeps_pixel_sizes_and_writes_labels(segmenter, tmp_path, ngff):
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models import open_ome_zarr

    model = bioimgzoo.load(segmenter)
    x = RNG.random((1, 300, 280), dtype=np.float32)
    src = ome_input(tmp_path / "in.ome.zarr", x, "cyx", [1.0, 0.65, 0.3], ngff=ngff)
    out = model.predict(src, out=tmp_path / "seg.ome.zarr", ngff=ngff, work_unit=128)
    ref = model.predict(x, axes="cyx")
    np.testing.assert_array_equal(np.asarray(out[...]), ref)
    root = zarr.open_group(str(tmp_path / "seg.ome.zarr"), mode="r")
    open_ome_zarr(root, version=ngff)
    open_ome_zarr(root["labels/mask"], version=ngff)
    label = open_image(tmp_path / "seg.ome.zarr" / "labels" / "mask")
    assert label.dtype == np.uint8 and label.scale == {"c": 1.0, "y": 0.65, "x": 0.3}
    assert label.units == {"y": "micrometer", "x": "micrometer"}
    np.testing.assert_array_equal(label.read((slice(0, 1), slice(0, 300), slice(0, 280))), ref)
    specs = [type(sp).__name__ for n in Reader(parse_url(str(tmp_path / "seg.ome.zarr")))() for sp in n.specs]
    assert "Multiscales" in specs and "Label" in specs


def test_3d_volume_streams_through_a_3d_model(tmp_path_factory, tmp_path):
    import zarr

    x = RNG.random((1, 1, 16, 24, 24), dtype=np.float32)
    rdf = T.write_package(
        tmp_path_factory.mktemp("3d"), T.Conv3d(),
        inputs=[T.TensorDef("raw", "bczyx", sizes={"z": (8, 4), "y": (8, 8), "x": (8, 8)}, test=x,
                            processing=[zmuv("z", "y", "x")])],
        outputs=[T.TensorDef("out", "bczyx", refs={a: ("raw", a) for a in "zyx"}, halo={a: 1 for a in "zyx"})],
        formats=("onnx",))
    model = bioimgzoo.load(rdf)
    vol = RNG.random((40, 36, 44), dtype=np.float32)
    z = zarr.create_array(str(tmp_path / "vol.zarr"), shape=vol.shape, chunks=(16, 16, 16), dtype="float32",
                          dimension_names=["z", "y", "x"])
    z[...] = vol
    ref = model.predict(vol, axes="zyx", tile=16)
    out = model.predict(str(tmp_path / "vol.zarr"), tile=16, out=tmp_path / "v.ome.zarr", work_unit=16)
    assert out.shape == (1, 40, 36, 44)
    assert np.abs(np.asarray(out[...]) - ref).max() <= 1e-5


def test_axes_the_model_cannot_take_are_one_clear_error(same_conv, tmp_path):
    model = bioimgzoo.load(same_conv)
    src = ome_input(tmp_path / "rgb.ome.zarr", RNG.random((3, 40, 40), dtype=np.float32), "cyx", [1, 1, 1])
    with pytest.raises(InputError, match="expects 1 channel"):
        model.predict(src, out=tmp_path / "o.ome.zarr")
    assert not (tmp_path / "o.ome.zarr").exists()
    with pytest.raises(InputError, match="not a zarr store"):
        (tmp_path / "plain").mkdir()
        model.predict(tmp_path / "plain", out=tmp_path / "o.ome.zarr")


_KILL_SCRIPT = """
import os, signal, sys, bioimgzoo
model = bioimgzoo.load(sys.argv[1])
done = []
def on_unit(k, u, computed):
    done.append(u.index)
    if len(done) == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # halfway, mid-run: the writer may be inside the next unit
model.predict(sys.argv[2], axes="yx", tile=32, out=sys.argv[3], work_unit=32, on_unit=on_unit)
"""


def test_a_killed_run_resumes_to_the_same_output_recomputing_only_unfinished_units(same_conv, tmp_path):
    import zarr

    model = bioimgzoo.load(same_conv)
    x = RNG.random((160, 128), dtype=np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32), dtype="float32")[...] = x
    full = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=tmp_path / "full.ome.zarr",
                         work_unit=32)
    killed = tmp_path / "killed.ome.zarr"
    res = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(same_conv), str(tmp_path / "in.zarr"),
                          str(killed)], capture_output=True, text=True, timeout=300)
    assert res.returncode == -9, res.stderr[-2000:]
    lines = (killed / ".bioimgzoo" / "done").read_text().splitlines()
    finished = {int(line.split()[2]) for line in lines[1:] if line.startswith("unit 0 ")}
    assert len(finished) >= 3
    with pytest.raises(InputError, match="without OME-Zarr image metadata"):
        open_image(killed)  # never mistaken for a result
    with pytest.raises(InputError, match="exists: pass --overwrite"):
        model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=killed, work_unit=32)
    with pytest.raises(InputError, match="other settings"):
        model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=killed, work_unit=64, resume=True)
    computed = []
    out = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=killed, work_unit=32, resume=True,
                        on_unit=lambda k, u, c: computed.append(u.index) if c else None)
    assert set(computed) & finished == set() and len(computed) == 20 - len(finished)
    np.testing.assert_array_equal(np.asarray(out[...]), np.asarray(full[...]))


def test_cli_tiff_in_ome_zarr_out_and_existing_output(same_conv, tmp_path):
    import tifffile
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    x = RNG.random((70, 90), dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tif", x, metadata={"axes": "YX"})
    out = tmp_path / "a.ome.zarr"
    r = CliRunner().invoke(main, ["predict", str(same_conv), str(tmp_path / "a.tif"), "-o", str(out), "--ngff", "0.5"])
    assert r.exit_code == 0, r.output
    assert "computed 1 work unit" in r.output
    ref = bioimgzoo.load(same_conv).predict(x, axes="yx")
    np.testing.assert_allclose(open_image(out).read((slice(0, 1), slice(0, 70), slice(0, 90))), ref, atol=1e-5)
    r = CliRunner().invoke(main, ["predict", str(same_conv), str(tmp_path / "a.tif"), "-o", str(out)])
    assert r.exit_code == 1 and "exists: pass --overwrite" in r.output and "Traceback" not in r.output
    (tmp_path / "notzarr").mkdir()
    r = CliRunner().invoke(main, ["predict", str(same_conv), str(tmp_path / "notzarr"), "-o",
                                  str(tmp_path / "b.ome.zarr")])
    assert r.exit_code == 1 and "not a zarr store" in r.output


@pytest.mark.slow
@pytest.mark.parametrize("n_workers,work_unit", [(1, 48), (2, 32), (3, 48)])
def test_cluster_output_equals_in_memory(same_conv, tmp_path, n_workers, work_unit):
    import zarr
    from distributed import Client, LocalCluster

    model = bioimgzoo.load(same_conv)
    x = RNG.random((100, 90), dtype=np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32), dtype="float32")[...] = x
    ref = model.predict(x, axes="yx", tile=32)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=tmp_path / "o.ome.zarr",
                            work_unit=work_unit, scheduler=client)
        assert np.abs(np.asarray(out[...]) - ref).max() <= 1e-5


_WORKER_DIES = """
import os, sys, threading, bioimgzoo, numpy as np
from distributed import Client, LocalCluster
if __name__ == "__main__":
    model = bioimgzoo.load(sys.argv[1])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        killed = []
        def on_unit(k, u, computed):
            if not killed:  # one worker process dies mid-run (SIGKILL): its units are run again elsewhere
                killed.append(pids[0])
                os.kill(pids[0], 9)
        out = model.predict(sys.argv[2], axes="yx", tile=32, out=sys.argv[3], work_unit=32, scheduler=client,
                            on_unit=on_unit)
        print("OK", out.shape, killed and "killed")
"""


@pytest.mark.slow
def test_real_worker_processes_and_a_worker_that_dies(same_conv, tmp_path):
    import zarr

    model = bioimgzoo.load(same_conv)
    x = RNG.random((160, 128), dtype=np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32), dtype="float32")[...] = x
    ref = model.predict(x, axes="yx", tile=32)
    script = tmp_path / "dies.py"
    script.write_text(_WORKER_DIES)
    res = subprocess.run([sys.executable, str(script), str(same_conv), str(tmp_path / "in.zarr"),
                          str(tmp_path / "o.ome.zarr")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "OK" in res.stdout and "killed" in res.stdout, res.stderr[-3000:]
    out = open_image(tmp_path / "o.ome.zarr")
    assert np.abs(out.read((slice(0, 1), slice(0, 160), slice(0, 128))) - ref).max() <= 1e-5


@pytest.mark.slow
def test_a_folder_of_small_images_through_the_cluster(same_conv, tmp_path):
    import tifffile
    from distributed import Client, LocalCluster

    from bioimgzoo.runtime.executor.distributed import predict_files

    model = bioimgzoo.load(same_conv)
    images = [RNG.random((40 + 8 * i, 48), dtype=np.float32) for i in range(6)]
    files = []
    for i, x in enumerate(images):
        files.append(tmp_path / f"im{i}.tif")
        tifffile.imwrite(files[-1], x, metadata={"axes": "YX"})
    dests = [str(tmp_path / "out" / f"im{i}_{{output}}.tif") for i in range(6)]
    finished = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        written = predict_files(model, files, dests, scheduler=client, on_done=lambda f, w: finished.append(f))
    assert sorted(finished) == sorted(map(str, files))
    for x, w in zip(images, written):
        np.testing.assert_allclose(tifffile.imread(w), model.predict(x, axes="yx")[0], atol=1e-6)  # c=1 squeezed


def _lost_once(key, path, dest, options):
    """Stands in for the worker's file task: the first try of im1 dies with its worker."""
    from pathlib import Path

    from distributed.scheduler import KilledWorker

    from bioimgzoo.runtime.executor import distributed as d

    marker = Path(path + ".lost")
    if path.endswith("im1.tif") and not marker.exists():
        marker.touch()
        from types import SimpleNamespace

        raise KilledWorker(f"bioimgzoo-file-{path}", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    if path.endswith("im2.tif"):
        raise ValueError("this file's own error")
    return d._predict_file_impl(key, path, dest, options)


def test_a_file_lost_with_its_worker_is_run_again_but_a_failing_file_is_not(same_conv, tmp_path, monkeypatch):
    import tifffile
    from distributed import Client, LocalCluster

    from bioimgzoo.runtime.executor import distributed as d

    model = bioimgzoo.load(same_conv)
    files = []
    for i in range(3):
        files.append(tmp_path / f"im{i}.tif")
        tifffile.imwrite(files[-1], RNG.random((40, 48), dtype=np.float32), metadata={"axes": "YX"})
    dests = [str(tmp_path / "out" / f"im{i}_{{output}}.tif") for i in range(3)]
    monkeypatch.setattr(d, "_predict_file_impl", d._predict_file, raising=False)
    monkeypatch.setattr(d, "_predict_file", _lost_once)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        written = d.predict_files(model, files[:2], dests[:2], scheduler=client)
        assert (tmp_path / "im1.tif.lost").exists() and all(Path(w).is_file() for w in written)
        with pytest.raises(InputError, match="im2.tif failed on the cluster: ValueError: this file's own error"):
            d.predict_files(model, files, dests, scheduler=client)


def test_on_a_cluster_each_tile_runs_once_and_owned_boxes_partition_the_output(same_conv):
    from bioimgzoo.runtime.executor.distributed import owned_units
    from bioimgzoo.runtime.executor.units import plan_work_units
    from bioimgzoo.runtime.plan import plan_sample

    model = bioimgzoo.load(same_conv)
    plan = plan_sample(model.inputs, model.outputs, {"raw": (1, 1, 100, 90)}, tile=32)
    units = plan_work_units(plan, 48, output_axes={o.id: o.axis_ids for o in model.outputs})
    owned = owned_units(plan, units)
    tiles = [t for v in owned for t in v.tiles]
    assert sorted(tiles) == list(range(len(plan.tiles)))  # every tile once
    assert sum(len(u.tiles) for u in units) > len(plan.tiles)  # (units alone would run shared tiles twice)
    cover = np.zeros(plan.out_shapes["out"], int)
    for v in owned:
        if v.tiles:
            cover[v.writes["out"]] += 1
    assert (cover == 1).all()


def test_a_whole_sample_decoder_is_never_run_per_work_unit(tmp_path_factory, tmp_path):
    """custom (like stardist / cellpose) postprocessing: refused when streamed; raw_output streams the network's."""
    import zarr

    ops = tmp_path_factory.mktemp("ops") / "my_ops.py"
    ops.write_text("def scaled(factor=2.0):\n    return lambda x: x * factor\n")
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    custom = s.CustomProcessingDescr(source=ops, callable="scaled", kwargs={"factor": 3.0})
    pkg = T.write_package(
        tmp_path_factory.mktemp("decoder"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x)],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4},
                             processing=[custom])], formats=("onnx",))
    model = bioimgzoo.load(pkg, trust_code=True)
    image = RNG.random((96, 80), dtype=np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=image.shape, chunks=(32, 32), dtype="float32")[...] = image
    with pytest.raises(InputError, match=r"decodes the whole sample.*in memory.*raw_output=True"):
        model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=tmp_path / "o.ome.zarr", work_unit=32)
    assert not (tmp_path / "o.ome.zarr").exists()
    raw = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=32, out=tmp_path / "o.ome.zarr", work_unit=32,
                        raw_output=True)
    assert np.abs(3.0 * np.asarray(raw[...]) - model.predict(image, axes="yx", tile=32)).max() <= 1e-5


def test_tiff_pixel_sizes_reach_the_ome_zarr_output(same_conv, tmp_path):
    import tifffile

    image = RNG.random((80, 64), dtype=np.float32)
    tifffile.imwrite(tmp_path / "in.tif", image, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"unit": "um", "axes": "YX"})
    model = bioimgzoo.load(same_conv)
    model.predict(str(tmp_path / "in.tif"), tile=32, out=tmp_path / "o.ome.zarr", work_unit=32)
    out = open_image(tmp_path / "o.ome.zarr")
    assert (out.scale["y"], out.scale["x"]) == (0.5, 0.25)
    assert out.units["y"] == out.units["x"] == "micrometer"


@pytest.mark.slow
def test_a_fixed_size_package_streams_like_it_predicts_in_memory(careamics_package, tmp_path):
    """CAREamics-style (fixed 64x64, receptive field measured): streamed with the in-memory plan, same output."""
    import zarr

    model = bioimgzoo.load(careamics_package, trust_code=True)
    image = (np.random.default_rng(1).random((256, 192)) * 80 + 60).astype(np.float32)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=image.shape, chunks=(64, 64), dtype="float32")[...] = image
    for tile in (None, 128):  # the whole image in one window; tiles the declared 64x64 refuses, overlapped
        ref = model.predict(image, axes="yx", tile=tile)
        out = model.predict(str(tmp_path / "in.zarr"), axes="yx", tile=tile, out=tmp_path / f"o{tile}.ome.zarr",
                            work_unit=64)
        # outputs reach ~1e3 here: 1e-5 of that is float32 rounding (torch's kernels differ with the batch size)
        err = np.abs(np.asarray(out[...], np.float64) - ref).max() / np.abs(ref).max()
        assert err <= 1e-5


def test_a_unit_lost_with_its_worker_is_run_again_but_a_failing_unit_is_not():
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    from bioimgzoo.runtime.executor.distributed import _worker_lost

    assert _worker_lost(FutureCancelledError("bioimgzoo-assemble-x-0-1", "unknown"))
    assert _worker_lost(KilledWorker("bioimgzoo-compute-x-0-1", "tcp://127.0.0.1:1", 3))
    assert not _worker_lost(ValueError("the unit's own error"))
