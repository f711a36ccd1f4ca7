"""A 1-input, 1-output 2D U-Net exported with the defaults runs in every consumer tool.

Checked on the written zip only (not on the exporter's bookkeeping): the consumer checkers of
``bioimgzoo.validation.consumers`` (consumer-rules.md), a few of those rules re-read here straight
from ``rdf.yaml`` and the ONNX file, and bioimageio.spec's own warnings.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import yaml

from bioimgzoo.testing import checks as C
from bioimgzoo.testing import nets as N

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def unet_zip(tmp_path_factory):
    from bioimgzoo.exporter import export_package

    out = tmp_path_factory.mktemp("consumers") / "unet.zip"
    example = np.random.default_rng(0).random((1, 1, 64, 64)).astype(np.float32)
    result = export_package(C.seeded(N.UNet2d, depth=2), example, out, name="Consumer U-Net 2D",
                            **C.meta(maintainers=[{"name": "Test Author", "github_user": "bioimageiobot"}]),
                            task="semantic-segmentation",
                            preprocessing=[{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}],
                            postprocessing=[{"id": "sigmoid"}])
    return out, result


def _rdf(zip_path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


@pytest.mark.slow
def test_every_consumer_rule_passes(unet_zip, tmp_path):
    consumers = pytest.importorskip("bioimgzoo.validation.consumers")
    from bioimgzoo.package import open_package

    zip_path, result = unet_zip
    verdicts = consumers.consumer_verdicts(open_package(zip_path))
    folder = tmp_path / "unzipped"  # QuPath opens an unpacked package (Q1)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    verdicts["qupath"] = consumers.consumer_verdicts(open_package(folder), tools=["qupath"])["qupath"]
    for tool in ("deepimagej", "ilastik", "qupath", "biapy"):
        v = verdicts[tool]
        assert v.status == "passed", f"{tool}: {v.failed_rules} {getattr(v, 'reasons', '')}"
        assert not [f for f in v.findings if f.status in ("failed", "skipped")], tool
    # what the summary says is what the checkers say
    by_tool = {v["tool"]: v for v in result.verdicts}
    assert all(by_tool[t]["status"] == "passed" for t in ("deepimagej", "ilastik", "qupath", "biapy"))


@pytest.mark.slow
def test_rdf_is_written_as_every_consumer_reads_it(unet_zip):
    zip_path, _ = unet_zip
    rdf = _rdf(zip_path)
    major, minor, patch = map(int, rdf["format_version"].split("."))
    assert (major, minor) == (0, 5) and patch >= 3
    assert "covers" in rdf and rdf["id"]
    assert "semantic-segmentation" in rdf["tags"]  # BiaPy's workflow tag (B3)
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    in_ids = [a["id"] for a in inp["axes"]]
    assert in_ids == ["batch", "channel", "y", "x"]  # every id explicit (D12), bcyx (B4)
    assert [a["id"] for a in out["axes"]] == in_ids  # the input's order (I4, Q4)
    for a in inp["axes"] + out["axes"]:
        assert "type" in a and "time" != a["type"]
        if a["type"] == "channel":
            assert a["channel_names"]
    for a in inp["axes"]:
        if isinstance(a.get("size"), dict):
            assert a["size"]["min"] % a["size"]["step"] == 0  # D16, Q4
    for a in out["axes"][2:]:
        assert a["size"]["tensor_id"] == "input" and a["size"].get("offset", 0) == 0 and a.get("scale", 1) == 1
    w = rdf["weights"]
    assert w["torchscript"]["source"].endswith(".pt") and ".pt" not in w["torchscript"]["source"][:-3]
    assert w["torchscript"]["pytorch_version"]
    assert "kwargs" in w["pytorch_state_dict"]["architecture"]  # B2
    names = zipfile.ZipFile(zip_path).namelist()
    assert all("/" not in n for n in names)  # flat (D2)
    for t in (inp, out):
        if t.get("sample_tensor"):  # only an ImageJ hyperstack holding exactly the test tensor (D27)
            import tifffile

            with zipfile.ZipFile(zip_path) as zf:
                tif = tifffile.TiffFile(io.BytesIO(zf.read(t["sample_tensor"]["source"])))
                test = np.load(io.BytesIO(zf.read(t["test_tensor"]["source"])))
            assert tif.is_imagej
            np.testing.assert_array_equal(tif.asarray(), test.squeeze())


@pytest.mark.slow
def test_onnx_is_ir8_opset17_as_declared(unet_zip):
    onnx = pytest.importorskip("onnx")
    zip_path, _ = unet_zip
    rdf = _rdf(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        model = onnx.load_model_from_string(zf.read(rdf["weights"]["onnx"]["source"]))
    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert model.ir_version <= 8 and opset == [17] and rdf["weights"]["onnx"]["opset_version"] == 17


@pytest.mark.slow
def test_spec_reports_no_warning_and_summary_says_what_was_done(unet_zip):
    from bioimgzoo.validation.format import spec_findings

    zip_path, result = unet_zip
    errors, warnings, _ = spec_findings(zip_path)
    assert not errors and not warnings, warnings
    text = str(result)
    for expected in ("pytorch_state_dict", "torchscript", "onnx", "within", "min ", "halo", "test_input.npy",
                     "DeepImageJ", "ilastik", "QuPath", "BiaPy", str(zip_path)):
        assert expected in text, expected
    assert any("untrained" in w for w in result.warnings)  # a seeded, never trained U-Net: flagged


def test_reviewer_warnings_name_untrained_modules_and_placeholders():
    from bioimgzoo.exporter._plan import Meta
    from bioimgzoo.exporter._verdicts import reviewer_warnings

    meta = Meta(name="My model", description="TODO: describe", authors=[{"name": "Me"}], license="MIT", tags=[],
                cite=[], maintainers=[], version="0.1.0", id="x")
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    got = reviewer_warnings(module=fresh, meta=meta, card={})
    assert any("untrained" in w for w in got)
    assert any("no maintainers" in w for w in got)
    assert any("description looks like placeholder" in w for w in got)
    with torch.no_grad():
        fresh[1].weight.mul_(1.5)  # a trained norm layer
    assert not any("untrained" in w for w in reviewer_warnings(module=fresh, meta=meta, card={}))
