"""Hostile or odd inputs to the runtime (issue 8, items 6 and 8): each is harmless or ends in one message.

* float16 images predict like float32 ones (statistics were taken in float16: all NaN);
* NaN/inf pixels are counted and reported, ``nan_policy`` warn / fail / zero;
* API argument errors are :class:`InputError` naming the argument, never ValueError/TypeError;
* empty images, ``tile=10**9``, descriptions declaring sizes of 10**12, numpy MemoryError,
  a read-only or file-valued ``-o``: one clear error, and in the CLI exit 1, one message, no traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import bioimgzoo
from bioimgzoo import testing as T
from bioimgzoo.cli import main
from bioimgzoo.errors import InputError, LimitExceededError
from bioimgzoo.runtime import checks as checks_mod
from bioimgzoo.runtime import plan as plan_mod
from bioimgzoo.runtime.executor import memory as executor_mod
from bioimgzoo.runtime import processing

s = pytest.importorskip("bioimageio.spec.model.v0_5")
RNG = np.random.default_rng(8)


# ----------------------------------------------------------------------------- helpers
def cli(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def assert_one_message(result, *fragments: str) -> None:
    """Exit 1, exactly one ``Error:`` line holding every fragment, and no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for f in fragments:
        assert f in errors[0], (f, errors[0])


def copy_package(src, dst, *replacements: tuple[str, str]):
    """A writable copy of a package folder with text replaced in its rdf.yaml (each must occur)."""
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    rdf = dst / "rdf.yaml"
    text = rdf.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    rdf.write_text(text)
    return dst


@pytest.fixture(scope="module")
def fixture_model(zoo_fixture):
    """unet2d-nuclei-broad: fixed 512x512, zero_mean_unit_variance over (y, x)."""
    return bioimgzoo.load(zoo_fixture, weights="onnx")


@pytest.fixture(scope="module")
def fixture_image(zoo_fixture):
    return np.load(zoo_fixture / "test_input.npy")[0, 0]  # 512x512 float32, values 122..4095


@pytest.fixture(scope="module")
def scale_range_pkg(tmp_path_factory):
    """A parametrized model (32 + k*16) with scale_range preprocessing: tiles of any valid size."""
    sr = s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(axes=[s.AxisId("y"), s.AxisId("x")], min_percentile=1.0,
                                                     max_percentile=99.0))
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("sr"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x, processing=[sr])],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4})],
        formats=("onnx",))


@pytest.fixture(scope="module")
def sr_model(scale_range_pkg):
    return bioimgzoo.load(scale_range_pkg)


def with_bad_pixels(x: np.ndarray, n_nan: int = 3, n_inf: int = 2) -> np.ndarray:
    y = x.astype(np.float32, copy=True)
    flat = y.reshape(-1)
    idx = RNG.choice(flat.size, n_nan + n_inf, replace=False)
    flat[idx[:n_nan]] = np.nan
    flat[idx[n_nan:n_nan + 1]] = np.inf
    flat[idx[n_nan + 1:]] = -np.inf
    return y


# ------------------------------------------------------------------------ 1. float16
def test_float16_image_predicts_like_float32(fixture_model, fixture_image):
    x16 = fixture_image.astype(np.float16)
    out16 = fixture_model.predict(x16)
    assert np.isfinite(out16).all()  # was all NaN: the variance was summed in float16
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, fixture_model.predict(x16.astype(np.float32)), atol=1e-3, rtol=0)
    # and the float32 original (float16 rounds the pixels themselves a little)
    np.testing.assert_allclose(out16, fixture_model.predict(fixture_image), atol=1e-3, rtol=0)


