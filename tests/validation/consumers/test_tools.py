"""The rules of ilastik, QuPath, BiaPy, CAREamics and JDLL's numerics, on small hand-written descriptions.

The descriptions are raw format 0.4/0.5 YAML without files: bioimageio.spec need
not accept them, the rules about the text judge them anyway.
"""

from __future__ import annotations

import copy
import zipfile

import numpy as np
import pytest
import yaml

from bioimgzoo.validation.consumers import consumer_verdicts
from bioimgzoo.validation.consumers._simulate import deepimagej_prediction, jdll_process, per_tile_deviation
from bioimgzoo.validation.consumers._view import ProcView, model_view

BASE_05 = {
    "format_version": "0.5.4", "type": "model", "name": "tiny", "covers": [], "tags": ["segmentation"],
    "inputs": [{"id": "raw", "axes": [{"type": "batch", "id": "batch"},
                                      {"type": "channel", "id": "channel", "channel_names": ["c0"]},
                                      {"type": "space", "id": "y", "size": {"min": 64, "step": 16}},
                                      {"type": "space", "id": "x", "size": {"min": 64, "step": 16}}],
                "test_tensor": {"source": "in.npy"},
                "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}]}],
    "outputs": [{"id": "out", "axes": [{"type": "batch", "id": "batch"},
                                       {"type": "channel", "id": "channel", "channel_names": ["p"]},
                                       {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                                       {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}}],
                 "test_tensor": {"source": "out.npy"}}],
    "weights": {"torchscript": {"source": "w.pt", "pytorch_version": "2.4.0"},
                "pytorch_state_dict": {"source": "w_sd.pt", "architecture": {
                    "source": "arch.py", "callable": "Net", "kwargs": {"out_channels": 1}}}},
}


@pytest.fixture(autouse=True)
def _rules_only(monkeypatch):
    """These hand-written descriptions lack what bioimageio.spec requires (authors, a 5-letter name, ...): the
    real readers (rules B0, I0; tests/validation/consumers/test_readers.py) refuse them, as they should; here
    the tools' own rules are under test."""
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")


def _verdicts(tmp_path, edit=None, *, name="rdf.yaml"):
    rdf = copy.deepcopy(BASE_05)
    if edit:
        edit(rdf)
    folder = tmp_path / "pkg"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(rdf, sort_keys=False))
    return consumer_verdicts(folder, static=True)


def test_the_base_description_passes_every_tool(tmp_path):
    v = _verdicts(tmp_path)
    for tool in ("deepimagej", "icy", "qupath", "biapy"):
        assert v[tool].status == "passed", (tool, v[tool].reasons)
    # spec refuses a description whose files are absent only when it checks them; here it may not parse at all
    assert v["ilastik"].failed_rules in ((), ("I5",))
    assert v["careamics"].status == "not-applicable"


@pytest.mark.parametrize("edit, tool, rule, text", [
    (lambda r: r.update(weights={"onnx": {"source": "w.onnx"}}), "ilastik", "I2",
     "torchscript or pytorch_state_dict"),
    (lambda r: r["inputs"][0]["axes"].insert(2, {"type": "space", "id": "z", "size": 8})
     or r["inputs"][0]["axes"].insert(2, {"type": "space", "id": "w", "size": 8}), "ilastik", "I1", "spatial"),
    (lambda r: r["inputs"][0]["axes"].insert(2, {"type": "space", "id": "z", "size": 8}), "qupath", "Q1", "2D"),
    (lambda r: r["weights"].pop("torchscript"), "qupath", "Q2", "no state dicts"),
    (lambda r: r.update(format_version="0.5.0"), "qupath", "Q3", "0.5.0 as 0.4"),
    (lambda r: r["inputs"][0]["axes"][2]["size"].update(min=72, step=48), "qupath", "Q4", "grows tiles by min"),
    (lambda r: r["inputs"][0].update(preprocessing=[{"id": "scale_range", "kwargs": {"max_percentile": 99}}]),
     "qupath", "Q5", "defaults are swapped"),
    (lambda r: r["weights"].pop("pytorch_state_dict"), "biapy", "B1", "pytorch_state_dict"),
    (lambda r: r["weights"]["pytorch_state_dict"]["architecture"].pop("kwargs"), "biapy", "B2", "kwargs"),
    (lambda r: r.update(tags=["nucleus"]), "biapy", "B3", "workflow tag"),
    (lambda r: r["inputs"][0]["axes"].reverse(), "biapy", "B4", "bcyx"),
    (lambda r: r["inputs"][0]["preprocessing"].append({"id": "scale_linear", "kwargs": {"gain": 2.0}}),
     "biapy", "B5", "at most one"),
    (lambda r: r.update(tags=["careamics"]), "careamics", "C1", "careamics.yaml"),
])
def test_one_rule_broken(tmp_path, edit, tool, rule, text):
    v = _verdicts(tmp_path, edit)[tool]
    assert v.status == "failed" and rule in v.failed_rules, v.reasons
    assert text in v.reasons[rule] and v.fixes[rule]


def test_ilastik_axis_rules_warn_the_zoo_ci_does_not_check_them(tmp_path):
    def edit(r):
        r["outputs"][0]["axes"].pop(1)  # no channel axis in the output

    v = _verdicts(tmp_path, edit)["ilastik"]
    i4 = next(f for f in v.findings if f.check == "ilastik.I4")
    assert i4.status == "warning" and "channel" in i4.message and "I4" not in v.failed_rules


def test_qupath_onnx_only_warns_and_a_zip_fails(tmp_path):
    v = _verdicts(tmp_path, lambda r: r.update(weights={"onnx": {"source": "w.onnx"}}))["qupath"]
    assert v.status == "passed" and any(f.status == "warning" for f in v.findings if f.check == "qupath.Q2")
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("rdf.yaml", yaml.safe_dump(BASE_05))
    assert "Q1" in consumer_verdicts(z, static=True)["qupath"].failed_rules


def test_careamics_export_passes_c1_and_fails_deepimagej_d23(tmp_path):
    def edit(r):
        r["tags"] = ["careamics", "denoising"]
        r["attachments"] = [{"source": "careamics.yaml"}]
        r["weights"] = {"pytorch_state_dict": {"source": "w.pt", "architecture": {
            "import_from": "careamics.models.unet", "callable": "UNet", "kwargs": {}}}}
        r["inputs"][0]["preprocessing"] = [{"id": "fixed_zero_mean_unit_variance",
                                            "kwargs": {"axis": "channel", "mean": [10.0], "std": [2.0]}}]

    v = _verdicts(tmp_path, edit)
    assert v["careamics"].status == "passed", v["careamics"].reasons
    assert "D23" in v["deepimagej"].failed_rules and v["biapy"].status == "passed"


def test_a_broken_description_never_crashes(tmp_path):
    def edit(r):
        r["inputs"] = [{"id": "raw", "axes": "nonsense", "preprocessing": "none"}, 7]
        r["outputs"] = None
        r["weights"] = ["onnx"]
        r["config"] = "x"

    v = _verdicts(tmp_path, edit)
    for tool, verdict in v.items():
        assert verdict.status in ("passed", "failed", "not-applicable", "skipped")
        assert not [f for f in verdict.findings if "could not be judged" in f.message], tool


# ------------------------------------------------------------------------------------- JDLL numerics


def _tensor(raw_axes, procs):
    rdf = copy.deepcopy(BASE_05)
    rdf["inputs"][0]["axes"] = raw_axes
    rdf["inputs"][0]["preprocessing"] = procs
    return model_view(rdf).inputs[0]


def test_jdll_percentiles_thresholds_and_whole_tensor_normalisation():
    t = _tensor(BASE_05["inputs"][0]["axes"], [])
    x = np.arange(10, dtype=np.float32).reshape(1, 1, 2, 5)
    sr = ProcView("scale_range", {"axes": ["x", "y"], "min_percentile": 25, "max_percentile": 75})
    out = jdll_process(x, t, [sr], v05=True)
    # sorted[int(n * p)]: 2 and 7, where numpy interpolates 2.25 and 6.75
    assert out.min() == pytest.approx(-2 / 5, abs=1e-5) and out.max() == pytest.approx(7 / 5, abs=1e-5)
    assert jdll_process(x, t, [ProcView("binarize", {"threshold": 5})], v05=True).sum() == 5  # >=
    x = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    # two channels, per-channel statistics asked: JDLL normalises the whole tensor
    x2 = np.stack([x[0, 0], x[0, 0] + 1000])[None]
    z = jdll_process(x2, t, [ProcView("zero_mean_unit_variance", {"axes": ["x", "y"]})], v05=True)
    assert z[0, 0].mean() < -0.9 and z[0, 1].mean() > 0.9


def test_deepimagej_tiling_pads_symmetrically_and_stitches():
    t = _tensor(BASE_05["inputs"][0]["axes"], [])
    out_t = model_view(BASE_05).outputs[0]
    x = np.random.default_rng(0).random((1, 1, 40, 24)).astype(np.float32)
    same = deepimagej_prediction(x, t, out_t, [1, 1, 16, 16], lambda a: a * 2, v05=True)
    np.testing.assert_array_equal(same, x * 2)  # a pixel-wise network: tiling is invisible
    seen = []
    tiled = deepimagej_prediction(x, t, out_t, [1, 1, 16, 16], lambda a: seen.append(a) or a - a.mean(), v05=True)
    assert len(seen) == 3 * 2 and all(a.shape == (1, 1, 16, 16) for a in seen)
    # the last row of tiles holds rows 32..39 and their mirror (edge pixel repeated)
    np.testing.assert_array_equal(seen[-1][0, 0, 8, :8], x[0, 0, 39, 16:])
    np.testing.assert_array_equal(seen[-1][0, 0, 0, 8:], x[0, 0, 32, 16:][::-1])
    assert not np.allclose(tiled, x - x.mean())  # a global operation shows the tiles


def test_qupath_per_tile_normalisation_deviation():
    t = _tensor(BASE_05["inputs"][0]["axes"], [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}])
    flat = np.ones((1, 1, 128, 128), np.float32)
    flat[..., :64, :] = 0
    assert per_tile_deviation(flat, t, [1, 1, 128, 128]) == 0.0
    assert per_tile_deviation(flat + np.linspace(0, 1, 128, dtype=np.float32), t, [1, 1, 64, 64]) > 0.5
