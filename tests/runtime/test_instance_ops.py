"""stardist_postprocessing, cellpose_flow_dynamics and custom against bioimageio.core 0.11's op classes."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from bioimgzoo.errors import UntrustedCodeError, WeightsError
from bioimgzoo.runtime.processing import whole_sample as instance_ops
from bioimgzoo.runtime.processing import compile_processing

v0_5 = pytest.importorskip("bioimageio.spec.model.v0_5")
from bioimageio.core.common import MemberId  # noqa: E402
from bioimageio.core.sample import Sample  # noqa: E402
from bioimageio.core.tensor import Tensor  # noqa: E402

HAS_STARDIST = importlib.util.find_spec("stardist") is not None
HAS_CELLPOSE = importlib.util.find_spec("cellpose") is not None
needs_stardist = pytest.mark.skipif(not HAS_STARDIST, reason="stardist is not installed (pip install "
                                    "'bioimgzoo[stardist]'); the op delegates to its decoders")
needs_cellpose = pytest.mark.skipif(not HAS_CELLPOSE, reason="cellpose is not installed (pip install "
                                    "'bioimgzoo[cellpose]'); the op delegates to its decoders")


def _core_run(op, array, dims, member="out"):
    sample = Sample(members={MemberId(member): Tensor(array, dims=dims)}, stat={}, id=0)
    op(sample)
    return sample.members[MemberId(member)]


def _blobs(shape, centers, radius, rng):
    """A probability map with round objects at ``centers`` (values in 0..1) plus noise."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    prob = np.zeros(shape)
    for c in centers:
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        prob = np.maximum(prob, np.exp(-d2 / (2 * radius ** 2)))
    return np.clip(prob + 0.05 * rng.random(shape), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------- stardist
def _stardist_descr(ndim, **kw):
    if ndim == 2:
        args = dict(grid=(1, 1), b=2, prob_threshold=0.5, nms_threshold=0.4, n_rays=16) | kw
        return v0_5.StardistPostprocessingDescr(kwargs=v0_5.StardistPostprocessingKwargs2D(**args))
    args = dict(grid=(1, 1, 1), b=1, prob_threshold=0.5, nms_threshold=0.3, n_rays=32,
                anisotropy=(1.0, 1.0, 1.0)) | kw
    return v0_5.StardistPostprocessingDescr(kwargs=v0_5.StardistPostprocessingKwargs3D(**args))


@needs_stardist
@pytest.mark.parametrize("grid, layout", [((1, 1), "byxc"), ((2, 2), "bcyx"), ((1, 1), "cyx")])
def test_stardist_2d_equals_core(grid, layout):
    from bioimageio.core._ops_stardist import StardistPostprocessing2D

    rng = np.random.default_rng(0)
    n_rays, h, w = 16, 48, 64
    prob = _blobs((h, w), [(12, 14), (30, 40), (14, 50), (36, 12)], 4.0 / grid[0], rng)
    dist = (5.0 / grid[0] + rng.random((h, w, n_rays))).astype(np.float32) * grid[0]
    byxc = np.concatenate([prob[..., None], dist], axis=-1)[None]  # batch, y, x, channel
    descr = _stardist_descr(2, grid=grid, n_rays=n_rays)
    core = _core_run(StardistPostprocessing2D.from_proc_descr(descr, MemberId("out")), byxc,
                     ("batch", "y", "x", "channel"))
    want = core.transpose(("batch", "y", "x", "channel")).data.values  # core's own layout
    assert want.max() >= 3, "the test data must hold several objects"

    axes = {"byxc": ("batch", "y", "x", "channel"), "bcyx": ("batch", "channel", "y", "x"),
            "cyx": ("channel", "y", "x")}[layout]
    x = {"byxc": byxc, "bcyx": np.transpose(byxc, (0, 3, 1, 2)), "cyx": np.transpose(byxc[0], (2, 0, 1))}[layout]
    chain = compile_processing([descr], tensor_id="out", tensor_axes=axes)
    assert chain.whole_sample
    got = chain(x, {})
    as_core = {"byxc": lambda: got, "bcyx": lambda: np.transpose(got, (0, 2, 3, 1)),
               "cyx": lambda: np.transpose(got, (1, 2, 0))[None]}[layout]()
    assert as_core.shape == want.shape == (1, h * grid[0], w * grid[1], 1)  # labels at the image's resolution
    np.testing.assert_array_equal(as_core, want)


@needs_stardist
def test_stardist_3d_equals_core():
    from bioimageio.core._ops_stardist import StardistPostprocessing3D

    rng = np.random.default_rng(1)
    n_rays, shape = 32, (16, 24, 24)
    prob = _blobs(shape, [(5, 6, 6), (10, 16, 16), (8, 6, 18)], 2.5, rng)
    dist = (3.0 + rng.random(shape + (n_rays,))).astype(np.float32)
    bzyxc = np.concatenate([prob[..., None], dist], axis=-1)[None]
    descr = _stardist_descr(3, n_rays=n_rays, anisotropy=(2.0, 1.0, 1.0))
    core = _core_run(StardistPostprocessing3D.from_proc_descr(descr, MemberId("out")), bzyxc,
                     ("batch", "z", "y", "x", "channel"))
    want = core.data.values
    assert want.max() >= 2
    got = compile_processing([descr], tensor_id="out", tensor_axes=("batch", "z", "y", "x", "channel"))(bzyxc, {})
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype


def test_stardist_refuses_a_tensor_without_channels():
    with pytest.raises(Exception, match="channel axis"):
        compile_processing([_stardist_descr(2)], tensor_id="out", tensor_axes=("batch", "y", "x"))


def test_missing_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("stardist", "cellpose") else real(name, *a))
    with pytest.raises(WeightsError, match=r"pip install 'bioimgzoo\[stardist\]'"):
        compile_processing([_stardist_descr(2)], tensor_id="out", tensor_axes=("batch", "channel", "y", "x"))
    with pytest.raises(WeightsError, match=r"pip install 'bioimgzoo\[cellpose\]'"):
        compile_processing([_cellpose_descr()], tensor_id="out", tensor_axes=("batch", "channel", "y", "x"))