def test_float16_xarray_tiled_and_scale_range(sr_model, monkeypatch):
    import xarray as xr

    seen = []
    real = processing.compute_sample_measures
    monkeypatch.setattr(processing, "compute_sample_measures",
                        lambda ms, tensors, *a, **k: seen.append(tensors["raw"].dtype) or real(ms, tensors, *a, **k))
    x = (RNG.random((96, 80)) * 3000 + 100).astype(np.float16)
    ref = sr_model.predict(x.astype(np.float32))
    out = sr_model.predict(xr.DataArray(x, dims=("y", "x")), tile=48)
    assert seen == [np.float32, np.float32]  # the statistics never see float16
    np.testing.assert_allclose(out.values, ref, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------ 2. NaN / inf
def test_nan_warn_counts_and_keeps_statistics_finite(fixture_model, fixture_image, caplog):
    bad = with_bad_pixels(fixture_image)
    with caplog.at_level(logging.WARNING, logger="bioimgzoo"):
        out = fixture_model.predict(bad)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "input 'raw'" in warnings[0] and "5 non-finite values (3 NaN, 2 inf)" in warnings[0]
    assert "nan_policy" in warnings[0]
    # statistics over the finite values: only what the bad pixels reach (the U-Net's receptive field,
    # ~90 pixels wide around each) is lost, not the whole image as before
    finite = np.isfinite(out)
    assert finite.mean() > 0.5, finite.mean()
    clean = fixture_model.predict(fixture_image)
    np.testing.assert_allclose(out[finite], clean[finite], atol=1e-3, rtol=0)


def test_clean_and_integer_images_do_not_warn(fixture_model, fixture_image, caplog):
    with caplog.at_level(logging.WARNING, logger="bioimgzoo"):
        fixture_model.predict(fixture_image)
        fixture_model.predict(fixture_image.astype(np.uint16))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_nan_fail_names_count_and_option(fixture_model, fixture_image):
    bad = with_bad_pixels(fixture_image, n_nan=1, n_inf=1)
    with pytest.raises(InputError, match=r"input 'raw' holds 2 non-finite values .*nan_policy='zero'"):
        fixture_model.predict(bad, nan_policy="fail")
    with pytest.raises(InputError, match=r"image 2: .*input 'raw' of image 2 holds 2 non-finite|"
                                         r"input 'raw' of image 2 holds 2 non-finite"):
        fixture_model.predict([fixture_image, bad], nan_policy="fail")


def test_nan_zero_replaces_before_statistics(fixture_model, fixture_image):
    bad = with_bad_pixels(fixture_image)
    out = fixture_model.predict(bad, nan_policy="zero")
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, fixture_model.predict(np.where(np.isfinite(bad), bad, 0).astype(np.float32)))
    assert np.isnan(bad).sum() == 3  # the caller's array is not modified


def test_nan_policy_scale_range_tiled(sr_model):
    x = RNG.random((96, 80), dtype=np.float32) * 100
    bad = x.copy()
    bad[10, 10] = np.inf  # scale_range's upper quantile would be inf: everything 0 or NaN
    out = sr_model.predict(bad, tile=48)
    assert np.isfinite(out).mean() > 0.9
    assert np.isfinite(sr_model.predict(bad, tile=48, nan_policy="zero")).all()


def test_statistics_ignore_nan_sample_and_dataset():
    m = processing.Measure("t", "mean", ("y", "x"))
    sd = processing.Measure("t", "std", ("y", "x"))
    x = RNG.random((1, 1, 20, 20)).astype(np.float32)
    y = x.copy()
    y[0, 0, 3, 4] = np.nan
    axes = {"t": ("batch", "channel", "y", "x")}
    got = processing.compute_sample_measures([m, sd], {"t": y}, axes, ignore_nan=True)
    finite = y[np.isfinite(y)]
    np.testing.assert_allclose(got[m].reshape(()), finite.mean(), rtol=1e-6)
    np.testing.assert_allclose(got[sd].reshape(()), finite.std(), rtol=1e-5)
    # default (core's behaviour): NaN propagates
    assert np.isnan(processing.compute_sample_measures([m, sd], {"t": y}, axes)[m]).all()
    dm = processing.Measure("t", "mean", ("batch", "y", "x"), scope="dataset")
    ds = processing.Measure("t", "std", ("batch", "y", "x"), scope="dataset")
    acc = processing.DatasetStatistics([dm, ds], axes)
    acc.update({"t": x})
    acc.update({"t": y}, ignore_nan=True)
    both = np.concatenate([x.reshape(-1), finite])
    fin = acc.finalize()
    np.testing.assert_allclose(fin[dm].reshape(()), both.mean(), rtol=1e-6)
    np.testing.assert_allclose(fin[ds].reshape(()), both.std(), rtol=1e-5)


