"""Processing ops against bioimageio.core 0.11 on the same arrays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bioimgzoo.errors import InputError, InvalidDescriptionError
from bioimgzoo.runtime.processing import (
    Chain,
    DatasetStatistics,
    Measure,
    compile_processing,
    compute_sample_measures,
)

v0_4 = pytest.importorskip("bioimageio.spec.model.v0_4")
v0_5 = pytest.importorskip("bioimageio.spec.model.v0_5")
core_ops = pytest.importorskip("bioimageio.core.proc_ops")
from bioimageio.core.common import MemberId  # noqa: E402
from bioimageio.core.proc_setup import setup_pre_and_postprocessing  # noqa: E402
from bioimageio.core.sample import Sample  # noqa: E402
from bioimageio.core.stat_calculators import StatsCalculator  # noqa: E402
from bioimageio.core.tensor import Tensor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

BCYX = ("batch", "channel", "y", "x")
BYXC = ("batch", "y", "x", "channel")
CZYX = ("channel", "z", "y", "x")
YX = ("y", "x")
LAYOUTS = {BCYX: (1, 3, 17, 19), BYXC: (1, 16, 15, 2), CZYX: (2, 5, 8, 9), YX: (20, 21)}
RNG = np.random.default_rng(1234)


def A(*ids):
    return [v0_5.AxisId(a) for a in ids]


def raw(axes, dtype="float32", scale=100.0, offset=20.0):
    x = RNG.random(LAYOUTS[axes]) * scale + offset
    return x.astype(dtype)


# ----------------------------------------------------------------- the two sides
def core_run(descrs, tensors, axes, target, *, output=False, initial=()):
    """Core's ops on core Tensors: its stats step (UpdateStats at position 0, on the raw
    sample, dataset stats updated by this sample) followed by the ops, as in
    ``setup_pre_and_postprocessing``/``PredictionPipeline``; outputs are included in the
    raw sample (core itself would fail for output measures, see the module docs)."""
    cls = v0_5.OutputTensorDescr if output else v0_5.InputTensorDescr
    tdescr = cls.model_construct(id=v0_5.TensorId(target))
    ops = [core_ops.get_proc(d, tdescr) for d in descrs]
    sample = Sample(members={MemberId(k): Tensor(v, dims=axes[k]) for k, v in tensors.items()}, stat={}, id=0)
    required = {m for op in ops for m in op.required_measures}
    calc = StatsCalculator(required)
    for s in initial:
        calc.update(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample.stat.update(calc.update_and_get_all(sample))
        for op in ops:
            op(sample)
    return sample.members[MemberId(target)].data.values


def ours_run(descrs, tensors, axes, target, *, reference_axes=True):
    chain = compile_processing(descrs, tensor_id=target, tensor_axes=axes[target],
                               reference_axes=axes if reference_axes else None)
    stats = compute_sample_measures(chain.required_measures, tensors, axes)
    ds = DatasetStatistics(chain.required_measures, axes)
    ds.update(tensors)
    stats.update(ds.finalize())
    before = {k: v.copy() for k, v in tensors.items()}
    out = chain(tensors[target], stats)
    for k in tensors:  # the caller's arrays are never written
        np.testing.assert_array_equal(tensors[k], before[k])
    return out


def check(descrs, x, axes, *, exact=False, extra=None, output=False):
    tensors = {"t": x, **(extra or {})}
    axis_map = {"t": axes, **{k: axes for k in (extra or {})}}
    want = core_run(descrs, tensors, axis_map, "t", output=output)
    got = ours_run(descrs, tensors, axis_map, "t")
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return got


# ------------------------------------------------------------------------- ops
@pytest.mark.parametrize("axes", list(LAYOUTS))
def test_binarize_scalar(axes):
    check([v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=60.0))], raw(axes), axes, exact=True)


def test_binarize_is_strictly_greater():
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)  # holds the threshold itself
    out = check([v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=5.0))], x, BCYX, exact=True)
    assert out.sum() == 6


def test_binarize_along_axis_last_axis_matches_core():
    d = v0_5.BinarizeDescr(kwargs=v0_5.BinarizeAlongAxisKwargs(threshold=[40.0, 90.0], axis="channel"))
    out = check([d], raw(BYXC), BYXC, exact=True)
    assert out.dtype == bool


@pytest.mark.parametrize("axes", [BCYX, CZYX])
def test_binarize_along_non_last_axis_uses_that_axis(axes):
    # core 0.11 broadcasts the list against the last axis (wrong/failing); we use `axis`
    x = raw(axes)
    n = x.shape[axes.index("channel")]
    thr = [30.0 + 20 * i for i in range(n)]
    d = v0_5.BinarizeDescr(kwargs=v0_5.BinarizeAlongAxisKwargs(threshold=thr, axis="channel"))
    got = compile_processing([d], tensor_id="t", tensor_axes=axes)(x, {})
    shape = [1] * len(axes)
    shape[axes.index("channel")] = n
    np.testing.assert_array_equal(got, x > np.reshape(thr, shape))


@pytest.mark.parametrize("kw", [dict(min=40.0, max=80.0), dict(min=50.0), dict(max=50.0)])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_clip_fixed(kw, dtype):
    check([v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(**kw))], raw(BCYX, dtype), BCYX, exact=True)


@pytest.mark.parametrize("axes", [BCYX, BYXC, CZYX])
@pytest.mark.parametrize("kw", [
    dict(min_percentile=10.0, max_percentile=90.0, axes=["y", "x"]),   # sample, inverted_cdf
    dict(min_percentile=5.0, axes=["y", "x"]),
    dict(max_percentile=95.0, min=30.0, axes=["x", "y"]),
    dict(min_percentile=10.0, max_percentile=99.0),                    # axes None: dataset
])
def test_clip_percentiles(axes, kw):
    check([v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(**kw))], raw(axes), axes, exact=True)


def test_clip_percentiles_dataset_axes_and_integers():
    kw = dict(min_percentile=10.0, max_percentile=90.0, axes=A("batch", "y", "x"))
    check([v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(**kw))], raw(BCYX), BCYX, exact=True)
    kw = dict(min_percentile=10.0, axes=A("y", "x"))
    out = check([v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(**kw))], raw(BCYX, "uint8"), BCYX, exact=True)
    assert out.dtype == np.uint8  # inverted_cdf keeps integer quantiles


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float64", "bool", "float32"])
def test_ensure_dtype(dtype):
    x = raw(BCYX, scale=300.0, offset=-20.0)
    check([v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype=dtype))], x, BCYX, exact=True)


def test_ensure_dtype_same_dtype_is_free():
    x = raw(BCYX)
    chain = compile_processing([v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))],
                               tensor_id="t", tensor_axes=BCYX)
    assert chain(x, {}) is x


@pytest.mark.parametrize("axes", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_fixed_zero_mean_unit_variance(axes, dtype):
    x = raw(axes, dtype)
    check([v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=v0_5.FixedZeroMeanUnitVarianceKwargs(mean=61.3, std=17.1))],
          x, axes)
    if "channel" in axes:
        n = x.shape[axes.index("channel")]
        kw = v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            axis="channel", mean=[50.0 + i for i in range(n)], std=[10.0 + 3 * i for i in range(n)])
        check([v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=kw)], x, axes)


@pytest.mark.parametrize("axes", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_scale_linear(axes, dtype):
    x = raw(axes, dtype)
    check([v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=0.5, offset=-3.0))], x, axes)
    if "channel" in axes:
        n = x.shape[axes.index("channel")]
        for kw in (dict(gain=[1.0 + i for i in range(n)], offset=[0.5 * i for i in range(n)]),
                   dict(gain=[2.0 + i for i in range(n)], offset=1.5)):
            check([v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearAlongAxisKwargs(axis="channel", **kw))], x, axes)


def _fits(axes, m_axes):
    return m_axes is None or all(a in axes for a in m_axes)


@pytest.mark.parametrize("axes,m_axes", [
    (axes, m) for axes in (BCYX, BYXC, CZYX)
    for m in (["y", "x"], None, ["batch", "y", "x"], ["channel", "y", "x"]) if _fits(axes, m)])
def test_scale_mean_variance(axes, m_axes):
    ref = raw(axes, scale=10.0, offset=3.0)
    d = v0_5.ScaleMeanVarianceDescr(kwargs=v0_5.ScaleMeanVarianceKwargs(
        reference_tensor="ref", axes=None if m_axes is None else A(*m_axes), eps=1e-4))
    check([d], raw(axes), axes, extra={"ref": ref}, output=True)


def test_scale_mean_variance_reference_with_other_layout_and_dtype():
    # output (b, y, x, c) matched to an uint8 input laid out (b, c, y, x): statistics
    # keep the channel axis and must be moved onto the output's layout (core aligns by name)
    inp = RNG.integers(0, 255, size=(1, 2, 16, 15)).astype("uint8")
    out = raw(BYXC)
    d = v0_5.ScaleMeanVarianceDescr(kwargs=v0_5.ScaleMeanVarianceKwargs(reference_tensor="inp", axes=A("y", "x")))
    tensors = {"inp": inp, "out": out}
    axis_map = {"inp": BCYX, "out": BYXC}
    want = core_run([d], tensors, axis_map, "out", output=True)
    got = ours_run([d], tensors, axis_map, "out")
    assert got.dtype == want.dtype == np.float64  # uint8 reference: float64 statistics, as core
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes,kw", [(axes, kw) for axes in LAYOUTS for kw in (
    dict(axes=["y", "x"], min_percentile=1.0, max_percentile=99.5),
    dict(axes=None, min_percentile=5.0, max_percentile=95.0),          # dataset
    dict(axes=["batch", "y", "x"], min_percentile=2.0, max_percentile=98.0),
    dict(axes=["y", "x"]),                                           # 0 / 100
) if _fits(axes, kw["axes"])])
@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_scale_range(axes, kw, dtype):
    kw = dict(kw)
    kw["axes"] = None if kw["axes"] is None else A(*kw["axes"])
    check([v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(**kw))], raw(axes, dtype), axes)


def test_scale_range_reference_tensor_and_nan():
    x = raw(BCYX)
    ref = raw(BCYX, scale=1000.0)
    ref[0, 1, 3, 4] = np.nan  # xarray's quantile skips NaN; so do we
    d = v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=A("y", "x"), min_percentile=3.0,
                                                          max_percentile=97.0, reference_tensor="ref"))
    out = check([d], x, BCYX, extra={"ref": ref})
    assert np.isfinite(out).all()


@pytest.mark.parametrize("axes", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid(axes, dtype):
    check([v0_5.SigmoidDescr()], raw(axes, dtype, scale=20.0, offset=-10.0), axes, output=True)


@pytest.mark.parametrize("axes,axis", [(BCYX, "channel"), (BYXC, "channel"), (CZYX, "z"), (YX, "x")])
def test_softmax(axes, axis):
    d = v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=axis))
    out = check([d], raw(axes, scale=8.0, offset=-4.0), axes, output=True)
    np.testing.assert_allclose(out.sum(axis=axes.index(axis)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("axes,m_axes", [
    (axes, m) for axes in LAYOUTS
    for m in (["y", "x"], ["x", "y"], ["channel", "y", "x"], None, ["batch", "y", "x"]) if _fits(axes, m)])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_zero_mean_unit_variance(axes, m_axes, dtype):
    kw = v0_5.ZeroMeanUnitVarianceKwargs(axes=None if m_axes is None else A(*m_axes), eps=1e-5)
    check([v0_5.ZeroMeanUnitVarianceDescr(kwargs=kw)], raw(axes, dtype), axes)


@pytest.mark.parametrize("descr", [
    v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("y", "x"), eps=0.1)),
    v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=A("y", "x"), eps=0.1)),
    v0_5.ScaleMeanVarianceDescr(kwargs=v0_5.ScaleMeanVarianceKwargs(reference_tensor="ref", axes=A("y", "x"),
                                                                    eps=0.1)),
])
def test_eps_placement_and_core_ignoring_described_eps(descr):
    # a spread of ~1e-3: eps matters, and (x - mean) / (std + eps) differs clearly from
    # sqrt(var + eps).  Core uses 1e-6 for zero_mean_unit_variance and scale_range
    # whatever eps says (FOLLOW_CORE_EPS); scale_mean_variance honours it.
    x = raw(BCYX, "float64", scale=0.003, offset=1.0)
    check([descr], x, BCYX, extra={"ref": raw(BCYX, "float64", scale=0.2)}, output=True)


def test_described_eps_can_be_honoured(monkeypatch):
    from bioimgzoo.runtime import processing

    monkeypatch.setattr(processing.ops, "FOLLOW_CORE_EPS", False)
    x = raw(YX, "float64")
    d = v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("y", "x"), eps=0.1))
    chain = compile_processing([d], tensor_id="t", tensor_axes=YX)
    got = chain(x, compute_sample_measures(chain.required_measures, {"t": x}, {"t": YX}))
    np.testing.assert_allclose(got, (x - x.mean()) / (x.std() + 0.1), rtol=1e-10)


def test_long_chain_fuses_and_reuses_temporaries():
    x = raw(BCYX, "uint16")
    descrs = [
        v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
        v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=2.0, offset=1.0)),
        v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("y", "x"))),
        v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
        v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=-1.0, max=1.5)),
        v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=v0_5.FixedZeroMeanUnitVarianceKwargs(mean=0.1, std=0.7)),
        v0_5.SigmoidDescr(),
        v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
    ]
    out = check(descrs, x, BCYX)
    assert out.dtype == np.float32


# ------------------------------------------------------------ format 0.4 descriptions
def _model04(pre, post=(), axes="bcyx", shape=(1, 3, 16, 16)):
    return {
        "format_version": "0.4.10", "type": "model", "name": "processing test", "description": "t",
        "authors": [{"name": "a"}], "cite": [{"text": "t", "doi": "10.1000/x"}], "license": "MIT",
        "documentation": "README.md", "test_inputs": ["a.npy"], "test_outputs": ["b.npy"],
        "timestamp": "2020-01-01T00:00:00",
        "inputs": [{"name": "raw", "axes": axes, "data_type": "float32", "shape": list(shape),
                    "preprocessing": list(pre)}],
        "outputs": [{"name": "out", "axes": axes, "data_type": "float32",
                     "shape": {"reference_tensor": "raw", "scale": [1] * len(axes), "offset": [0] * len(axes)},
                     "postprocessing": list(post)}],
        "weights": {"onnx": {"source": "w.onnx", "sha256": "0" * 64}},
    }


def _build(content, *, upgrade):
    from bioimageio.spec import ValidationContext, build_description

    with warnings.catch_warnings(), ValidationContext(perform_io_checks=False):
        warnings.simplefilter("ignore")
        d = build_description(content, format_version="latest" if upgrade else "discover")
    assert isinstance(d, (v0_5.ModelDescr if upgrade else v0_4.ModelDescr)), d.validation_summary.format()
    return d


PRE04 = [
    {"name": "zero_mean_unit_variance", "kwargs": {"mode": "per_sample", "axes": "xy"}},
    {"name": "zero_mean_unit_variance", "kwargs": {"mode": "per_dataset", "axes": "cxy"}},
    {"name": "zero_mean_unit_variance", "kwargs": {"mode": "fixed", "axes": "xy", "mean": [1, 2, 3],
                                                   "std": [2, 3, 4]}},
    {"name": "zero_mean_unit_variance", "kwargs": {"mode": "fixed", "axes": "cxy", "mean": 0.5, "std": 2}},
    {"name": "scale_linear", "kwargs": {"gain": 2.0, "offset": 0.5}},
    {"name": "clip", "kwargs": {"min": -1.0, "max": 3.0}},
]


@pytest.fixture(scope="module")
def models04():
    post = [{"name": "scale_mean_variance", "kwargs": {"mode": "per_sample", "axes": "xy", "reference_tensor": "raw"}},
            {"name": "sigmoid"}]
    pre_axes = [{"name": "scale_linear", "kwargs": {"axes": "xy", "gain": [1, 2, 3], "offset": [0, 1, 2]}},
                {"name": "scale_range", "kwargs": {"mode": "per_sample", "axes": "xy", "min_percentile": 2,
                                                   "max_percentile": 98}},
                {"name": "binarize", "kwargs": {"threshold": 0.5}}]
    return {
        # core's full pipeline cannot run output measures (KeyError), so the 0.4 pipeline
        # comparison uses a model without them and the postprocessing is checked op-wise
        "up": _build(_model04(PRE04, [{"name": "sigmoid"}]), upgrade=True),
        "04": _build(_model04(PRE04, [{"name": "sigmoid"}]), upgrade=False),
        "up_post": _build(_model04(PRE04[:1], post), upgrade=True),
        "up_axes": _build(_model04(pre_axes), upgrade=True),
        "up_ds": _build(_model04([{"name": "scale_range", "kwargs": {
            "mode": "per_dataset", "axes": "xy", "min_percentile": 1, "max_percentile": 99}}]), upgrade=True),
    }


def _core_pipeline(model, sample_arrays, axes):
    pre, post = setup_pre_and_postprocessing(model, [])
    s = Sample(members={MemberId(k): Tensor(v, dims=axes) for k, v in sample_arrays.items()}, stat={}, id=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for op in pre:
            op(s)
    return s, post


def test_v04_upgraded_preprocessing_matches_core_on_the_04_description(models04):
    up, d04 = models04["up"], models04["04"]
    ids = [p.id for p in up.inputs[0].preprocessing]
    assert ids == ["ensure_dtype", "zero_mean_unit_variance", "zero_mean_unit_variance",
                   "fixed_zero_mean_unit_variance", "fixed_zero_mean_unit_variance", "scale_linear", "clip",
                   "ensure_dtype"]
    chain = compile_processing(up.inputs[0].preprocessing, tensor_id="raw", tensor_axes=BCYX)
    by_kind = {(m.scope, m.axes) for m in chain.required_measures}
    assert by_kind == {("sample", ("x", "y")), ("dataset", ("batch", "channel", "x", "y"))}  # per_dataset -> batch
    x = raw(BCYX)
    # core on the 0.4 description itself (its own 0.4 handling, ensure_dtype framing included)
    s, _ = _core_pipeline(d04, {"raw": x}, BCYX)
    want = s.members[MemberId("raw")].data.values
    stats = compute_sample_measures(chain.required_measures, {"raw": x}, {"raw": BCYX})
    ds = DatasetStatistics(chain.required_measures, {"raw": BCYX})
    ds.update({"raw": x})
    got = chain(x, {**stats, **ds.finalize()})
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and core on the upgraded description
    s5, _ = _core_pipeline(up, {"raw": x}, BCYX)
    np.testing.assert_allclose(got, s5.members[MemberId("raw")].data.values, rtol=1e-5, atol=1e-6)


def test_v04_upgraded_postprocessing_and_axes_ops(models04):
    up = models04["up_post"]
    x, y = raw(BCYX), raw(BCYX, scale=5.0, offset=-2.0)
    post = up.outputs[0].postprocessing
    assert [p.id for p in post] == ["scale_mean_variance", "sigmoid", "ensure_dtype"]
    want = core_run(post, {"raw": x, "out": y}, {"raw": BCYX, "out": BCYX}, "out", output=True)
    got = ours_run(post, {"raw": x, "out": y}, {"raw": BCYX, "out": BCYX}, "out", reference_axes=False)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # 0.4 scale_linear with axes (-> per-channel along 'channel'), scale_range, binarize
    pre = models04["up_axes"].inputs[0].preprocessing
    assert pre[1].kwargs.axis == "channel"
    got = check(pre, raw(BCYX), BCYX, exact=True)
    assert got.dtype == np.float32


def test_v04_scale_range_per_dataset_becomes_sample_scope_in_upgrade(models04):
    # bioimageio.spec's 0.4 -> 0.5 conversion drops scale_range's `mode` (and
    # `reference_tensor`): the upgraded op is per sample, and that is what we run
    d = models04["up_ds"].inputs[0].preprocessing[1]
    chain = compile_processing([d], tensor_id="raw", tensor_axes=BCYX)
    assert {m.scope for m in chain.required_measures} == {"sample"}
    check([d], raw(BCYX), BCYX)


# ----------------------------------------------------------------- measure rules
def _measures(descr, axes=BCYX, **kw):
    return compile_processing([descr], tensor_id="t", tensor_axes=axes, **kw).required_measures


def test_measure_scopes_follow_core():
    zm = _measures(v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("y", "x"))))
    assert zm == {Measure("t", "mean", ("y", "x"), None, "sample"), Measure("t", "std", ("y", "x"), None, "sample")}
    # axes None: dataset for zero_mean_unit_variance / scale_range / clip ...
    zm = _measures(v0_5.ZeroMeanUnitVarianceDescr())
    assert {(m.scope, m.axes) for m in zm} == {("dataset", None)}
    sr = _measures(v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(min_percentile=1.0, max_percentile=99.0)))
    assert {(m.scope, m.axes, m.q, m.method) for m in sr} == {("dataset", None, 0.01, "linear"),
                                                              ("dataset", None, 0.99, "linear")}
    # ... but sample for scale_mean_variance
    smv = _measures(v0_5.ScaleMeanVarianceDescr(kwargs=v0_5.ScaleMeanVarianceKwargs(reference_tensor="r")))
    assert {(m.tensor_id, m.kind, m.scope) for m in smv} == {
        ("t", "mean", "sample"), ("t", "std", "sample"), ("r", "mean", "sample"), ("r", "std", "sample")}
    clip = _measures(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min_percentile=1.0, axes=A("y", "x"))))
    assert {(m.scope, m.method) for m in clip} == {("sample", "inverted_cdf")}
    sr = _measures(v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=A("y", "x"), reference_tensor="r")))
    assert {(m.tensor_id, m.scope, m.method) for m in sr} == {("r", "sample", "linear")}
    c = compile_processing([v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=A("batch", "y", "x")))],
                           tensor_id="t", tensor_axes=BCYX)
    assert not c.needs_sample_stats and {m.scope for m in c.required_measures} == {"dataset"}
    c = compile_processing([v0_5.SigmoidDescr()], tensor_id="t", tensor_axes=BCYX)
    assert c.required_measures == frozenset() and not c.needs_sample_stats


def test_measure_validation():
    assert Measure("t", "quantile", ["y"], 0.5) == Measure("t", "quantile", ("y",), 0.5, "sample", "linear")
    assert hash(Measure("t", "mean", ("y",))) == hash(Measure("t", "mean", ["y"]))
    with pytest.raises(ValueError):
        Measure("t", "mean", ("batch", "y"), None, "sample")
    with pytest.raises(ValueError):
        Measure("t", "quantile", ("y",), 1.5)
    with pytest.raises(ValueError):
        Measure("t", "mean", ("y",), None, "dataset")


def test_sample_measures_dtypes_follow_core():
    x = raw(BCYX)
    ms = [Measure("t", k, ("y", "x")) for k in ("mean", "std", "var")]
    stats = compute_sample_measures(ms, {"t": x}, {"t": BCYX})
    assert {v.dtype for v in stats.values()} == {np.dtype("float32")}
    assert all(v.shape == (1, 3, 1, 1) for v in stats.values())
    np.testing.assert_allclose(stats[ms[1]], x.astype(np.float64).std(axis=(2, 3), keepdims=True), rtol=1e-6)
    only_mean = compute_sample_measures(ms[:1], {"t": x}, {"t": BCYX})  # core's MeanCalculator: float64
    assert only_mean[ms[0]].dtype == np.float64
    # dataset measures are not sample measures
    assert compute_sample_measures([Measure("t", "mean", None, None, "dataset")], {"t": x}, {"t": BCYX}) == {}


def test_statistics_are_taken_on_the_raw_input_like_core_pipeline(zoo_fixture):
    # core's UpdateStats runs before every op: zero_mean_unit_variance after scale_linear
    # normalizes with the *unscaled* input's mean/std
    from bioimgzoo.package import open_package

    d = open_package(zoo_fixture).descr
    pre = [v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=2.0, offset=5.0)),
           v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("x", "y")))]
    model = d.model_copy(update={"inputs": [d.inputs[0].model_copy(update={"preprocessing": pre})]})
    x = raw(BCYX)[:, :1]
    s, _ = _core_pipeline(model, {"raw": x}, BCYX)
    want = s.members[MemberId("raw")].data.values
    chain = compile_processing(model.inputs[0].preprocessing, tensor_id="raw", tensor_axes=BCYX)
    got = chain(x, compute_sample_measures(chain.required_measures, {"raw": x}, {"raw": BCYX}))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert abs(float(got.std()) - 2.0) < 1e-3  # not re-standardized after scaling


def _core_stats_step(descr, samples, *, initial=()):
    """Core's UpdateStats over successive samples (one pipeline, as predict_many)."""
    tdescr = v0_5.InputTensorDescr.model_construct(id=v0_5.TensorId("t"))
    op = core_ops.get_proc(descr, tdescr)
    init_calc = StatsCalculator(op.required_measures)
    for s in initial:
        init_calc.update(Sample(members={MemberId("t"): Tensor(s, dims=BCYX)}, stat={}, id=0))
    update = core_ops.UpdateStats(StatsCalculator(op.required_measures, init_calc.finalize() if initial else None))
    outs = []
    for x in samples:
        s = Sample(members={MemberId("t"): Tensor(x, dims=BCYX)}, stat={}, id=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            update(s)
            op(s)
        outs.append(s.members[MemberId("t")].data.values)
    return outs


@pytest.mark.parametrize("descr", [
    v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("batch", "y", "x"))),
    v0_5.ZeroMeanUnitVarianceDescr(),
    v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=A("batch", "y", "x"), min_percentile=1.0,
                                                      max_percentile=99.0)),
    v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min_percentile=10.0, max_percentile=90.0)),
])
def test_dataset_statistics_running_and_frozen_like_core(descr):
    samples = [raw(BCYX, scale=10.0 * (i + 1), offset=5.0 * i) for i in range(3)]
    chain = compile_processing([descr], tensor_id="t", tensor_axes=BCYX)
    # no initial dataset: running statistics over samples 1..k (core's predict_many)
    want = _core_stats_step(descr, samples)
    ds = DatasetStatistics(chain.required_measures, {"t": BCYX})
    for x, w in zip(samples, want):
        ds.update({"t": x})
        got = chain(x, ds.finalize())
        assert got.dtype == w.dtype
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert ds.samples_seen == 3
    # an initial dataset freezes the statistics (dataset_for_initial_statistics)
    want = _core_stats_step(descr, samples[2:], initial=samples[:2])
    ds = DatasetStatistics(chain.required_measures, {"t": BCYX})
    for x in samples[:2]:
        ds.update({"t": x})
    np.testing.assert_allclose(chain(samples[2], ds.finalize()), want[0], rtol=1e-5, atol=1e-6)