def test_network_output_spec_has_the_decoders_channels():
    from bioimgzoo.descr.tensors import TensorSpec, AxisInfo
    from bioimgzoo.descr.sizes import AxisSizes, SizeRef

    spec = TensorSpec("labels", (AxisInfo("batch", "batch"), AxisInfo("channel", "channel", 1),
                                 AxisInfo("y", "space"), AxisInfo("x", "space")),
                      {"batch": None, "channel": AxisSizes(1), "y": SizeRef("raw", "y", 0), "x": SizeRef("raw", "x", 0)},
                      {"y": 1.0, "x": 1.0}, {"y": 8}, "int32", postprocessing=(_stardist_descr(2, grid=(2, 2)),))
    net = instance_ops.network_output_spec(spec)
    assert net.sizes["channel"] == AxisSizes(17) and net.axes[1].size == 17
    assert net.scale["y"] == 2.0 and net.halo["y"] == 4  # one network pixel per 2 label pixels
    cp = instance_ops.network_output_spec(
        __import__("dataclasses").replace(spec, postprocessing=(_cellpose_descr(),)))
    assert cp.sizes["channel"] == AxisSizes(3) and cp.scale["y"] == 1.0


# ----------------------------------------------------------------------- cellpose
def _cellpose_descr(**kw):
    args = dict(cellprob_threshold=0.0, flow_threshold=0.4, do_3D=False) | kw
    return v0_5.CellposeFlowDynamicsDescr(kwargs=v0_5.CellposeFlowDynamicsKwargs(**args))


