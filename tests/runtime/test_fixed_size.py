"""Fixed-size packages (CAREamics-style: fixed 64x64 in and out, no halo) tile seamlessly.

The package is built here as CAREamics writes them: format 0.5, fixed input
and output sizes equal to the export example, no halo, no size reference,
``pytorch_state_dict`` weights whose architecture is imported from a module
(here one the test writes and puts on ``sys.path``), and one-element-list
``fixed_zero_mean_unit_variance`` pre- and postprocessing.
"""

from __future__ import annotations

import json
import logging
import textwrap

import numpy as np
import pytest

import bioimgzoo

torch = pytest.importorskip("torch")

ARCH_MODULE = "careamics_like_unet_for_tests"
ARCH_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    def _block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
                             nn.ReLU())


    class UNet(nn.Module):
        """A depth-2 U-Net: sizes must be multiples of 4; receptive field well over 10 pixels."""

        def __init__(self, base: int = 4):
            super().__init__()
            self.e1, self.e2, self.bottom = _block(1, base), _block(base, 2 * base), _block(2 * base, 4 * base)
            self.u2 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)
            self.d2 = _block(4 * base, 2 * base)
            self.u1 = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
            self.d1 = _block(2 * base, base)
            self.head = nn.Conv2d(base, 1, 1)

        def forward(self, x):
            s1 = self.e1(x)
            s2 = self.e2(nn.functional.max_pool2d(s1, 2))
            b = self.bottom(nn.functional.max_pool2d(s2, 2))
            y = self.d2(torch.cat([self.u2(b), s2], 1))
            return self.head(self.d1(torch.cat([self.u1(y), s1], 1)))
