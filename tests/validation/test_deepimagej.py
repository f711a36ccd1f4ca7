"""DeepImageJ's rules (consumer-rules.md D1-D29), on the real zoo fixture and on variants breaking one rule each.

Most variants are judged statically (the description alone); the rules that read
files (the ONNX graph, the TorchScript archive, the test tensors) get the files.
"""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import yaml

from bioimgzoo.validation.consumers import consumer_verdicts
from bioimgzoo.validation.consumers.deepimagej import RULES, RuleResult, check_deepimagej, format_results, has_failures


def _statuses(results):
    return {r.rule: r.status for r in results}


def _variant(zoo_fixture, tmp_path, edit, *, rdf_name="rdf.yaml"):
    """A copy of the fixture with ``edit(rdf_dict, folder)`` applied to its rdf.yaml."""
    folder = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf, folder)
    (folder / "rdf.yaml").unlink()
    (folder / rdf_name).write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _dij(folder, *, static=True):
    return consumer_verdicts(folder, static=static, tools=["deepimagej"])["deepimagej"]


def _fixed(rdf, folder):
    """What the fixture gets wrong, put right: explicit axis ids (D12), opset 17 declared (D9), no PNG sample (D27)."""
    for t in rdf["inputs"] + rdf["outputs"]:
        for a in t["axes"]:
            a.setdefault("id", {"batch": "batch", "channel": "channel"}.get(a["type"], "x"))
        t.pop("sample_tensor", None)
    rdf["weights"]["onnx"]["opset_version"] = 17


def test_one_result_per_rule_on_the_zoo_fixture(zoo_fixture):
    results = check_deepimagej(zoo_fixture, static=True)
    assert [r.rule for r in results] == list(range(0, 30))
    assert all(isinstance(r, RuleResult) and r.name == RULES[r.rule] and r.message for r in results)
    s = _statuses(results)
    assert {n for n, st in s.items() if st == "failed"} == {0, 9, 12, 27}  # D0: JDLL throws on D12's axes
    assert s[19] == "not-applicable" and s[28] == "skipped"  # no config.deepimagej; the test input is not read
    assert has_failures(results)
    table = format_results(results)
    assert "ONNX opset" in table and "opset_version 20 > 17" in table
    assert format_results(results, markdown=True).startswith("| # | rule |")


def test_fixing_the_fixture_passes(zoo_fixture, tmp_path):
    v = _dij(_variant(zoo_fixture, tmp_path, _fixed))
    assert v.status == "passed", v.reasons


def test_zip_and_folder_give_the_same_verdicts(zoo_fixture, tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
    assert _statuses(check_deepimagej(z, static=True)) == _statuses(check_deepimagej(zoo_fixture, static=True))


def test_nested_zip_and_bioimageio_yaml_fail_d1(zoo_fixture, tmp_path):
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, "model/" + f.name)
    assert "D1" in _dij(z).failed_rules
    v = _dij(_variant(zoo_fixture, tmp_path, _fixed, rdf_name="bioimageio.yaml"))
    assert v.failed_rules == ("D1",) and "bioimageio.yaml" in v.reasons["D1"]


@pytest.mark.parametrize("edit, rule, text", [
    (lambda r, f: (f.joinpath("sub").mkdir(), shutil.move(f / "cover0.png", f / "sub" / "cover0.png"),
                   r.update(covers=["sub/cover0.png"])), "D2", "sub/cover0.png"),
    (lambda r, f: r.update(format_version="0.5.0"), "D3", "0.5.3"),
    (lambda r, f: r.update(config={"bioimageio": {}}), "D3", "nickname"),
    (lambda r, f: r.pop("covers"), "D4", "covers"),
    (lambda r, f: r.update(name="my stardist", config={"stardist": {}, "bioimageio": {"nickname": "x"}}), None, None),
    (lambda r, f: r["weights"].pop("onnx") and (shutil.move(f / "weights.pt", f / "weights.pt.pth"),
                                                r["weights"]["torchscript"].update(source="weights.pt.pth",
                                                                                   sha256=None)),
     "D8", "<stem>.pt"),
    (lambda r, f: r["weights"]["onnx"].update(opset_version=18), "D9", "opset 17 at most"),
    (lambda r, f: [a.update(size={"min": 72, "step": 48}) for a in r["inputs"][0]["axes"][2:]], "D16",
     "not a multiple of step"),
    (lambda r, f: r["outputs"][0]["axes"][2]["size"].update(offset=4), "D17", "offset 4"),
    (lambda r, f: r.update(config={"bioimageio": {"nickname": "x"}, "deepimagej": {"allow_tiling": "yes"}}),
     "D19", "not a boolean"),
    (lambda r, f: r["outputs"][0].update(postprocessing=[{"id": "softmax", "kwargs": {"axis": "channel"}}]),
     "D20", "softmax"),
    (lambda r, f: r["outputs"][0].update(postprocessing=[{"id": "clip", "kwargs": {"min": 0.0}}]), "D21", "both"),
    (lambda r, f: r["inputs"][0].update(preprocessing=[{"id": "scale_range", "kwargs": {
        "axes": ["x", "y"], "min_percentile": 1, "max_percentile": 99, "lower": 1}}]), "D21", "unknown kwargs"),
    (lambda r, f: r["inputs"][0].update(preprocessing=[{"id": "zero_mean_unit_variance", "kwargs": {
        "axes": ["batch", "x", "y"]}}]), "D22", "batch"),
    (lambda r, f: r["outputs"][0].update(postprocessing=[{"id": "scale_linear", "kwargs": {
        "axis": "channel", "gain": [2.0, 3.0], "offset": [0.0, 0.0]}}]), "D23", "first element"),
    (lambda r, f: r["outputs"][0].update(postprocessing=[{"id": "binarize", "kwargs": {
        "threshold": [0.5]}}]), "D23", "list threshold"),
    (lambda r, f: r["outputs"][0].update(id="a_b"), None, None),
])
def test_one_rule_broken(zoo_fixture, tmp_path, edit, rule, text):
    def both(rdf, folder):
        _fixed(rdf, folder)
        edit(rdf, folder)

    v = _dij(_variant(zoo_fixture, tmp_path, both))
    if rule is None:  # warnings only (D6), or still valid (an id with '_' but no other output's suffix)
        assert v.status == "passed", v.reasons
    else:
        # D0, JDLL's parser replayed, throws on these three too (a null id read, no covers list, a String cast
        # to Boolean); the other rules are about running the model, which its parser does not see
        expected = ("D0", rule) if (rule, text) in _JDLL_THROWS else (rule,)
        assert v.failed_rules == expected, v.reasons
        assert text in v.reasons[rule] and v.fixes[rule]


