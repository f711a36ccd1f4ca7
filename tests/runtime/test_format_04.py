"""A package in format 0.4 (built with bioimageio.spec's 0.4 classes) runs like its 0.5 twin."""

from __future__ import annotations

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo import testing as T

v04 = pytest.importorskip("bioimageio.spec.model.v0_4")


@pytest.fixture(scope="module")
def package_04(tmp_path_factory):
    import torch
    from bioimageio.spec import save_bioimageio_package_as_folder
    from bioimageio.spec.model.v0_4 import (
        Author, CiteEntry, InputTensorDescr, OnnxWeightsDescr, OutputTensorDescr, ParameterizedInputShape,
        ImplicitOutputShape, ScaleRangeDescr, ScaleRangeKwargs, SigmoidDescr, TorchscriptWeightsDescr, WeightsDescr,
        ModelDescr, ZeroMeanUnitVarianceDescr, ZeroMeanUnitVarianceKwargs,
    )

    folder = tmp_path_factory.mktemp("v04")
    module = T.SameConv().eval()
    x = np.random.default_rng(1).random((1, 1, 64, 64), dtype=np.float32) * 50
    np.save(folder / "in.npy", x)
    ts = torch.jit.trace(module, torch.from_numpy(x))
    ts.save(str(folder / "w.pt"))
    with torch.no_grad():
        raw = module(torch.from_numpy((x - x.mean()) / (x.std() + 1e-6))).numpy()
    np.save(folder / "out.npy", 1 / (1 + np.exp(-raw)))
    (folder / "README.md").write_text("# old model\n")
    descr = ModelDescr(
        format_version="0.4.10", name="old format model", description="format 0.4", authors=[Author(name="t")],
        cite=[CiteEntry(text="t", doi="10.1234/5678")], license="MIT", documentation=folder / "README.md",
        test_inputs=[folder / "in.npy"], test_outputs=[folder / "out.npy"], timestamp="2020-01-01T00:00:00",
        inputs=[InputTensorDescr(name="raw", axes="bcyx", data_type="float32",
                                 shape=ParameterizedInputShape(min=[1, 1, 32, 32], step=[0, 0, 16, 16]),
                                 preprocessing=[ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(
                                     mode="per_sample", axes="yx"))])],
        outputs=[OutputTensorDescr(name="prob", axes="bcyx", data_type="float32",
                                   shape=ImplicitOutputShape(reference_tensor="raw", scale=[1, 1, 1, 1], offset=[0, 0, 0, 0]),
                                   halo=[0, 0, 4, 4], postprocessing=[SigmoidDescr()])],
        weights=WeightsDescr(torchscript=TorchscriptWeightsDescr(source=folder / "w.pt", pytorch_version="2.13")),
    )
    save_bioimageio_package_as_folder(descr, output_path=folder / "pkg")
    return folder / "pkg" / "rdf.yaml", x, np.load(folder / "out.npy")


def test_format_04_package_runs(package_04):
    rdf, x, expected = package_04
    model = bioimgzoo.load(rdf)
    assert model.package.original_format_version.startswith("0.4")
    out = model.predict(x, axes="bcyx")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # and tiles like any other: sizes 32 + k*16, halo 4
    big = np.random.default_rng(2).random((160, 144), dtype=np.float32)
    np.testing.assert_allclose(model.predict(big, tile=48), model.predict(big), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def package_04_fixed_halo(tmp_path_factory):
    """Format 0.4 as real zoo models wrote it: fixed 64x64 input, fixed 64x64 output with a halo (which 0.5
    refuses: "output axis with halo and fixed size not allowed")."""
    import torch
    from bioimageio.spec import save_bioimageio_package_as_folder
    from bioimageio.spec.model.v0_4 import (
        Author, CiteEntry, InputTensorDescr, ModelDescr, OutputTensorDescr, TorchscriptWeightsDescr, WeightsDescr,
    )

    folder = tmp_path_factory.mktemp("v04fixed")
    module = T.SameConv().eval()  # receptive-field radius 2: a halo of 4 covers it
    x = np.random.default_rng(3).standard_normal((1, 1, 64, 64)).astype(np.float32)
    np.save(folder / "in.npy", x)
    torch.jit.trace(module, torch.from_numpy(x)).save(str(folder / "w.pt"))
    with torch.no_grad():
        np.save(folder / "out.npy", module(torch.from_numpy(x)).numpy())
    (folder / "README.md").write_text("# fixed-size model\n")
    descr = ModelDescr(
        format_version="0.4.10", name="fixed size halo model", description="format 0.4, fixed sizes, halo",
        authors=[Author(name="t")], cite=[CiteEntry(text="t", doi="10.1234/5678")], license="MIT",
        documentation=folder / "README.md", test_inputs=[folder / "in.npy"], test_outputs=[folder / "out.npy"],
        timestamp="2022-01-01T00:00:00",
        inputs=[InputTensorDescr(name="raw", axes="bcyx", data_type="float32", shape=[1, 1, 64, 64])],
        outputs=[OutputTensorDescr(name="out", axes="bcyx", data_type="float32", shape=[1, 1, 64, 64],
                                   halo=[0, 0, 4, 4])],
        weights=WeightsDescr(torchscript=TorchscriptWeightsDescr(source=folder / "w.pt", pytorch_version="2.13")),
    )
    save_bioimageio_package_as_folder(descr, output_path=folder / "pkg")
    return folder / "pkg" / "rdf.yaml", module


def test_format_04_fixed_output_with_halo_runs_and_tiles_seamlessly(package_04_fixed_halo):
    import torch

    rdf, module = package_04_fixed_halo
    model = bioimgzoo.load(rdf)
    assert any("with halo [0, 0, 4, 4] read as the size of input 'raw'" in w for w in model.package.warnings)
    assert model.outputs[0].halo == {"y": 4, "x": 4}
    folder = rdf.parent
    np.testing.assert_allclose(model.predict(np.load(folder / "in.npy"), axes="bcyx"), np.load(folder / "out.npy"),
                               rtol=1e-5, atol=1e-6)
    # a larger image: 64x64 windows overlapping by the declared halo, equal to the whole-image prediction
    big = np.random.default_rng(4).standard_normal((200, 150)).astype(np.float32)
    with torch.no_grad():
        whole = module(torch.from_numpy(big)[None, None]).numpy()[0, 0]
    tiled = model.predict(big)
    assert tiled.shape[-2:] == (200, 150)
    np.testing.assert_allclose(tiled.reshape(200, 150), whole, rtol=1e-5, atol=1e-5)
