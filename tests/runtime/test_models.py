"""Small packages made in the tests: every kind of axis the runtime must handle.

Outputs are compared with bioimageio.core (the reference consumer) on the
same package and input, and tiled predictions with whole-image ones.
"""

from __future__ import annotations

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo import testing as T
from bioimgzoo.errors import InputError, UntrustedCodeError

s = pytest.importorskip("bioimageio.spec.model.v0_5")
RNG = np.random.default_rng(0)


def zmuv(*axes):
    return s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId(a) for a in axes]))


def core_predict(rdf, inputs: dict[str, tuple[np.ndarray, str]]) -> dict[str, np.ndarray]:
    """bioimageio.core's pipeline on the whole sample.

    Core 0.11 pads a whole-sample input by the output halo *before* computing
    per-sample statistics (so padding leaks into them) and crops afterwards;
    the zoo's test tensors (and bioimgzoo) run the network on the image as
    given, so that padding is switched off here: pre/post-processing and the
    engine are compared like for like.
    """
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline
    from bioimageio.spec import load_model_description

    descr = load_model_description(rdf, perform_io_checks=False)
    dims = lambda ax: [{"b": "batch", "c": "channel"}.get(ch, ch) for ch in ax]  # noqa: E731
    sample = Sample(members={k: Tensor(v, dims=dims(ax)) for k, (v, ax) in inputs.items()}, stat={}, id=0)
    pp = create_prediction_pipeline(descr)
    out = pp.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
    return {str(k): t.data.values for k, t in out.members.items()}


@pytest.fixture(scope="module")
def same_conv(tmp_path_factory):
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("same"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x, processing=[zmuv("y", "x")])],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4},
                             processing=[s.SigmoidDescr()])])