_JDLL_THROWS = {("D3", "nickname"), ("D4", "covers"), ("D19", "not a boolean")}


def test_zero_mean_unit_variance_over_xy_with_two_channels_fails_d24(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        _fixed(rdf, folder)
        rdf["inputs"][0]["axes"][1]["channel_names"] = ["a", "b"]
        rdf["inputs"][0]["preprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}]

    v = _dij(_variant(zoo_fixture, tmp_path, edit))
    assert v.failed_rules == ("D24",) and "whole tensor" in v.reasons["D24"]


def test_time_axis_and_no_channel_axis(zoo_fixture, tmp_path):
    def no_channel(rdf, folder):
        _fixed(rdf, folder)
        del rdf["inputs"][0]["axes"][1]

    v = _dij(_variant(zoo_fixture, tmp_path, no_channel))
    assert "D14" in v.failed_rules and "crashes" in v.reasons["D14"]


@pytest.mark.slow
def test_rules_that_read_files(zoo_fixture, tmp_path):
    """The ONNX graph's opset and IR, the TorchScript archive, the test tensors: read, never run."""
    def declared_17(rdf, folder):
        _fixed(rdf, folder)
        rdf["inputs"][0]["axes"][2]["size"] = {"min": 256, "step": 48}  # 512 is no multiple of 48 (D28)

    folder = _variant(zoo_fixture, tmp_path, declared_17)
    static = _dij(folder)
    assert "D9" not in static.failed_rules and "D28" not in static.failed_rules
    v = _dij(folder, static=False)
    assert "opset is 20" in v.reasons["D9"] and "IR version is 9" in v.reasons["D9"]
    assert "needs >= 256 and a multiple of 48" in v.reasons["D28"]
    d8 = next(f for f in v.findings if f.check == "deepimagej.D8")
    assert d8.status == "passed" and "archive version" in d8.message


def test_a_state_dict_saved_as_torchscript_fails_d8(zoo_fixture, tmp_path):
    torch = pytest.importorskip("torch")

    def edit(rdf, folder):
        _fixed(rdf, folder)
        torch.save({"w": torch.zeros(2)}, folder / "weights.pt")  # a zip, but no TorchScript archive
        rdf["weights"]["torchscript"]["sha256"] = None
        del rdf["weights"]["onnx"]

    v = _dij(_variant(zoo_fixture, tmp_path, edit), static=False)
    assert "not a TorchScript archive" in v.reasons["D8"]


def test_scale_range_percentiles_are_measured(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        _fixed(rdf, folder)
        rdf["inputs"][0]["preprocessing"] = [{"id": "scale_range", "kwargs": {
            "axes": ["x", "y"], "min_percentile": 1.0, "max_percentile": 99.5}}]

    v = _dij(_variant(zoo_fixture, tmp_path, edit), static=False)
    d25 = [f for f in v.findings if f.check == "deepimagej.D25"]
    assert d25 and all("deviation" in f.details for f in d25)
    x = np.load(zoo_fixture / "test_input.npy")
    flat = np.sort(x.ravel())
    assert d25[0].details["deviation"] > 0 or flat[int(flat.size * 0.01)] == np.percentile(x, 1.0)
