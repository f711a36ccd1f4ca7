"""Probing: valid sizes, output relations and halo, found by running the network."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from bioimgzoo.errors import ExportError
from bioimgzoo.testing import checks as C
from bioimgzoo.testing import nets as N

torch = pytest.importorskip("torch")


def probe(module, shape, axes="bcyx", **kwargs):
    from bioimgzoo.exporter._probe import ModuleRunner, probe_module

    x = np.random.default_rng(0).random(shape).astype(np.float32)
    run = ModuleRunner(module, ["input"])
    outs = run([x])
    ids = ["output"] if len(outs) == 1 else [f"output{i}" for i in range(len(outs))]
    return probe_module(run, {"input": x}, {"input": axes}, outs, ids, **kwargs)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_unet_step_is_two_to_the_depth(depth):
    r = probe(C.seeded(N.UNet2d, depth=depth), (1, 1, 64, 64))
    for a in "yx":
        s = r.inputs["input"].sizes[a]
        assert s.step == 2 ** depth
        assert s.min % s.step == 0  # DeepImageJ rule 16
        rel = r.outputs["output"].sizes[a]
        assert rel.kind == "same" and rel.halo % s.step == 0
        assert rel.receptive_field <= rel.halo < s.min / 2


def test_halo_is_the_receptive_field():
    r = probe(C.seeded(N.SameConv), (1, 1, 40, 48))
    rel = r.outputs["output"].sizes["x"]
    assert rel.receptive_field == 3 and rel.halo == 3  # three 3x3 convolutions
    assert r.inputs["input"].sizes["x"].min == 7  # raised so 2 * halo < min
    assert any("min raised" in n for n in r.notes)


def test_upsampler_scale_and_even_halo():
    r = probe(C.seeded(N.Upsampler2x), (1, 1, 32, 32))
    rel = r.outputs["output"].sizes["y"]
    assert rel.kind == "scale" and rel.scale == Fraction(2) and rel.offset == 0
    assert rel.halo > 0 and rel.halo % 2 == 0  # halo / scale must be whole input pixels


def test_valid_convolutions_give_offset_and_no_halo():
    r = probe(C.seeded(N.ValidConv), (1, 1, 32, 32))
    rel = r.outputs["output"].sizes["x"]
    assert (rel.kind, rel.offset, rel.halo) == ("offset", -4, 0)
    assert r.inputs["input"].sizes["x"].min == 5


def test_anisotropic_3d():
    r = probe(C.seeded(N.AnisotropicUNet3d), (1, 1, 8, 32, 32), "bczyx")
    s = r.inputs["input"].sizes
    assert (s["z"].step, s["y"].step, s["x"].step) == (1, 2, 2)


def test_classifier_has_no_spatial_output():
    r = probe(C.seeded(N.Classifier), (1, 1, 32, 32))
    out = r.outputs["output"]
    assert out.axes == "bc" and out.channels == 3
    assert all(i.kind in ("batch", "channel") for i in out.sizes.values())


def test_fixed_size_network():
    r = probe(C.seeded(N.FixedSize), (1, 1, 16, 16))
    s = r.inputs["input"].sizes
    assert s["y"].fixed and s["y"].min == 16 and s["x"].min == 16
    assert any("only the example size" in n for n in r.notes)


def test_two_outputs_with_different_scales():
    r = probe(C.seeded(N.TwoOutputs), (1, 1, 32, 32))
    assert r.outputs["output0"].sizes["x"].scale == 1
    assert r.outputs["output1"].sizes["x"].scale == Fraction(1, 2)
    assert r.inputs["input"].sizes["x"].step == 2


def test_overrides_win_and_are_reported():
    r = probe(C.seeded(N.SameConv), (1, 1, 32, 32), sizes={"x": {"min": 16, "step": 8}, "y": 32}, halo=5)
    s = r.inputs["input"].sizes
    assert (s["x"].min, s["x"].step, s["x"].source) == (16, 8, "override")
    assert s["y"].fixed and s["y"].min == 32
    assert r.outputs["output"].sizes["x"].halo == 5
    assert "override" in r.summary()


def test_wrong_size_override_is_refused():
    with pytest.raises(ExportError, match="rejects size"):
        probe(C.seeded(N.UNet2d, depth=2), (1, 1, 64, 64), sizes={"x": {"min": 6, "step": 4}})


def test_global_context_is_reported():
    class Global(torch.nn.Module):
        def forward(self, x):
            return x - x.mean()

    r = probe(Global().eval(), (1, 1, 32, 32))
    assert r.outputs["output"].sizes["x"].halo == 0
    assert any("global context" in n for n in r.notes)


def test_probing_is_fast():
    """Fast by construction, not by the clock (a shared CI machine makes timed asserts flaky): a bounded
    number of network runs on inputs no larger than a few times the example."""
    from bioimgzoo.exporter._probe import ModuleRunner, probe_module

    for module, shape, axes in ((C.seeded(N.UNet3d), (1, 1, 16, 24, 24), "bczyx"),
                                (C.seeded(N.UNet2d, depth=3), (1, 1, 64, 64), "bcyx")):
        x = np.random.default_rng(0).random(shape).astype(np.float32)
        run = ModuleRunner(module, ["input"])
        voxels: list[int] = []

        def counted(arrays, run=run, voxels=voxels):
            voxels.append(int(np.prod(arrays[0].shape)))
            return run(arrays)

        probe_module(counted, {"input": x}, {"input": axes}, run([x]), ["output"])
        assert len(voxels) <= 150 and max(voxels) <= 4 * x.size and sum(voxels) <= 25 * x.size, \
            (len(voxels), max(voxels), sum(voxels))
