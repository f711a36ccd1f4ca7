"""TensorFlow packages made by their producers' own code run in bioimgzoo through ONNX.

* StarDist 0.9.2: a StarDist2D trained tiny here, exported with StarDist's
  own ``export_bioimageio`` (``export_TF``: a TF1-style SavedModel; format
  0.4.9, ``config.stardist`` with the thresholds), in an environment with
  TensorFlow 2.21 (tf-keras) and bioimageio.core 0.5.11;
* a tf.keras 2 U-Net packaged the way ZeroCostDL4Mic's notebooks (and
  DeepImageJ's) do: bioimageio.core 0.5's ``build_model`` with
  ``keras_hdf5`` weights, then ``add_weights`` with a (TF2-style)
  ``tensorflow_saved_model_bundle``.

bioimgzoo must give TensorFlow's own output (max abs <= 1e-4), StarDist's
``predict_instances`` labels exactly, run the second time from the cached
ONNX conversion offline without importing TensorFlow, and pass
``bioimgzoo validate``.  Skips, saying why, where the producers or the
``tensorflow`` extra do not install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from . import scripts
from ._build import producer_package, producer_python

pytestmark = pytest.mark.slow

FIGURES = Path.home() / ".cache" / "bioimgzoo-tests" / "figures"


def _needs_extra() -> None:
    from bioimgzoo.runtime.tf_weights import extra_installed

    if not extra_installed():
        pytest.skip("the tensorflow extra (tensorflow-cpu, tf2onnx, tf-keras) is not installed here: "
                    "pip install -e '.[tensorflow]' (scripts/setup.sh does, optionally)")


@pytest.fixture(scope="module")
def stardist_build() -> Path:
    _needs_extra()
    python = producer_python("stardist", scripts.TF_REQUIREMENTS)
    return producer_package("stardist", python, scripts.STARDIST)


@pytest.fixture(scope="module")
def keras_build() -> Path:
    _needs_extra()
    python = producer_python("stardist", scripts.TF_REQUIREMENTS)  # the same environment
    return producer_package("keras-unet", python, scripts.KERAS_UNET)


def _record(name: str, **figures) -> None:
    """Figures for the report (versions, differences, conversion time and size), kept beside the cache."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **figures}, indent=1, default=float))


def _conversion_record() -> dict:
    from bioimgzoo import config

    records = sorted((config.cache_dir() / "tf-onnx").glob("*.json"))
    return json.loads(records[-1].read_text()) if records else {}


# ----------------------------------------------------------------------------- StarDist
def test_stardist_export_predicts_tensorflows_output_and_its_labels(stardist_build):
    import bioimgzoo

    ref = np.load(stardist_build / "reference.npz")
    pkg = stardist_build / "stardist.zip"
    model = bioimgzoo.load(pkg, device="cpu")
    assert model.weights_format == "tensorflow_saved_model_bundle"
    assert model.engine.format == "onnx"  # converted, not TensorFlow
    record = _conversion_record()
    assert record["opset"] == 17 and record["ir_version"] <= 8
    diffs = {}
    for key in ("test", "other"):
        raw = model.predict(ref[f"{key}_image"], axes="yx")
        want = ref[f"{key}_tf_output"][0]
        assert raw.shape == want.shape
        diffs[key] = float(np.abs(raw - want).max())
        assert diffs[key] <= 1e-4, (key, diffs[key])
        labels = model.predict(ref[f"{key}_image"], axes="yx", labels=True)
        assert labels.shape == ref[f"{key}_labels"].shape
        assert labels.max() > 3  # trained: it finds nuclei
        np.testing.assert_array_equal(labels, ref[f"{key}_labels"])  # predict_instances, label for label
    # tiled: labels still decoded once, on the stitched output; equal to StarDist's own (untiled and tiled)
    tiled = model.predict(ref["other_image"], axes="yx", labels=True, tile=120)
    np.testing.assert_array_equal(tiled, ref["other_labels"])
    np.testing.assert_array_equal(tiled, ref["tiled_labels"])
    producer = json.loads((stardist_build / "producer.json").read_text())
    _record("stardist", versions=producer["versions"], max_abs_vs_tensorflow=max(diffs.values()),
            conversion_seconds=record["seconds"], onnx_bytes=record["bytes"], labels_identical=True,
            bundle_bytes=(pkg.stat().st_size))