@pytest.mark.parametrize("weights", ["onnx", "torchscript"])
def test_parametrized_model_matches_core(same_conv, weights):
    x = RNG.random((96, 80), dtype=np.float32) * 100
    ours = bioimgzoo.load(same_conv, weights=weights).predict(x)
    ref = core_predict(same_conv, {"raw": (x[None, None], "bcyx")})["out"][0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_tiled_equals_whole_with_global_statistics(same_conv):
    model = bioimgzoo.load(same_conv)
    x = RNG.random((208, 176), dtype=np.float32)  # a valid size: the whole image needs no padding
    x[:, 100:] *= 10  # different statistics per region: tiles must use the image's
    whole = model.predict(x)
    tiled = model.predict(x, tile=48)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
    tiled_batched = model.predict(x, tile={"y": 64, "x": 32}, batch_size=5)
    np.testing.assert_allclose(tiled_batched, whole, rtol=1e-5, atol=1e-6)


def test_invalid_sizes_are_padded_and_cropped(same_conv):
    model = bioimgzoo.load(same_conv, weights="torchscript")
    x = RNG.random((70, 50), dtype=np.float32)
    out = model.predict(x)
    assert out.shape == (1, 70, 50)
    # away from the padded far edges the result equals the network on the raw size
    import torch

    ts = torch.jit.load(str(same_conv.parent / "weights.pt"))
    norm = (x - x.mean()) / (x.std() + 1e-6)
    ref = torch.sigmoid(ts(torch.from_numpy(norm[None, None]))).detach().numpy()[0]
    np.testing.assert_allclose(out[:, :-3, :-3], ref[:, :-3, :-3], rtol=1e-5, atol=1e-6)


def test_invalid_tile_size_is_a_clear_error(same_conv):
    with pytest.raises(InputError, match=r"tile size 40 .* 32 \+ k\*16"):
        bioimgzoo.load(same_conv).predict(np.zeros((100, 100), np.float32), tile=40)


def test_many_small_images_batch_and_match_one_by_one(same_conv):
    model = bioimgzoo.load(same_conv)
    images = [RNG.random((64, 64), dtype=np.float32) * (i + 1) for i in range(10)]
    calls = []
    batched = list(model.iter_predict(images, on_window=calls.append))
    assert len(calls) < len(images), "same-shape images must share engine calls"
    for img, out in zip(images, batched):
        np.testing.assert_allclose(out, model.predict(img, batch_size=1), rtol=1e-5, atol=1e-6)


def test_z_stack_through_2d_model_is_folded(same_conv):
    model = bioimgzoo.load(same_conv)
    stack = RNG.random((3, 64, 64), dtype=np.float32)
    out = model.predict(stack, axes="zyx")
    assert out.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(out[1], model.predict(stack[1]), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory):
    x = RNG.random((1, 1, 32, 32), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("up"), T.Upsample2x(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("up", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")},
                             scale={"y": 0.5, "x": 0.5}, halo={"y": 4, "x": 4})])


def test_2x_output_scale(upsampler):
    model = bioimgzoo.load(upsampler)
    x = RNG.random((56, 40), dtype=np.float32)
    whole = model.predict(x)
    assert whole.shape == (1, 112, 80)
    ref = core_predict(upsampler, {"raw": (x[None, None], "bcyx")})["up"][0]
    np.testing.assert_allclose(whole, ref, rtol=1e-5, atol=1e-5)
    tiled = model.predict(x, tile=24)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def two_io(tmp_path_factory):
    a = RNG.random((1, 1, 32, 32), dtype=np.float32)
    b = RNG.random((1, 1, 32, 32), dtype=np.float32)
    ref = {"y": ("a", "y"), "x": ("a", "x")}
    return T.write_package(
        tmp_path_factory.mktemp("two"), T.TwoInTwoOut(),
        inputs=[T.TensorDef("a", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=a, processing=[zmuv("y", "x")]),
                T.TensorDef("b", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=b)],
        outputs=[T.TensorDef("sum", "bcyx", refs=ref, halo={"y": 2, "x": 2}),
                 T.TensorDef("prod", "bcyx", refs=ref)])


def test_two_inputs_two_outputs(two_io):
    model = bioimgzoo.load(two_io)
    a = RNG.random((48, 40), dtype=np.float32)
    b = RNG.random((48, 40), dtype=np.float32)
    out = model.predict({"a": a, "b": b})
    assert set(out) == {"sum", "prod"}
    ref = core_predict(two_io, {"a": (a[None, None], "bcyx"), "b": (b[None, None], "bcyx")})
    for k in out:
        np.testing.assert_allclose(out[k][0], ref[k][0, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="input 'b' is missing"):
        model.predict({"a": a})
    with pytest.raises(InputError, match="pass a dict"):
        model.predict(a)


@pytest.fixture(scope="module")
def conv3d(tmp_path_factory):
    x = RNG.random((1, 1, 16, 24, 24), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("3d"), T.Conv3d(),
        inputs=[T.TensorDef("raw", "bczyx", sizes={"z": (8, 4), "y": (8, 8), "x": (8, 8)}, test=x,
                            processing=[zmuv("z", "y", "x")])],
        outputs=[T.TensorDef("out", "bczyx", refs={a: ("raw", a) for a in "zyx"}, halo={a: 1 for a in "zyx"})])


def test_3d_model(conv3d):
    model = bioimgzoo.load(conv3d)
    x = RNG.random((20, 32, 40), dtype=np.float32)
    out = model.predict(x, axes="zyx")
    assert out.shape == (1, 20, 32, 40)
    ref = core_predict(conv3d, {"raw": (x[None, None], "bczyx")})["out"][0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, axes="zyx", tile=16), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="'z'"):
        model.predict(x[0], axes="yx")


def test_classifier_output_without_spatial_axes(tmp_path):
    x = RNG.random((1, 1, 32, 32), dtype=np.float32)
    rdf = T.write_package(
        tmp_path, T.Classifier(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": 32, "x": 32}, test=x)],
        outputs=[T.TensorDef("scores", "bc", channels=3)], formats=("torchscript",))
    model = bioimgzoo.load(rdf)
    out = model.predict(x[0, 0])
    assert out.shape == (3,)
    with pytest.raises(InputError, match="cannot be tiled"):
        model.predict(np.zeros((64, 64), np.float32))


@pytest.fixture(scope="module")
def dataset_stats_model(tmp_path_factory):
    """Preprocessing with per-dataset statistics (zero_mean_unit_variance over batch, y, x)."""
    x = RNG.random((1, 1, 32, 32), dtype=np.float32)
    rdf = T.write_package(
        tmp_path_factory.mktemp("dataset"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 16), "x": (16, 16)}, test=x,
                            processing=[zmuv("batch", "y", "x")])],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})],
        formats=("torchscript",))
    return rdf