def test_dataset_mean_var_std_are_exact_over_samples():
    samples = [raw(BCYX, scale=3.0 * (i + 1), offset=100.0 * i) for i in range(4)]
    ms = [Measure("t", k, ("batch", "y", "x"), None, "dataset") for k in ("mean", "var", "std")]
    ds = DatasetStatistics(ms + [Measure("t", "mean", ("y", "x"))], {"t": BCYX})
    for x in samples:
        ds.update({"t": x})
    stats = ds.finalize()
    assert set(stats) == set(ms)  # sample measures are not accumulated
    allx = np.concatenate(samples).astype(np.float64)
    np.testing.assert_allclose(stats[ms[0]], allx.mean(axis=(0, 2, 3), keepdims=True)[:1], rtol=1e-12)
    np.testing.assert_allclose(stats[ms[1]], allx.var(axis=(0, 2, 3), keepdims=True)[:1], rtol=1e-10)
    assert stats[ms[2]].dtype == np.float64 and stats[ms[2]].shape == (1, 3, 1, 1)


def test_dataset_statistics_of_inputs_then_outputs():
    mi = Measure("raw", "std", None, None, "dataset")
    mo = Measure("out", "quantile", ("batch", "y", "x"), 0.9, "dataset")
    ds = DatasetStatistics([mi, mo], {"raw": BCYX, "out": BYXC})
    x, y = raw(BCYX), raw(BYXC)
    ds.update({"raw": x})
    assert set(ds.finalize()) == {mi}  # outputs not seen yet
    ds.update({"out": y})
    stats = ds.finalize()
    want = np.quantile(y, np.array([0.9]), axis=(1, 2), keepdims=True)[0]  # float64 q, as xarray
    np.testing.assert_allclose(stats[mo], want, rtol=1e-12)
    np.testing.assert_allclose(stats[mi], x.astype(np.float64).std(), rtol=1e-12)
    with pytest.raises(InputError, match="none of the measured tensors"):
        ds.update({"other": x})
    with pytest.raises(InputError, match="axes"):
        DatasetStatistics([mo], {"raw": BCYX})