_OFFLINE_NO_TF = textwrap.dedent('''
    import importlib.abc, json, sys
    import numpy as np

    BLOCKED = ("tensorflow", "tf2onnx", "tf_keras", "keras")
    tried = []

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                tried.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import bioimgzoo

    model = bioimgzoo.load(sys.argv[1], device="cpu")
    out = model.predict(np.load(sys.argv[2]), axes="yx", labels=sys.argv[3] == "labels")
    np.save(sys.argv[4], out)
    print(json.dumps({"tried": tried, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
                      "engine": model.engine.format}))
''')


def _run_without_tensorflow(tmp_path: Path, package: Path, image: np.ndarray, *,
                            labels: bool) -> tuple[dict, np.ndarray]:
    import os

    np.save(tmp_path / "image.npy", image)
    env = {**os.environ, "BIOIMGZOO_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_NO_TF, str(package), str(tmp_path / "image.npy"),
                           "labels" if labels else "raw", str(tmp_path / "out.npy")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(tmp_path / "out.npy")


def test_stardist_second_load_is_offline_and_never_imports_tensorflow(stardist_build, tmp_path):
    import bioimgzoo
    from bioimgzoo.cli.info import describe_package

    ref = np.load(stardist_build / "reference.npz")
    pkg = stardist_build / "stardist.zip"
    facts = describe_package(bioimgzoo.open_package(pkg))
    assert "converted to ONNX on first load" in facts["weights"][0]["runs_as"]
    bioimgzoo.load(pkg, device="cpu")  # the first load converts (and caches)
    facts = describe_package(bioimgzoo.open_package(pkg))
    assert "cached" in facts["weights"][0]["runs_as"]
    seen, labels = _run_without_tensorflow(tmp_path, pkg, ref["test_image"], labels=True)
    assert seen == {"tried": [], "loaded": [], "engine": "onnx"}
    np.testing.assert_array_equal(labels, ref["test_labels"])


def test_stardist_export_passes_validate(stardist_build):
    import bioimgzoo

    report = bioimgzoo.validate(stardist_build / "stardist.zip")
    failures = [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    assert report.passed, failures


def test_tensorflow_weights_convert_to_onnx_for_consumers(stardist_build, tmp_path):
    """bioimgzoo convert adds ONNX to the TF package: valid, reproduces, readable by DeepImageJ (D9)."""
    import onnx

    import bioimgzoo
    from bioimgzoo.exporter.convert import convert_package

    out = tmp_path / "stardist-onnx.zip"
    result = convert_package(stardist_build / "stardist.zip", out, to="onnx")
    (conv,) = result.converted
    assert conv.parent == "tensorflow_saved_model_bundle"
    import zipfile

    with zipfile.ZipFile(stardist_build / "stardist.zip") as old, zipfile.ZipFile(out) as new:
        old_files = {i.filename: old.read(i) for i in old.infolist() if i.filename != "rdf.yaml"}
        new_files = {i.filename: new.read(i) for i in new.infolist() if i.filename != "rdf.yaml"}
        model = onnx.load_from_string(new_files[conv.file])
    assert {k: v for k, v in new_files.items() if k != conv.file} == old_files  # byte for byte
    assert model.ir_version <= 8 and [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    report = bioimgzoo.validate(out)
    failures = [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    assert report.passed, failures
    dij = report.consumers["deepimagej"]
    assert not {"D7", "D9", "D10", "D11"} & set(dij.get("failed_rules") or []), dij
    from bioimageio.core import test_description  # the reference consumer, on the new weights

    summary = test_description(out, weight_format="onnx")
    assert summary.status == "passed", [(d.name, [e.msg[:200] for e in d.errors]) for d in summary.details
                                        if d.status != "passed"]
    onnx_model = bioimgzoo.load(out, weights="onnx", device="cpu")
    ref = np.load(stardist_build / "reference.npz")
    assert float(np.abs(onnx_model.predict(ref["other_image"], axes="yx") - ref["other_tf_output"][0]).max()) <= 1e-4
    _record("stardist", convert_seconds=conv.seconds, convert_onnx_bytes=conv.bytes)


# ----------------------------------------------------------------------------- Keras .h5 (ZeroCostDL4Mic style)
@pytest.mark.parametrize("weights", ["keras_hdf5", "tensorflow_saved_model_bundle"])
def test_keras_unet_package_predicts_tensorflows_output(keras_build, weights, tmp_path):
    import bioimgzoo

    ref = np.load(keras_build / "reference.npz")
    pkg = keras_build / "unet_keras.zip"
    model = bioimgzoo.load(pkg, weights=weights, device="cpu")
    assert model.engine.format == "onnx"
    out = model.predict(ref["other_image"], axes="yx")
    want = ref["other_output"][0, ..., 0]
    diff = float(np.abs(np.squeeze(out) - want).max())
    assert diff <= 1e-4, diff
    record = _conversion_record()
    assert record["opset"] == 17 and record["ir_version"] <= 8
    seen, again = _run_without_tensorflow(tmp_path, pkg, ref["other_image"], labels=False) \
        if weights == "tensorflow_saved_model_bundle" else ({"tried": [], "loaded": []}, out)
    assert seen["tried"] == [] and seen["loaded"] == []
    np.testing.assert_array_equal(again, out)
    producer = json.loads((keras_build / "producer.json").read_text())
    _record(f"keras-unet-{weights}", versions=producer["versions"], max_abs_vs_tensorflow=diff,
            conversion_seconds=record["seconds"], onnx_bytes=record["bytes"])


def test_keras_unet_package_passes_validate(keras_build):
    import bioimgzoo

    report = bioimgzoo.validate(keras_build / "unet_keras.zip")
    failures = [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    assert report.passed, failures


def test_stardist_labels_from_the_cli_and_from_the_decoder_alone(stardist_build, tmp_path):
    """predict --labels writes predict_instances' labels; the decoder alone, on StarDist's own prob/dist, too."""
    import tifffile
    from click.testing import CliRunner

    from bioimgzoo.cli import main
    from bioimgzoo.runtime.processing.whole_sample import stardist_instances

    ref = np.load(stardist_build / "reference.npz")
    thresholds = json.loads((stardist_build / "producer.json").read_text())["thresholds"]
    for key in ("test", "other"):  # Keras' own (grid-resolution) prob and dist -> the same labels
        got = stardist_instances(ref[f"{key}_prob"], ref[f"{key}_dist"], grid=(2, 2), upsampled=False,
                                 prob_threshold=thresholds["prob"], nms_threshold=thresholds["nms"])
        np.testing.assert_array_equal(got, ref[f"{key}_labels"])
    tifffile.imwrite(tmp_path / "nuclei.tif", ref["other_image"])
    res = CliRunner().invoke(main, ["predict", str(stardist_build / "stardist.zip"), str(tmp_path / "nuclei.tif"),
                                    "-o", str(tmp_path / "out"), "--labels"])
    assert res.exit_code == 0, res.output
    labels = tifffile.imread(tmp_path / "out" / "nuclei_labels.tif")
    np.testing.assert_array_equal(np.squeeze(labels), ref["other_labels"])


def test_a_conversion_that_does_not_reproduce_falls_back_to_tensorflow(keras_build, monkeypatch, caplog):
    """ONNX differing from TensorFlow: one warning, the model runs in TensorFlow, and that verdict is cached."""
    import logging

    import bioimgzoo
    from bioimgzoo import config
    from bioimgzoo.runtime import tf_weights

    real_run = tf_weights._Worker.run
    monkeypatch.setattr(tf_weights._Worker, "run", lambda self, xs: [o + 1.0 for o in real_run(self, xs)])
    ref = np.load(keras_build / "reference.npz")
    with caplog.at_level(logging.WARNING, logger="bioimgzoo"):
        model = bioimgzoo.load(keras_build / "unet_keras.zip", weights="keras_hdf5", device="cpu")
    assert model.engine.format == "keras_hdf5"  # TensorFlow itself
    assert any("does not reproduce TensorFlow" in r.message and "TensorFlow itself" in r.message
               for r in caplog.records), [r.message for r in caplog.records]
    out = model.predict(ref["other_image"], axes="yx")
    assert float(np.abs(np.squeeze(out) - 1.0 - ref["other_output"][0, ..., 0]).max()) <= 1e-4
    assert list((config.cache_dir() / "tf-onnx").glob("*.failed.json"))
    assert not list((config.cache_dir() / "tf-onnx").glob("*.onnx"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bioimgzoo"):
        bioimgzoo.load(keras_build / "unet_keras.zip", weights="keras_hdf5", device="cpu")
    assert any("an earlier try" in r.message for r in caplog.records)