@pytest.fixture(scope="module")
def dataset_model(tmp_path_factory):
    """zero_mean_unit_variance with axes None: per-dataset statistics, a first pass over all images."""
    zm = s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs())
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    rdf = T.write_package(
        tmp_path_factory.mktemp("ds"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x, processing=[zm])],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4})],
        formats=("onnx",))
    return bioimgzoo.load(rdf)


def test_nan_policy_with_dataset_statistics(dataset_model, caplog):
    clean = RNG.random((64, 64), dtype=np.float32) * 50
    bad = clean.copy()
    bad[5, 5], bad[40, 7] = np.nan, np.inf
    with caplog.at_level(logging.WARNING, logger="bioimgzoo"):
        out_clean, out_bad = dataset_model.predict([clean, bad])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "input 'raw' of image 2 holds 2 non-finite values" in warnings[0], warnings
    assert np.isfinite(out_clean).all()  # the dataset mean/std skipped image 2's bad pixels
    assert np.isfinite(out_bad).mean() > 0.9
    with pytest.raises(InputError, match="input 'raw' of image 2 holds 2 non-finite values"):
        dataset_model.predict([clean, bad], nan_policy="fail")
    zeroed = dataset_model.predict([clean, bad], nan_policy="zero")
    assert all(np.isfinite(z).all() for z in zeroed)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bioimgzoo"):
        dataset_model.set_dataset_statistics([clean, bad])
    try:
        assert any("of image 2 holds 2 non-finite" in r.getMessage() for r in caplog.records)
        assert np.isfinite(dataset_model.predict(clean)).all()
    finally:
        dataset_model.set_dataset_statistics(None)


def test_all_finite_on_large_arrays():
    big = np.ones(3 << 20, np.float32)  # above the small-array path: the sum test
    assert checks_mod.all_finite(big)
    big[123] = np.nan
    assert not checks_mod.all_finite(big)
    big[:] = 1e38  # finite values whose sum overflows: the exact check decides
    assert checks_mod.all_finite(big)
    big[7] = -np.inf
    assert not checks_mod.all_finite(big)
    assert checks_mod.all_finite(np.arange(5))


def test_nan_check_is_one_pass_per_image(fixture_model, fixture_image, monkeypatch):
    calls = []
    real = checks_mod.all_finite
    monkeypatch.setattr(checks_mod, "all_finite", lambda a: calls.append(a.shape) or real(a))
    big = np.tile(fixture_image, (2, 2))  # 1024x1024: 9 tiles of 512
    fixture_model.predict(big)
    assert calls == [(1, 1, 1024, 1024)]  # once for the whole image, never per tile