def test_dataset_measure_without_batch_axis():
    # 'batch' in a dataset measure's axes is fine for a tensor without a batch axis
    samples = [raw(CZYX) for _ in range(2)]
    m = Measure("t", "mean", ("batch", "y", "x"), None, "dataset")
    ds = DatasetStatistics([m], {"t": CZYX})
    for x in samples:
        ds.update({"t": x})
    want = np.stack(samples).astype(np.float64).mean(axis=(0, 3, 4))[:, :, None, None]
    np.testing.assert_allclose(ds.finalize()[m], want, rtol=1e-12)


# ------------------------------------------------------------------------- errors
def test_axes_the_tensor_lacks():
    d = v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=A("z", "y")))
    with pytest.raises(InvalidDescriptionError, match=r"zero_mean_unit_variance.*'raw'.*'z'.*fix"):
        compile_processing([d], tensor_id="raw", tensor_axes=BCYX)
    d = v0_5.BinarizeDescr(kwargs=v0_5.BinarizeAlongAxisKwargs(threshold=[1.0], axis="z"))
    with pytest.raises(InvalidDescriptionError, match=r"binarize.*'raw'.*'z'.*fix"):
        compile_processing([d], tensor_id="raw", tensor_axes=BCYX)
    with pytest.raises(InvalidDescriptionError, match="softmax.*'time'"):
        compile_processing([v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis="time"))],
                           tensor_id="raw", tensor_axes=BCYX)
    d = v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=A("z"), reference_tensor="other"))
    with pytest.raises(InvalidDescriptionError, match="scale_range.*'other'"):
        compile_processing([d], tensor_id="raw", tensor_axes=CZYX, reference_axes={"other": BCYX})
    with pytest.raises(InputError, match="'z'"):  # unknown reference layout: caught when computing
        m = Measure("r", "mean", ("z",))
        compute_sample_measures([m], {"r": raw(BCYX)}, {"r": BCYX})


