"""PyTorch packages made by their producers' own code run in bioimgzoo with their producers' outputs.

* torch-em 0.10.9: a ``UNet2d`` trained for four iterations by torch-em's
  own trainer (which writes the checkpoint torch-em's export reads),
  exported with ``torch_em.util.modelzoo.export_bioimageio_model`` (format
  0.5, ``pytorch_state_dict`` with torch-em's ``unet.py`` as the
  architecture file; torch-em's ``add_weight_formats`` raises
  NotImplementedError in 0.10.9, so the package carries no other format),
  predicted by torch-em's own ``predict_with_padding`` with the trainer's
  normalizer;
* BiaPy 3.7.1: a 2D semantic-segmentation U-Net trained for one epoch with
  ``BiaPy.train``, exported with ``BiaPy.export_model_to_bmz`` (a
  ``model.py`` of BiaPy's collected sources, which imports torchvision; a
  fixed 64x64 input), predicted by ``BiaPy.predict``;
* CAREamics 0.3.5: N2V trained for one epoch (``CAREamist.train``),
  exported with ``CAREamist.export_to_bmz`` (fixed 64x64, no halo, the
  architecture imported from ``careamics.models.unet``), predicted by
  ``CAREamist.predict`` on the whole image.

All three import torchvision, which needs the torch 2.14.1 / torchvision
0.29.1 pair here (~5.5 GB, one venv; the producers' venvs layer on it:
``scripts.TORCH_PAIR``, ``_build.layered_python``).  Where a package's code
needs torchvision (BiaPy's ``model.py``) or its producer (CAREamics'
``import_from``), bioimgzoo runs it in a venv layered on the same pair and
converts it to ONNX and TorchScript, which then run here (torch 2.13.0, no
torchvision).  bioimgzoo must give the producer's raw output within 1e-4
for every weight format.  Skips, saying why (pip's last lines), where a
producer does not install.

The other direction (a bioimgzoo export passes BiaPy's own
``check_bmz_model_compatibility`` and BiaPy's ``build_bmz_model`` gives our
output) is tested in ``tests/exporter/test_readers_venvs.py::test_biapy_accepts_and_loads_the_network``
(issue 19), not repeated here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from . import scripts
from ._build import layered_python, producer_package, producer_python

pytestmark = pytest.mark.slow

FIGURES = Path.home() / ".cache" / "bioimgzoo-tests" / "figures"


def _record(name: str, **figures) -> None:
    """Figures for the report (versions, differences, size, time), kept beside the cache."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **figures}, indent=1, default=float))


@pytest.fixture(scope="module")
def torch_pair() -> Path:
    """torch 2.14.1 with torchvision 0.29.1 (~5.5 GB; the producers' venvs layer on it: see scripts.TORCH_PAIR)."""
    return producer_python("torch-pair", scripts.TORCH_PAIR)


@pytest.fixture(scope="module")
def torch_em_build(torch_pair) -> Path:
    python = layered_python("torch-em", torch_pair, scripts.TORCH_EM_REQUIREMENTS)
    return producer_package("torch-em", python, scripts.TORCH_EM)


@pytest.fixture(scope="module")
def biapy_build(torch_pair) -> Path:
    python = layered_python("biapy-producer", torch_pair, scripts.BIAPY_REQUIREMENTS)
    return producer_package("biapy", python, scripts.BIAPY)


REPO = Path(__file__).resolve().parents[2]