def test_per_dataset_statistics(dataset_stats_model):
    rdf = dataset_stats_model
    model = bioimgzoo.load(rdf)
    images = [RNG.random((32, 32), dtype=np.float32) * k for k in (1, 2, 3)]
    outs = model.predict(images)
    # normalised with the statistics of all three images, not each one's own
    from bioimageio.core import create_prediction_pipeline, Sample, Tensor
    from bioimageio.spec import load_model_description

    descr = load_model_description(rdf, perform_io_checks=False)
    samples = [Sample(members={"raw": Tensor(im[None, None], dims=("batch", "channel", "y", "x"))}, stat={}, id=i)
               for i, im in enumerate(images)]
    pp = create_prediction_pipeline(descr, dataset_for_initial_statistics=samples)
    for sample, ours in zip(samples, outs):
        ref = pp.predict_sample_without_blocking(sample).members["out"].data.values[0]
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    # alone, an image is its own dataset: its output then differs from the one within the call
    assert not np.allclose(model.predict(images[0]), outs[0], atol=1e-3)


def test_state_dict_needs_trust(tmp_path):
    arch = tmp_path / "arch.py"
    arch.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, cin=1, cout=1):\n"
        "        super().__init__()\n"
        "        self.c1 = torch.nn.Conv2d(cin, 4, 3, padding=1)\n"
        "        self.c2 = torch.nn.Conv2d(4, cout, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        return self.c2(torch.relu(self.c1(x)))\n")
    x = RNG.random((1, 1, 32, 32), dtype=np.float32)
    rdf = T.write_package(
        tmp_path / "pkg", T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 16), "x": (16, 16)}, test=x)],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})],
        formats=("torchscript",), state_dict_architecture=(str(arch), "Net", {"cin": 1, "cout": 1}))
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        bioimgzoo.load(rdf, weights="pytorch_state_dict")
    model = bioimgzoo.load(rdf, weights="pytorch_state_dict", trust_code=True)
    img = RNG.random((48, 32), dtype=np.float32)
    ref = bioimgzoo.load(rdf, weights="torchscript").predict(img)
    np.testing.assert_allclose(model.predict(img), ref, rtol=1e-5, atol=1e-6)


def test_dataset_statistics_are_per_call_unless_fixed(dataset_stats_model):
    model = bioimgzoo.load(dataset_stats_model)
    a = RNG.random((32, 32), dtype=np.float32)
    b = a * 10 + 5
    # alone, each image is its own dataset: a linear change of intensity cancels out
    np.testing.assert_allclose(model.predict(a), model.predict(b), rtol=1e-4, atol=1e-4)
    # fixed statistics from `a` apply to later calls
    model.set_dataset_statistics([a])
    assert not np.allclose(model.predict(b), model.predict(a), atol=1e-2)
    model.set_dataset_statistics(None)
    np.testing.assert_allclose(model.predict(a), model.predict(b), rtol=1e-4, atol=1e-4)
    # a one-shot generator works (two passes over kept images)
    outs = list(model.iter_predict(im for im in [a, b]))
    assert len(outs) == 2


def test_halo_override_is_used(same_conv):
    model = bioimgzoo.load(same_conv)
    x = RNG.random((208, 176), dtype=np.float32)
    whole = model.predict(x)
    # no halo: windows lack context at their inner edges, so seams appear
    assert np.abs(model.predict(x, tile=48, halo=0) - whole).max() > 1e-3
    np.testing.assert_allclose(model.predict(x, tile=48, halo={"y": 4, "x": 4}), whole, rtol=1e-5, atol=1e-6)