def test_impossible_or_unsupported_ops():
    with pytest.raises(InvalidDescriptionError, match="clip.*min 5.0 >= max 1.0"):
        compile_processing([v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=5.0, max=1.0))],
                           tensor_id="raw", tensor_axes=BCYX)
    odd = v0_5.StardistPostprocessingDescr.model_construct(id="stardist_postprocessing", kwargs={})
    with pytest.raises(InvalidDescriptionError, match="stardist_postprocessing.*not supported"):
        compile_processing([odd], tensor_id="out", tensor_axes=BCYX)
    old = v0_4.SigmoidDescr(name="sigmoid")
    with pytest.raises(InvalidDescriptionError, match="upgrade"):
        compile_processing([old], tensor_id="out", tensor_axes=BCYX)


def test_call_time_errors():
    zm = compile_processing([v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(
        axes=A("y", "x")))], tensor_id="raw", tensor_axes=BCYX)
    x = raw(BCYX)
    with pytest.raises(InputError, match=r"zero_mean_unit_variance.*sample mean of tensor 'raw'.*compute_sample"):
        zm(x, {})
    with pytest.raises(InputError, match="expects 4 axes"):
        zm(x[0], {})
    with pytest.raises(InputError, match="does not fit"):
        zm(x, {m: np.ones((1, 5, 1, 1), np.float32) for m in zm.required_measures})
    b = compile_processing([v0_5.BinarizeDescr(kwargs=v0_5.BinarizeAlongAxisKwargs(
        threshold=[1.0, 2.0], axis="channel"))], tensor_id="raw", tensor_axes=BCYX)
    with pytest.raises(InputError, match="binarize.*2 thresholds.*3 long"):
        b(x, {})
    with pytest.raises(InputError, match="update"):
        DatasetStatistics([Measure("raw", "mean", None, None, "dataset")], {"raw": BCYX}).finalize()
    with pytest.raises(InputError, match="tensor 'raw'.*not given"):
        compute_sample_measures(zm.required_measures, {}, {"raw": BCYX})