def _bioimgzoo_requirements() -> list[str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.fixture(scope="module")
def torchvision_python(torch_pair) -> Path:
    """bioimgzoo's requirements beside torch 2.14.1 and torchvision 0.29.1 (layered, not copied)."""
    return layered_python("bioimgzoo-torchvision", torch_pair, _bioimgzoo_requirements())


# ----------------------------------------------------------------------------- torch-em
def test_torch_em_export_predicts_torch_ems_output(torch_em_build):
    import bioimgzoo
    from bioimgzoo.descr.weights import present_formats

    ref = np.load(torch_em_build / "reference.npz")
    pkg = torch_em_build / "torch_em.zip"
    formats = present_formats(bioimgzoo.open_package(pkg).descr)
    assert formats == ["pytorch_state_dict"]  # torch-em 0.10.9 writes no other format (see the module doc)
    diffs = {}
    for fmt in formats:
        t = time.perf_counter()
        model = bioimgzoo.load(pkg, weights=fmt, device="cpu", trust_code=True)  # the package's unet.py runs
        for key in ("test", "other"):
            raw = model.predict(ref[f"{key}_image"], axes="yx")
            want = ref[f"{key}_output"][0, 0]
            assert np.squeeze(raw).shape == want.shape
            diffs[f"{fmt}/{key}"] = float(np.abs(np.squeeze(raw) - want).max())
            assert diffs[f"{fmt}/{key}"] <= 1e-4, (fmt, key, diffs[f"{fmt}/{key}"])
        seconds = time.perf_counter() - t
    # torch-em reads its own package back to the same output (the producers agree with themselves)
    assert float(np.abs(ref["other_output_imported"] - ref["other_output"]).max()) <= 1e-5
    assert 0.0 < float(ref["other_output"].min()) and float(ref["other_output"].max()) < 1.0  # sigmoid, not a stub
    producer = json.loads((torch_em_build / "producer.json").read_text())
    _record("torch-em", versions=producer["versions"], max_abs_vs_producer=max(diffs.values()), diffs=diffs,
            package_bytes=pkg.stat().st_size, bioimgzoo_load_and_predict_seconds=seconds,
            producer_train_seconds=producer["train_seconds"], producer_export_seconds=producer["export_seconds"])


def test_torch_em_export_validates_but_for_tiling_which_its_instance_norm_forbids(torch_em_build):
    """Everything passes but tiling: torch-em's UNet2d normalizes each window (InstanceNorm, its default), so
    no halo makes tiles agree with the whole image, and torch-em declares halo = step // 2 (2 here).

    bioimgzoo predicts such a model whole (the default for images of a sensible size) and says so in validate.
    """
    import bioimgzoo

    report = bioimgzoo.validate(torch_em_build / "torch_em.zip", trust_code=True)
    failures = [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    assert [check for check, _ in failures] == ["agreement.tiling"], failures
    assert "declared halo (2, 2)" in failures[0][1]


def test_torchscript_written_by_torch_2_14_loads_in_this_torch(torch_em_build):
    """torch-em's venv has torch 2.14.1; a module it traces loads in this environment's torch and agrees."""
    import torch

    ref = np.load(torch_em_build / "reference.npz")
    traced = torch.jit.load(str(torch_em_build / "traced.pt"), map_location="cpu")
    x = ref["test_image"]
    x = ((x - x.mean()) / (x.std() + 1e-7)).astype(np.float32)  # torch-em's standardize
    with torch.no_grad():
        y = traced(torch.from_numpy(x[None, None])).numpy()
    assert float(np.abs(y - ref["test_output"]).max()) <= 1e-5
    _record("torch-em", torchscript_2_14_1_loads_in=torch.__version__)


def test_torch_em_export_converts_to_onnx_and_torchscript(torch_em_build, tmp_path):
    """bioimgzoo convert on the real torch-em package: each added format gives torch-em's own output."""
    import bioimgzoo
    from bioimgzoo.exporter.convert import convert_package

    ref = np.load(torch_em_build / "reference.npz")
    out = tmp_path / "torch_em-converted.zip"
    result = convert_package(torch_em_build / "torch_em.zip", out, to="onnx,torchscript", trust_code=True)
    assert sorted(c.format for c in result.converted) == ["onnx", "torchscript"]
    diffs = {}
    for fmt in ("onnx", "torchscript"):
        model = bioimgzoo.load(out, weights=fmt, device="cpu")  # no code runs: trust_code not needed
        raw = np.squeeze(model.predict(ref["other_image"], axes="yx"))
        diffs[fmt] = float(np.abs(raw - ref["other_output"][0, 0]).max())
        assert diffs[fmt] <= 1e-4, (fmt, diffs[fmt])
    _record("torch-em", converted_max_abs_vs_producer=diffs,
            converted={c.format: {"seconds": c.seconds, "bytes": c.bytes} for c in result.converted})


# ----------------------------------------------------------------------------- BiaPy
_BIOIMGZOO_BESIDE_TORCHVISION = r'''
import json, sys
import numpy as np
import torch, torchvision
import bioimgzoo
from bioimgzoo.exporter.convert import convert_package

pkg, ref, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
model = bioimgzoo.load(pkg, device="cpu", trust_code=True)  # BiaPy's model.py runs (it imports torchvision)
preds = {key: np.asarray(model.predict(ref[key], axes="yx")) for key in ref.files if key.endswith("_image")}
np.savez(out + ".npz", **preds)
conv = convert_package(pkg, out, to="onnx,torchscript", trust_code=True)
print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__, "bioimgzoo": bioimgzoo.__file__,
                  "converted": {c.format: {"seconds": c.seconds, "bytes": c.bytes, "max_abs_vs_parent":
                                           c.max_abs_vs_parent} for c in conv.converted}}))
'''


def test_biapy_package_names_torchvision_where_it_is_missing(biapy_build):
    """BiaPy's model.py imports torchvision; beside this torch it does not load: one message, with the ways out."""
    import bioimgzoo
    from bioimgzoo.errors import WeightsError

    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here: the package runs in this environment (see the next test)")
    with pytest.raises(WeightsError, match=r"imports 'torchvision', which is not installed.*--weights onnx"):
        bioimgzoo.load(biapy_build / "biapy.zip", device="cpu", trust_code=True)


def _bioimgzoo_beside(python: Path, package: Path, ref, out: Path) -> dict:
    """bioimgzoo (this source tree) run with ``python`` on ``package``: its predictions of ``ref``'s images, and
    the package converted to ONNX and TorchScript (``out / "converted.zip"``)."""
    import os
    import subprocess

    np.savez(out / "images.npz", **{k: ref[k] for k in ref.files if k.endswith("_image")})
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    t = time.perf_counter()
    proc = subprocess.run([str(python), "-c", _BIOIMGZOO_BESIDE_TORCHVISION, str(package), str(out / "images.npz"),
                           str(out / "converted.zip")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there["bioimgzoo"].startswith(str(REPO)) and there["torch"].startswith("2.14"), there
    return {"seconds": time.perf_counter() - t, "converted": out / "converted.zip", "converted_formats":
            there["converted"], "predictions": np.load(out / "converted.zip.npz"), "torch": there["torch"]}


@pytest.fixture(scope="module")
def biapy_beside_torchvision(biapy_build, torchvision_python, tmp_path_factory) -> dict:
    return _bioimgzoo_beside(torchvision_python, biapy_build / "biapy.zip", np.load(biapy_build / "reference.npz"),
                             tmp_path_factory.mktemp("biapy"))


def test_biapy_export_predicts_biapys_output(biapy_build, biapy_beside_torchvision):
    """With torchvision (BiaPy's torch 2.14.1 venv), bioimgzoo runs BiaPy's state dict to BiaPy.predict's output
    and converts it; the ONNX and TorchScript it writes then give the same here, without torchvision."""
    import bioimgzoo

    ref = np.load(biapy_build / "reference.npz")
    pkg = biapy_build / "biapy.zip"
    preds = biapy_beside_torchvision["predictions"]
    diffs = {}
    keys = sorted(k[:-len("_image")] for k in ref.files if k.endswith("_image"))
    for key in keys:
        want = ref[f"{key}_biapy"][..., 0]  # BiaPy.predict: (y, x, channel)
        assert 0.0 < float(want.min()) and float(want.max()) < 1.0  # probabilities, not a stub
        diffs[f"pytorch_state_dict/{key}"] = float(np.abs(np.squeeze(preds[f"{key}_image"]) - want).max())
    for fmt in ("onnx", "torchscript"):  # here: torch 2.13.0, no torchvision, no code run
        model = bioimgzoo.load(biapy_beside_torchvision["converted"], weights=fmt, device="cpu")
        for key in keys:
            got = np.squeeze(model.predict(ref[f"{key}_image"], axes="yx"))
            diffs[f"{fmt}/{key}"] = float(np.abs(got - ref[f"{key}_biapy"][..., 0]).max())
    assert max(diffs.values()) <= 1e-4, diffs
    producer = json.loads((biapy_build / "producer.json").read_text())
    _record("biapy", versions=producer["versions"], max_abs_vs_producer=max(diffs.values()), diffs=diffs,
            package_bytes=pkg.stat().st_size, bioimgzoo_beside_torchvision_seconds=biapy_beside_torchvision["seconds"],
            converted=biapy_beside_torchvision["converted_formats"], producer_train_seconds=producer["train_seconds"],
            producer_export_seconds=producer["export_seconds"])


def test_biapy_export_converted_validates_but_for_tiling(biapy_beside_torchvision):
    """The converted package reproduces BiaPy's own test output; only tiling fails: BiaPy's U-Net normalizes
    each window (``normalization: in``), so its declared halo (size // 8) cannot make tiles agree."""
    import bioimgzoo

    report = bioimgzoo.validate(biapy_beside_torchvision["converted"], weights="onnx")
    failures = [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    assert [check for check, _ in failures] == ["agreement.tiling"], failures
    assert "declared halo (8, 8)" in failures[0][1]


# ----------------------------------------------------------------------------- CAREamics
@pytest.fixture(scope="module")
def careamics_python(torch_pair) -> Path:
    return layered_python("careamics", torch_pair, scripts.CAREAMICS_REQUIREMENTS, no_deps=scripts.CAREAMICS_NO_DEPS)


@pytest.fixture(scope="module")
def careamics_build(careamics_python) -> Path:
    return producer_package("careamics", careamics_python, scripts.CAREAMICS)


@pytest.fixture(scope="module")
def careamics_beside(careamics_build, careamics_python, tmp_path_factory) -> dict:
    """bioimgzoo beside CAREamics (its architecture is ``import_from: careamics.models.unet``)."""
    python = layered_python("bioimgzoo-careamics", careamics_python, _bioimgzoo_requirements())
    return _bioimgzoo_beside(python, careamics_build / "careamics.zip", np.load(careamics_build / "reference.npz"),
                             tmp_path_factory.mktemp("careamics"))


def test_careamics_export_predicts_careamics_output(careamics_build, careamics_beside):
    """CAREamics' own export (fixed 64x64 input, no halo, fixed normalization in and out): bioimgzoo gives
    CAREamist.predict's output on the test image (one window) and on a larger one (tiled here, whole in
    CAREamics), with the state dict beside CAREamics and with the ONNX/TorchScript it converts, here."""
    import bioimgzoo

    ref = np.load(careamics_build / "reference.npz")
    pkg = careamics_build / "careamics.zip"
    preds = careamics_beside["predictions"]
    diffs = {}
    for key in ("test", "other"):
        diffs[f"pytorch_state_dict/{key}"] = float(np.abs(np.squeeze(preds[f"{key}_image"])
                                                          - ref[f"{key}_careamics"]).max())
    for fmt in ("onnx", "torchscript"):  # here: torch 2.13.0, no careamics, no torchvision
        model = bioimgzoo.load(careamics_beside["converted"], weights=fmt, device="cpu")
        for key in ("test", "other"):
            got = np.squeeze(model.predict(ref[f"{key}_image"], axes="yx"))
            diffs[f"{fmt}/{key}"] = float(np.abs(got - ref[f"{key}_careamics"]).max())
    assert float(np.abs(ref["other_careamics"] - ref["other_image"]).max()) > 1.0  # it denoises, not a stub
    producer = json.loads((careamics_build / "producer.json").read_text())
    _record("careamics", versions=producer["versions"], max_abs_vs_producer=max(diffs.values()), diffs=diffs,
            package_bytes=pkg.stat().st_size, bioimgzoo_beside_careamics_seconds=careamics_beside["seconds"],
            converted=careamics_beside["converted_formats"], producer_train_seconds=producer["train_seconds"],
            producer_export_seconds=producer["export_seconds"])
    assert max(diffs.values()) <= 1e-4, diffs
