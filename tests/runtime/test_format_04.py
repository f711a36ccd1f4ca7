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