def test_scalar_stats_and_repr():
    zm = compile_processing([v0_5.ZeroMeanUnitVarianceDescr()], tensor_id="raw", tensor_axes=YX)
    x = raw(YX)
    m, s = sorted(zm.required_measures, key=lambda m: m.kind)
    out = zm(x, {m: 50.0, s: 10.0})  # plain floats act like core's float64 statistics
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, (x - 50.0) / (10.0 + 1e-6), rtol=1e-6)
    assert isinstance(zm, Chain) and "zero_mean_unit_variance" in repr(zm)


# --------------------------------------------------------------- real zoo fixture
def test_fixture_preprocessing_matches_core(zoo_fixture):
    from bioimgzoo.package import open_package

    pkg = open_package(zoo_fixture)
    d = pkg.descr
    ipt, out = d.inputs[0], d.outputs[0]
    in_axes = tuple(str(a.id) for a in ipt.axes)
    out_axes = tuple(str(a.id) for a in out.axes)
    x = np.load(pkg.file(ipt.test_tensor))
    s, post = _core_pipeline(d, {str(ipt.id): x}, in_axes)
    want = s.members[MemberId(str(ipt.id))].data.values

    chain = compile_processing(ipt.preprocessing, tensor_id=str(ipt.id), tensor_axes=in_axes)
    assert chain.steps == ("ensure_dtype", "zero_mean_unit_variance", "ensure_dtype") and chain.needs_sample_stats
    stats = compute_sample_measures(chain.required_measures, {str(ipt.id): x}, {str(ipt.id): in_axes})
    got = chain(x, stats)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    logits = (np.load(pkg.file(out.test_tensor)) - 0.5) * 20
    s_out = Sample(members={MemberId(str(out.id)): Tensor(logits, dims=out_axes)}, stat=s.stat, id=0)
    for op in post:
        op(s_out)
    post_chain = compile_processing(out.postprocessing, tensor_id=str(out.id), tensor_axes=out_axes)
    got = post_chain(logits, {})
    np.testing.assert_allclose(got, s_out.members[MemberId(str(out.id))].data.values, rtol=1e-5, atol=1e-6)
