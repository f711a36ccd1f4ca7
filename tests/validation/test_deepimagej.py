"""The static DeepImageJ rules, on the real zoo fixture and on variants of it that break one rule each."""

from __future__ import annotations

import shutil
import zipfile

import pytest
import yaml

from bioimgzoo.validation.deepimagej import RULES, RuleResult, check_deepimagej, format_results, has_failures


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


def test_one_result_per_rule_on_the_zoo_fixture(zoo_fixture):
    results = check_deepimagej(zoo_fixture)
    assert [r.rule for r in results] == list(range(1, 30))
    assert all(isinstance(r, RuleResult) and r.name == RULES[r.rule] and r.message for r in results)
    assert {r.status for r in results} <= {"passed", "failed", "warning", "skipped", "not-applicable"}
    s = _statuses(results)
    # what the upstream example really gets wrong for DeepImageJ
    assert s[3] == "failed"  # no id / nickname
    assert s[7] == "warning"  # torchscript saved by torch 2.5
    assert s[8] == "failed"  # opset 20
    assert s[11] == "failed"  # x axis without explicit id
    assert s[27] == "failed"  # sample tensor is a PNG
    assert s[25] == "not-applicable" and s[16] == "not-applicable"  # no config.deepimagej, no {min, step}
    for rule in (1, 2, 4, 5, 6, 9, 10, 12, 13, 14, 15, 17, 19, 20, 21, 22, 23, 24, 26, 28, 29):
        assert s[rule] == "passed", (rule, results[rule - 1].message)
    assert has_failures(results)
    table = format_results(results)
    assert "ONNX opset" in table and "opset 20 > 18" in table
    assert format_results(results, markdown=True).startswith("| # | rule |")


def test_zip_and_opened_package_give_the_same_results(zoo_fixture, tmp_path):
    from bioimgzoo.package import open_package

    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
    assert _statuses(check_deepimagej(z)) == _statuses(check_deepimagej(open_package(zoo_fixture)))


def test_nested_zip_fails_rule_1(zoo_fixture, tmp_path):
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, "model/" + f.name)
    assert _statuses(check_deepimagej(z))[1] == "failed"


def test_bioimageio_yaml_name_fails_rule_1(zoo_fixture, tmp_path):
    folder = _variant(zoo_fixture, tmp_path, lambda rdf, f: None, rdf_name="bioimageio.yaml")
    r = check_deepimagej(folder)[0]
    assert r.status == "failed" and "bioimageio.yaml" in r.message


def test_fixes_turn_failures_into_passes(zoo_fixture, tmp_path):
    def fix(rdf, folder):
        rdf["id"] = "unet2d-nuclei-broad"
        rdf["weights"]["onnx"]["opset_version"] = 17
        rdf["inputs"][0]["axes"][3]["id"] = "x"
        rdf["outputs"][0]["axes"][3]["id"] = "x"

    s = _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path, fix)))
    assert s[3] == "passed" and s[8] == "passed" and s[11] == "passed"


def test_file_in_subfolder_fails_rule_2(zoo_fixture, tmp_path):
    def move(rdf, folder):
        (folder / "sub").mkdir()
        shutil.move(folder / "cover0.png", folder / "sub" / "cover0.png")
        rdf["covers"] = ["sub/cover0.png"]

    r = check_deepimagej(_variant(zoo_fixture, tmp_path, move))[1]
    assert r.status == "failed" and "sub/cover0.png" in r.message


def test_opset_18_warns_and_missing_covers_fail(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        rdf["weights"]["onnx"]["opset_version"] = 18
        rdf["covers"] = []

    s = _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path, edit)))
    assert s[8] == "warning" and s[4] == "failed"


def test_state_dict_only_warns(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        (folder / "arch.py").write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
        rdf["weights"] = {"pytorch_state_dict": {
            "source": "weights.pt", "pytorch_version": "2.0.0",
            "architecture": {"source": "arch.py", "callable": "Net"}}}

    s = _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path, edit)))
    assert s[6] == "warning" and s[7] == "not-applicable" and s[8] == "not-applicable"


@pytest.mark.parametrize("post, rule, status", [
    ([{"id": "softmax", "kwargs": {"axis": "channel"}}], 20, "failed"),
    ([{"id": "scale_range", "kwargs": {"axes": ["x", "y"], "min_percentile": 1, "max_percentile": 99,
                                       "eps": 1e-6}}], 21, "failed"),
    ([{"id": "scale_linear", "kwargs": {"axis": "channel", "gain": [2.0], "offset": [0.5]}}], 23, "failed"),
    ([{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["batch", "x", "y"]}}], 22, "failed"),
    ([{"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}], 21, "passed"),
])
def test_processing_rules(zoo_fixture, tmp_path, post, rule, status):
    def edit(rdf, folder):
        rdf["outputs"][0]["postprocessing"] = post

    results = check_deepimagej(_variant(zoo_fixture, tmp_path, edit))
    assert results[rule - 1].status == status, results[rule - 1].message


def test_zmuv_over_xy_with_several_channels_is_flagged(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        rdf["outputs"][0]["axes"][1]["channel_names"] = ["a", "b"]
        rdf["outputs"][0]["postprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}]
        rdf["outputs"][0].pop("test_tensor")
        rdf["outputs"][0].pop("sample_tensor")
        rdf["outputs"][0]["data"] = [{"type": "float32"}, {"type": "float32"}]

    s = _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path, edit)))
    assert s[24] == "warning" and s[26] == "failed"  # and the missing test output is a failure of rule 26


def test_config_deepimagej_allow_tiling(zoo_fixture, tmp_path):
    def bad(rdf, folder):
        rdf["config"] = {"deepimagej": {"allow_tiling": "true"}}

    def good(rdf, folder):
        rdf["config"] = {"deepimagej": {"allow_tiling": True}}

    assert _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path / "a", bad)))[25] == "failed"
    assert _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path / "b", good)))[25] == "passed"


def test_parameterized_input_rules(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        for a in rdf["inputs"][0]["axes"][2:]:
            a["size"] = {"min": 72, "step": 48}  # 72 % 48 != 0; test input 512 is not a multiple of 48

    s = _statuses(check_deepimagej(_variant(zoo_fixture, tmp_path, edit)))
    assert s[16] == "failed" and s[28] == "failed" and s[15] == "passed"


def test_input_without_channel_axis(zoo_fixture, tmp_path):
    def edit(rdf, folder):
        del rdf["inputs"][0]["axes"][1]

    results = check_deepimagej(_variant(zoo_fixture, tmp_path, edit))
    s = _statuses(results)
    assert s[13] == "failed" and "no channel axis" in results[12].message
    assert s[26] == "failed"  # the 4D test tensor no longer fits 3 axes