def _cellpose_flows(h, w, cells, radius):
    """flow_y, flow_x pointing to each cell's centre inside it, cellprob +-4: a cellpose output."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    fy, fx, cp = np.zeros((h, w)), np.zeros((h, w)), np.full((h, w), -4.0)
    for cy, cx in cells:
        d = np.hypot(yy - cy, xx - cx)
        inside = d < radius
        fy[inside] = ((cy - yy) / np.maximum(d, 1e-3))[inside]
        fx[inside] = ((cx - xx) / np.maximum(d, 1e-3))[inside]
        cp[inside] = 4.0
    return np.stack([5 * fy, 5 * fx, cp]).astype(np.float32)  # cellpose networks give 5x the unit flows


@needs_cellpose
@pytest.mark.parametrize("layout, kw", [("bcyx", {}), ("byxc", {"min_size": 0, "output_dtype": "uint32"})])
def test_cellpose_equals_core(layout, kw):
    from bioimageio.core._ops_cellpose import CellposeFlowDynamics

    bcyx = _cellpose_flows(64, 72, [(16, 16), (40, 50), (20, 52), (48, 18)], 9)[None]
    descr = _cellpose_descr(**kw)
    core = _core_run(CellposeFlowDynamics.from_proc_descr(descr, MemberId("out")), bcyx,
                     ("batch", "channel", "y", "x"))
    want = core.data.values
    assert len(np.unique(want)) >= 4, "the test flows must decode into several cells"
    axes = ("batch", "channel", "y", "x") if layout == "bcyx" else ("batch", "y", "x", "channel")
    x = bcyx if layout == "bcyx" else np.transpose(bcyx, (0, 2, 3, 1))
    got = compile_processing([descr], tensor_id="out", tensor_axes=axes)(x, {})
    if layout == "byxc":
        got = np.transpose(got, (0, 3, 1, 2))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype == np.dtype(kw.get("output_dtype", "uint16"))


# ------------------------------------------------------------------------- custom
CUSTOM_SOURCE = '''
import numpy as np

class threshold_labels:
    def __init__(self, threshold=0.5, offset=0):
        self.threshold, self.offset = threshold, offset

    def __call__(self, x):
        return (x > self.threshold).astype(np.uint8) + self.offset

def scaled(factor=2.0):
    def run(x):
        return x * factor
    return run
'''


def _custom_descr(path, name, **kwargs):
    return v0_5.CustomProcessingDescr(source=path, callable=name, kwargs=kwargs)


@pytest.mark.parametrize("name, kwargs", [("threshold_labels", {"threshold": 0.3, "offset": 1}),
                                          ("scaled", {"factor": 3.0})])
def test_custom_equals_core(tmp_path, name, kwargs):
    from bioimageio.core.proc_ops import CustomProcessing

    from bioimgzoo import trust

    src = tmp_path / "my_ops.py"
    src.write_text(CUSTOM_SOURCE)
    descr = _custom_descr(src, name, **kwargs)
    x = np.random.default_rng(3).random((1, 2, 9, 11)).astype(np.float32)
    dims = ("batch", "channel", "y", "x")
    want = _core_run(CustomProcessing.from_proc_descr(descr, MemberId("out")), x.copy(), dims).data.values
    package = SimpleNamespace(file=lambda ref: src)
    load = lambda d: trust.load_custom_op(d, package=package, trust_code=True)  # noqa: E731
    got = compile_processing([descr], tensor_id="out", tensor_axes=dims, load_code=load)(x, {})
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype


def test_custom_needs_trust(tmp_path):
    from bioimgzoo import trust

    src = tmp_path / "my_ops.py"
    src.write_text("raise SystemExit('must never run')\n")
    descr = _custom_descr(src, "scaled")
    dims = ("batch", "channel", "y", "x")
    with pytest.raises(UntrustedCodeError, match="trust_code"):
        compile_processing([descr], tensor_id="out", tensor_axes=dims)
    package = SimpleNamespace(file=lambda ref: src)
    with pytest.raises(UntrustedCodeError, match="--trust-code"):
        compile_processing([descr], tensor_id="out", tensor_axes=dims, load_code=lambda d: trust.load_custom_op(
            d, package=package, trust_code=False))


def test_custom_may_not_change_the_shape(tmp_path):
    from bioimgzoo import trust
    from bioimgzoo.errors import InputError

    src = tmp_path / "crop.py"
    src.write_text("def crop():\n    return lambda x: x[..., 1:]\n")
    package = SimpleNamespace(file=lambda ref: src)
    chain = compile_processing([_custom_descr(src, "crop")], tensor_id="out", tensor_axes=("y", "x"),
                               load_code=lambda d: trust.load_custom_op(d, package=package, trust_code=True))
    with pytest.raises(InputError, match="may not change the shape"):
        chain(np.zeros((4, 5), np.float32), {})


# ------------------------------------------------------------- through Model.predict
@needs_stardist
@pytest.mark.slow
def test_stardist_model_decodes_the_stitched_whole_sample(tmp_path):
    """Windows of the network (17 channels) are stitched, then decoded once: tiled == whole == core."""
    import torch
    from bioimageio.core._ops_stardist import StardistPostprocessing2D

    import bioimgzoo
    from bioimgzoo.testing import TensorDef, write_package

    class StarNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.p = torch.nn.Conv2d(1, 1, 3, padding=1)
            self.d = torch.nn.Conv2d(1, 16, 3, padding=1)
            for w in self.d.parameters():
                w.data = torch.randn(w.shape, generator=g) * 0.5
            self.p.weight.data = torch.full((1, 1, 3, 3), 1 / 9)  # object probability: the smoothed blobs
            self.p.bias.data = torch.zeros(1)

        def forward(self, x):  # channels last, as StarDist's networks
            prob = torch.sigmoid(12 * (self.p(x) - 0.5))
            return torch.cat([prob, torch.relu(self.d(x)) + 4.0], dim=1).permute(0, 2, 3, 1)

    rng = np.random.default_rng(5)
    img = _blobs((96, 96), [(20, 20), (60, 70), (30, 75), (75, 25)], 6.0, rng)
    descr = _stardist_descr(2, n_rays=16, prob_threshold=0.6)
    net = StarNet().eval()
    dims = ("batch", "y", "x", "channel")
    op = StardistPostprocessing2D.from_proc_descr(descr, MemberId("labels"))

    def core_labels(image):
        with torch.no_grad():
            prob_dist = net(torch.from_numpy(np.ascontiguousarray(image[None, None]))).numpy()
        return _core_run(op, prob_dist, dims, "labels").transpose(dims).data.values

    # written without the op (write_package checks the raw output against the axes), then the op and the
    # 1-channel labels it declares are put into the description, with core's labels as test output
    rdf = write_package(tmp_path / "sd", net, formats=("torchscript",),
                        inputs=[TensorDef("raw", "bcyx", sizes={"y": (16, 16), "x": (16, 16)},
                                          test=img[None, None, :64, :64])],
                        outputs=[TensorDef("labels", "byxc", channels=17, halo={"y": 4, "x": 4},
                                           refs={"y": ("raw", "y"), "x": ("raw", "x")})])
    import yaml

    data = yaml.safe_load(rdf.read_text())
    out = data["outputs"][0]
    out["axes"][3]["channel_names"] = ["label"]
    out["postprocessing"] = [{"id": "stardist_postprocessing", "kwargs": descr.kwargs.model_dump(mode="json")}]
    np.save(rdf.parent / "test_labels.npy", core_labels(img[:64, :64]).astype(np.int32))
    out["data"] = {"type": "int32"}
    out["test_tensor"] = {"source": "test_labels.npy"}
    rdf.write_text(yaml.safe_dump(data, sort_keys=False))
    want = core_labels(img)[0]
    assert want.max() >= 3

    model = bioimgzoo.load(rdf)
    whole = model.predict(img, axes="yx")
    windows: list[int] = []
    decoding: list = []  # the decoder is work after the tiles: announced before it runs, ended after
    tiled = next(model.iter_predict([img], axes="yx", tile=48, on_window=windows.append, on_post=decoding.append))
    assert sum(windows) >= 4  # several windows of 17 channels, overlapped by the halo, decoded once
    assert len(decoding) == 2 and "stardist" in decoding[0] and decoding[1] is None
    assert whole.shape == tiled.shape == (96, 96, 1)
    np.testing.assert_array_equal(whole, want)
    np.testing.assert_array_equal(tiled, want)


# ----------------------------------------------------------------------- config.stardist (StarDist's own exports)
def test_stardist_labels_from_an_upsampled_output_equal_those_at_grid_resolution():
    """export_TF upsamples prob (sparse: one pixel per grid cell) and dist (repeated); decoding either is the same."""
    pytest.importorskip("stardist")
    from bioimgzoo.runtime.processing.whole_sample import stardist_instances

    rng = np.random.default_rng(0)
    h, w, n_rays, g = 24, 20, 8, 2
    yy, xx = np.mgrid[:h, :w]
    prob = np.zeros((h, w), np.float32)
    for cy, cx in ((5, 5), (12, 14), (18, 6)):
        prob = np.maximum(prob, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0).astype(np.float32))
    dist = (3 + rng.random((h, w, n_rays))).astype(np.float32) * 2
    up_prob = np.zeros((h * g, w * g), np.float32)
    up_prob[::g, ::g] = prob  # the transposed convolution of export_TF
    up_dist = np.repeat(np.repeat(dist, g, axis=0), g, axis=1)  # UpSampling2D, nearest
    kw = dict(grid=(g, g), prob_threshold=0.5, nms_threshold=0.4)
    at_grid = stardist_instances(prob, dist, upsampled=False, **kw)
    assert at_grid.shape == (h * g, w * g) and at_grid.max() == 3
    np.testing.assert_array_equal(stardist_instances(up_prob, up_dist, upsampled=True, **kw), at_grid)
    # a window whose origin is off the grid (the last tile, moved back to the image edge) still finds them
    shifted = np.zeros_like(up_prob)
    shifted[1::g, 1::g] = prob
    assert stardist_instances(shifted, up_dist, upsampled=True, **kw).max() == 3


def test_stardist_config_is_read_as_stardists_export_writes_it():
    from bioimgzoo.errors import InputError
    from bioimgzoo.runtime.processing.whole_sample import stardist_config

    raw = {"config": {"stardist": {"config": {"n_dim": 2, "grid": [2, 2], "n_rays": 32},
                                   "thresholds": {"prob": 0.69, "nms": 0.3}}}}
    sd = stardist_config(raw)
    assert (sd.grid, sd.n_rays, sd.prob_threshold, sd.nms_threshold) == ((2, 2), 32, 0.69, 0.3)
    assert stardist_config({"config": {"deepimagej": {}}}) is None
    with pytest.raises(InputError, match="n_rays"):
        stardist_config({"config": {"stardist": {"config": {"grid": [1, 1]}}}})