''')
MEAN_IN, STD_IN, MEAN_OUT, STD_OUT = 100.0, 20.0, 3.0, 0.5
EPS = 1e-6


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    import importlib
    import sys

    folder = tmp_path_factory.mktemp("arch")
    (folder / f"{ARCH_MODULE}.py").write_text(ARCH_SOURCE)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(ARCH_MODULE)
        torch.manual_seed(0)
        net = module.UNet().eval()
        for p in net.parameters():  # weights large enough that far pixels still matter
            p.data = torch.randn(p.shape) * 0.4
        yield net
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(ARCH_MODULE, None)


def _net(net, x: np.ndarray) -> np.ndarray:
    """The whole-image prediction of the network, with the package's processing, in float64 arithmetic."""
    with torch.no_grad():
        xin = torch.from_numpy(((x - MEAN_IN) / (STD_IN + EPS)).astype(np.float32)[None, None])
        y = net(xin).numpy()[0, 0].astype(np.float64)
    return (y - MEAN_OUT) / (STD_OUT + EPS)


@pytest.fixture(scope="module")
def careamics_package(tmp_path_factory, arch):
    from bioimageio.spec import save_bioimageio_package_as_folder
    from bioimageio.spec.model import v0_5 as s

    folder = tmp_path_factory.mktemp("careamics")
    x = (np.random.default_rng(0).random((64, 64)) * 80 + 60).astype(np.float32)
    np.save(folder / "input.npy", x[None, None])
    np.save(folder / "output.npy", _net(arch, x).astype(np.float32)[None, None])
    torch.save(arch.state_dict(), folder / "weights.pth")
    (folder / "README.md").write_text("# CAREamics-style test model\n")

    def axes(names: str):
        return [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier(names)]),
                s.SpaceInputAxis(id=s.AxisId("y"), size=64), s.SpaceInputAxis(id=s.AxisId("x"), size=64)]

    def zmuv(mean: float, std: float):
        return s.FixedZeroMeanUnitVarianceDescr(kwargs=s.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=[mean], std=[std], axis=s.AxisId("channel")))

    out_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier("prediction")]),
                s.SpaceOutputAxis(id=s.AxisId("y"), size=64), s.SpaceOutputAxis(id=s.AxisId("x"), size=64)]
    descr = s.ModelDescr(
        name="careamics style n2v", description="fixed 64x64, no halo, like CAREamics exports",
        authors=[s.Author(name="bioimgzoo tests")], cite=[s.CiteEntry(text="t", doi=s.Doi("10.1234/5678"))],
        license=s.LicenseId("BSD-3-Clause"), documentation=s.FileDescr(source=folder / "README.md"),
        inputs=[s.InputTensorDescr(id=s.TensorId("input"), axes=axes("raw"),
                                   test_tensor=s.FileDescr(source=folder / "input.npy"),
                                   preprocessing=[zmuv(MEAN_IN, STD_IN)])],
        outputs=[s.OutputTensorDescr(id=s.TensorId("prediction"), axes=out_axes,
                                     test_tensor=s.FileDescr(source=folder / "output.npy"),
                                     postprocessing=[zmuv(MEAN_OUT, STD_OUT)])],
        weights=s.WeightsDescr(pytorch_state_dict=s.PytorchStateDictWeightsDescr(
            source=folder / "weights.pth", pytorch_version=s.Version(torch.__version__.split("+")[0]),
            architecture=s.ArchitectureFromLibraryDescr(import_from=ARCH_MODULE, callable=s.Identifier("UNet"),
                                                        kwargs={"base": 4}))),
    )
    save_bioimageio_package_as_folder(descr, output_path=folder / "pkg")
    return folder / "pkg" / "rdf.yaml"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.slow
def test_careamics_style_package_tiles_seamlessly(careamics_package, arch, caplog, tmp_path):
    big = (np.random.default_rng(1).random((256, 256)) * 80 + 60).astype(np.float32)
    whole = _net(arch, big)
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    before = CliRunner().invoke(main, ["info", str(careamics_package)])
    assert before.exit_code == 0
    assert "declares no halo" in before.output and "measured once at the first tiled prediction" in before.output
    model = bioimgzoo.load(careamics_package, trust_code=True)
    # the package's own test: 64 in, 64 out
    test_in = np.load(careamics_package.parent / "input.npy")
    assert _rel(model.predict(test_in, axes="bcyx"), np.load(careamics_package.parent / "output.npy")) < 1e-5

    with caplog.at_level(logging.INFO, logger="bioimgzoo"):
        default = model.predict(big)[0]
    assert default.shape == (256, 256)
    assert _rel(default, whole) < 1e-4
    # larger windows are used when a timing says they are faster (a loaded machine may say no): either way exact
    assert ("the network takes larger ones, so the image runs as one 256x256 window" in caplog.text
            or "tiles of 64x64 overlap by the measured receptive field" in caplog.text), caplog.text
    assert caplog.text.count("measured the receptive field") == 1

    # the declared 64x64 windows overlapped by the radius (a stride of 18 that would misalign the U-Net's two
    # poolings): windows start at multiples of the network's period, so tiles still equal the whole image
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bioimgzoo"):
        declared = model.predict(big, tile=64)[0]
    assert "tiles of 64x64 overlap by the measured receptive field" in caplog.text
    assert _rel(declared, whole) < 1e-4

    # tiles of 128 (a size the network takes, though the package declares 64) overlap by the field
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bioimgzoo"):
        tiled = model.predict(big, tile=128)[0]
    assert "tiles of 128x128 overlap by the measured receptive field" in caplog.text
    assert _rel(tiled, whole) < 1e-4

    # measured once per weights: stored by sha256 in the cache, read back by a fresh load
    stored = list((bioimgzoo.config.cache_dir() / "receptive-fields").glob("*.json"))
    assert len(stored) == 1
    radius = json.loads(stored[0].read_text())["inputs"]["input"]["measure"]["radius"]
    assert radius["y"] >= 10 and radius["x"] >= 10  # two poolings of 3x3 convolutions
    after = CliRunner().invoke(main, ["info", str(careamics_package)])
    assert f"measured receptive field y: {radius['y']} px" in after.output
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bioimgzoo"):
        again = bioimgzoo.load(careamics_package, trust_code=True).predict(big, tile=128)[0]
    assert "measured the receptive field" not in caplog.text
    np.testing.assert_array_equal(again, tiled)


@pytest.mark.slow
def test_strict_sizes_keeps_the_declared_contract_and_its_seams(careamics_package, arch):
    """strict_sizes: 64x64 windows, no overlap, as declared; the seams are there, at the tile edges."""
    big = (np.random.default_rng(1).random((256, 256)) * 80 + 60).astype(np.float32)
    whole = _net(arch, big)
    strict = bioimgzoo.load(careamics_package, trust_code=True, strict_sizes=True).predict(big)[0]
    err = np.abs(strict - whole) / np.abs(whole).max()
    # distance of each row/column to the nearest inner tile edge (64, 128, 192)
    d = np.min(np.abs(np.arange(256)[:, None] + 0.5 - np.array([64, 128, 192])[None]), axis=1)
    seams = (d[:, None] < 2) | (d[None, :] < 2)
    centres = (d[:, None] > 24) & (d[None, :] > 24)  # farther from every inner edge than the field reaches
    assert err[seams].max() > 1e-2  # seams, well above rounding
    assert err[centres].max() < 1e-4  # and only there: each tile's centre is the whole-image prediction
    assert not (bioimgzoo.config.cache_dir() / "receptive-fields").exists()  # nothing measured


def test_measured_receptive_field_of_known_networks():
    """Radius exactly that of the convolutions; fixed declared sizes found to accept larger windows."""
    from fractions import Fraction

    from bioimgzoo.descr.axes import AxisInfo
    from bioimgzoo.descr.sizes import AxisSizes
    from bioimgzoo.descr.tensors import TensorSpec
    from bioimgzoo.runtime.receptive_field import measure_receptive_field

    def spec(tid, sizes):
        axes = (AxisInfo("batch", "batch", None), AxisInfo("channel", "channel", 1),
                AxisInfo("y", "space", 32), AxisInfo("x", "space", 32))
        return TensorSpec(tid, axes, sizes, {a.id: 1.0 for a in axes}, {}, "float32")

    fixed = {"batch": None, "channel": AxisSizes(1), "y": AxisSizes(32), "x": AxisSizes(32)}
    primary, out = spec("in", fixed), spec("out", fixed)
    links = {"out": {"y": ("y", Fraction(1), 0), "x": ("x", Fraction(1), 0)}}
    for kernels, radius in (((3, 3), 2), ((5, 3), 3), ((7, 5, 3), 6)):
        net = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, k, padding=k // 2) for k in kernels]).eval()

        def run(arrays, net=net):
            with torch.no_grad():
                return [net(torch.from_numpy(arrays[0])).numpy()]

        m = measure_receptive_field(run, primary, [out], links, ["y", "x"])
        assert m.radius == {"y": radius, "x": radius}
        assert m.accepted == {"y": (32, 8), "x": (32, 8)}
    # a network that takes only its declared size: no larger windows
    strict_net = torch.nn.Conv2d(1, 1, 3, padding=1).eval()

    def only_32(arrays):
        if arrays[0].shape[-1] != 32:
            raise RuntimeError("size")
        with torch.no_grad():
            return [strict_net(torch.from_numpy(arrays[0])).numpy()]

    m = measure_receptive_field(only_32, primary, [out], links, ["y", "x"])
    assert m.accepted == {"y": None, "x": None} and m.radius == {"y": 1, "x": 1} and not m.faster


@pytest.mark.slow
def test_cli_strict_sizes(careamics_package, arch, tmp_path):
    """predict --strict-sizes gives the declared-contract result, the default the seamless one."""
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    big = (np.random.default_rng(1).random((256, 256)) * 80 + 60).astype(np.float32)
    np.save(tmp_path / "img.npy", big)
    whole = _net(arch, big)
    results = {}
    for flag in ([], ["--strict-sizes"]):
        out = tmp_path / ("strict" if flag else "default")
        r = CliRunner().invoke(main, ["predict", str(careamics_package), str(tmp_path / "img.npy"), "-o", str(out),
                                      "--axes", "yx", "--trust-code", *flag])
        assert r.exit_code == 0, r.output
        (written,) = out.glob("img*prediction*.npy")
        results[bool(flag)] = np.load(written).reshape(256, 256)
    assert _rel(results[False], whole) < 1e-4
    assert _rel(results[True], whole) > 1e-2


def test_a_radius_wider_than_half_the_fixed_window_gets_no_verdict_not_an_error():
    # a fixed 64-pixel window and a receptive field of 40 (or a measured 25 checked again at 2 * 25 + 1): no
    # pixel of such a window has full context, so the shifted-window check has nothing to compare -- it once
    # raised plan_axis' "halo 51 leaves nothing of a 64-pixel window" out of predict (a CAREamics export)
    from bioimgzoo.descr.sizes import AxisSizes
    from bioimgzoo.runtime.receptive_field.measure import FieldMeasure, translation_check

    m = FieldMeasure("input", {"y": 40, "x": 40}, {"y": None, "x": None}, False, {"y": 64, "x": 64})
    declared = {"y": AxisSizes(64), "x": AxisSizes(64)}
    assert translation_check(object(), declared, m) == m  # the runner is never called: nothing to run