# --------------------------------------------------------------- 3. argument errors (API)
BAD_ARGS = [
    (dict(data="abc"), r"input 'raw' got a str"),
    (dict(data=None), r"input 'raw' got None"),
    (dict(data={"raw": [[1.0, 2.0], [3.0]]}), r"input 'raw' got a list that is not an array"),
    (dict(tile="abc"), r"tile='abc' is not valid: pass a whole number of at least 1"),
    (dict(tile=-5), r"tile=-5 is not valid"),
    (dict(tile=0), r"tile=0 is not valid"),
    (dict(tile=2.5), r"tile=2.5 is not valid"),
    (dict(tile=True), r"tile=True is not valid"),
    (dict(tile={"y": "big"}), r"tile=\{'y': 'big'\} is not valid"),
    (dict(tile={"q": 512}), r"tile= names axis 'q'.*tileable axes are y, x"),
    (dict(batch_size=0), r"batch_size=0 is not valid: pass a whole number of at least 1"),
    (dict(batch_size="x"), r"batch_size='x' is not valid"),
    (dict(halo=-1), r"halo=-1 is not valid: pass a whole number of at least 0"),
    (dict(halo="q"), r"halo='q' is not valid"),
    (dict(halo={"x": -2}), r"halo=\{'x': -2\} is not valid"),
    (dict(axes="ab"), r"unknown axis 'a'.*b \(batch\), c \(channel\)"),
    (dict(axes="ayx"), r"unknown axis 'a'"),
    (dict(axes="zyx"), r"axes 'zyx' name 3 axes but the image for input 'raw' has 2 dimensions"),
    (dict(axes=5), r"axes=5 is not valid"),
    (dict(axes={"nope": "yx"}), r"axes= names input nope"),
    (dict(pad_mode="bogus"), r"pad_mode='bogus' is not valid: use one of 'reflect'"),
    (dict(nan_policy="ignore"), r"nan_policy='ignore' is not valid: use one of 'warn', 'fail', 'zero'"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGS, ids=[str(i) for i in range(len(BAD_ARGS))])
def test_bad_arguments_are_input_errors(fixture_model, fixture_image, kwargs, message):
    kwargs = dict(kwargs)
    data = kwargs.pop("data", fixture_image)
    with pytest.raises(InputError, match=message):
        fixture_model.predict(data, **kwargs)


def test_mixed_list_names_the_image(fixture_model, fixture_image):
    for odd, what in (("s", "a str"), (None, "None"), (np.zeros((0, 0), np.float32), "an empty image")):
        with pytest.raises(InputError, match=f"image 2: input 'raw' got {what}"):
            fixture_model.predict([fixture_image, odd])
    with pytest.raises(InputError, match="images must be a list or iterable"):
        fixture_model.iter_predict(5)
    with pytest.raises(InputError, match="tile=-5"):  # checked at the call, before any image is read
        fixture_model.iter_predict([fixture_image], tile=-5)
    with pytest.raises(InputError, match=r"^a\.npy: input 'raw' got a str"):
        list(fixture_model.iter_predict(["x"], names=["a.npy"]))


@pytest.mark.parametrize("shape,axes", [((0, 0), None), ((512, 0), None), ((0, 512, 512), "zyx"), ((0,), "x")])
def test_empty_image(fixture_model, shape, axes):
    with pytest.raises(InputError, match=r"input 'raw' got an empty image \(shape"):
        fixture_model.predict(np.zeros(shape, np.float32), axes=axes)


# --------------------------------------------------------------------- 3. size bombs
def test_huge_tile_is_capped_to_the_image(sr_model):
    x = RNG.random((96, 80), dtype=np.float32)
    t0 = time.perf_counter()
    out = sr_model.predict(x, tile=10**9)  # was a MemoryError: a 10^9 x 10^9 padded window
    assert time.perf_counter() - t0 < 10
    np.testing.assert_array_equal(out, sr_model.predict(x))


def test_window_over_the_limit_is_refused(sr_model, monkeypatch):
    monkeypatch.setattr(plan_mod, "MAX_WINDOW_ELEMENTS", 64 * 64)
    x = RNG.random((200, 200), dtype=np.float32)
    with pytest.raises(InputError, match=r"a window of input 'raw' would hold 9,216 values .*smaller tile="):
        sr_model.predict(x, tile=96)
    sr_model.predict(x, tile=64)  # at the limit: fine


def test_fixed_size_of_10_12_is_refused_at_load(zoo_fixture, tmp_path):
    pkg = copy_package(zoo_fixture, tmp_path / "pkg", ("  - size: 512\n    id: y", "  - size: 1000000000000\n    id: y"))
    t0 = time.perf_counter()
    with pytest.raises(LimitExceededError, match=r"input 'raw' declares a size of at least .*y=1000000000000"):
        bioimgzoo.load(pkg)
    assert time.perf_counter() - t0 < 10
    np.save(tmp_path / "img.npy", np.zeros((512, 512), np.float32))
    assert_one_message(cli("predict", pkg, tmp_path / "img.npy", "-o", tmp_path / "out"), "y=1000000000000")


def test_output_offset_of_10_12_is_refused_at_load(zoo_fixture, tmp_path):
    pkg = copy_package(zoo_fixture, tmp_path / "pkg",
                       ("      axis_id: x\n    type: space", "      axis_id: x\n      offset: 1000000000000\n"
                                                            "    type: space"))
    with pytest.raises(LimitExceededError, match=r"output 'probability' declares an offset of 1,000,000,000,000"):
        bioimgzoo.load(pkg)


def test_huge_size_step_is_harmless_or_refused(scale_range_pkg, sr_model, tmp_path):
    pkg = copy_package(scale_range_pkg.parent, tmp_path / "pkg", ("step: 16", "step: 1000000000000"),
                       ("step: 16", "step: 1000000000000"))  # y and x
    model = bioimgzoo.load(pkg / "rdf.yaml")
    x = RNG.random((40, 40), dtype=np.float32)
    # sizes 32 + k*10^12: the image is tiled with 32-pixel windows, not padded to 10^12
    np.testing.assert_array_equal(model.predict(x), sr_model.predict(x, tile=32))
    with pytest.raises(InputError, match=r"a window of input 'raw' would hold [0-9,]+ values "
                                         r"\(shape \(1, 1, 1000000000032, 1000000000032\)"):
        model.predict(x, tile=10**12 + 32)  # valid, and the smallest that holds the image: refused unallocated


def test_numpy_memory_error_becomes_one_message(sr_model, monkeypatch):
    def greedy(*args, **kwargs):
        return np.empty(1 << 50, np.float32)  # numpy refuses this (4 PiB): a real MemoryError

    monkeypatch.setattr(executor_mod, "extract_window", greedy)
    with pytest.raises(InputError, match=r"not enough memory to predict this image \(.*smaller tile="):
        sr_model.predict(RNG.random((64, 64), dtype=np.float32))


def test_tiff_with_two_unnamed_singletons_reads(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from bioimgzoo.io import read_image

    path = tmp_path / "q.tif"
    tifffile.imwrite(path, np.zeros((1, 1, 8, 9), np.uint8), metadata={"axes": "QQYX"})
    array, axes = read_image(path)
    assert array.shape == (8, 9) and axes == "yx"


# ----------------------------------------------------------------------------- 4. CLI
@pytest.fixture
def npy(tmp_path):
    def make(name, array):
        path = tmp_path / name
        np.save(path, array)
        return path

    return make


def test_cli_out_is_a_file(zoo_fixture, npy, tmp_path):
    img = npy("a.npy", np.zeros((512, 512), np.float32))
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    assert_one_message(cli("predict", zoo_fixture, img, "-o", target), "is a file, not a folder")
    assert target.read_text() == "mine"
    # a folder below a file cannot be made either
    assert_one_message(cli("predict", zoo_fixture, img, "-o", target / "sub"), "cannot write there")


def test_cli_out_checked_before_the_model_is_loaded(npy, tmp_path):
    img = npy("a.npy", np.zeros((512, 512), np.float32))
    target = tmp_path / "taken.txt"
    target.write_text("")
    # the model source does not exist: the -o message comes first, so nothing was loaded
    assert_one_message(cli("predict", tmp_path / "no-such-model", img, "-o", target), "-o ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_cli_unwritable_out_folder(zoo_fixture, npy):
    img = npy("a.npy", np.zeros((512, 512), np.float32))
    # /proc exists and is a folder, but no one (root included) can create a file there
    assert_one_message(cli("predict", zoo_fixture, img, "-o", "/proc"), "-o /proc: cannot write there")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_out_folder(zoo_fixture, npy, tmp_path):
    img = npy("a.npy", np.zeros((512, 512), np.float32))
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert_one_message(cli("predict", zoo_fixture, img, "-o", out), "cannot write there")
    finally:
        out.chmod(0o755)


def test_write_failure_is_one_message(tmp_path):
    from bioimgzoo.io import write_image

    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="cannot write"):
        write_image(tmp_path / "f" / "out.npy", np.zeros(3))


def test_cli_huge_tile(zoo_fixture, scale_range_pkg, npy, tmp_path):
    img = npy("a.npy", np.zeros((512, 512), np.float32))
    assert_one_message(cli("predict", zoo_fixture, img, "-o", tmp_path / "o1", "--tile", "1000000000"),
                       "tile size 1000000000 is not valid", "accepts 512")
    small = npy("b.npy", RNG.random((96, 80), dtype=np.float32))
    r = cli("predict", scale_range_pkg, small, "-o", tmp_path / "o2", "--tile", "1000000000")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "o2" / "b_out.npy").shape == (1, 96, 80)


@pytest.mark.parametrize("args,fragment", [
    (["--tile", "-5"], "tile=-5 is not valid"),
    (["--tile", "y=abc"], "--tile 'y=abc' is not understood"),
    (["--halo", "-1"], "halo=-1 is not valid"),
    (["--batch-size", "0"], "--batch-size=0 is not valid"),
    (["--axes", "ab"], "unknown axis 'a'"),
])
def test_cli_bad_options(zoo_fixture, npy, tmp_path, args, fragment):
    img = npy("a.npy", np.zeros((512, 512), np.float32))
    out = tmp_path / "out"
    assert_one_message(cli("predict", zoo_fixture, img, "-o", out, *args), fragment)
    assert not out.exists() or not any(out.iterdir())


def test_cli_empty_image(zoo_fixture, npy, tmp_path):
    img = npy("empty.npy", np.zeros((0, 0), np.float32))
    assert_one_message(cli("predict", zoo_fixture, img, "-o", tmp_path / "out"), "empty.npy", "empty image")


def test_cli_nan_policy(zoo_fixture, fixture_image, npy, tmp_path):
    img = npy("bad.npy", with_bad_pixels(fixture_image))
    assert_one_message(cli("predict", zoo_fixture, img, "-o", tmp_path / "f", "--nan-policy", "fail"),
                       "bad.npy", "5 non-finite values", "--nan-policy zero")
    r = cli("predict", zoo_fixture, img, "-o", tmp_path / "w")
    assert r.exit_code == 0, r.output
    assert np.isfinite(np.load(tmp_path / "w" / "bad_probability.npy")).mean() > 0.5
    r = cli("predict", zoo_fixture, img, "-o", tmp_path / "z", "--nan-policy", "zero")
    assert r.exit_code == 0, r.output
    assert np.isfinite(np.load(tmp_path / "z" / "bad_probability.npy")).all()
    r = cli("predict", zoo_fixture, img, "-o", tmp_path / "x", "--nan-policy", "drop")
    assert r.exit_code == 2 and "Traceback" not in r.output  # click's own usage error names the choices


def test_cli_float16_image(zoo_fixture, fixture_image, npy, tmp_path):
    img = npy("half.npy", fixture_image.astype(np.float16))
    r = cli("predict", zoo_fixture, img, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    out = np.load(tmp_path / "out" / "half_probability.npy")
    ref = bioimgzoo.load(zoo_fixture).predict(fixture_image.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=0)
