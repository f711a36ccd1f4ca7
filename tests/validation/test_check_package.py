"""check_package: spec validation (errors and warnings), core's test_model, the DeepImageJ rules."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from bioimgzoo.validation import CheckReport, check_package


@pytest.mark.slow
def test_zoo_fixture(zoo_fixture):
    report = check_package(zoo_fixture, weights="onnx")
    assert isinstance(report, CheckReport)
    assert report.format_valid and report.name == "UNet 2D Nuclei Broad"
    # the upstream example misses the '# Validation' README section and has two parentless weights
    assert any("Validation" in w for w in report.format_warnings)
    assert report.reproduction["onnx"]["status"] == "passed" and report.reproduces
    # DeepImageJ would not run it (opset 20, ...): reported beside the status, which it does not fail
    assert not report.deepimagej_compatible and report.consumers["deepimagej"]["status"] == "failed"
    assert report.passed, [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    md = report.to_markdown()
    assert "## Reproduction" in md and "| reproduction.runtime | onnx | passed |" in md and "ONNX opset" in md
    assert "## Consumer tools" in md
    d = json.loads(json.dumps(report.to_dict()))
    assert d["passed"] is True and d["format"]["valid"] is True and len(d["deepimagej"]["rules"]) == 30  # D0-D29
    assert set(d["consumers"]["deepimagej"]) >= {"status", "failed_rules"}
    completeness = d["completeness"]
    assert 0 < completeness["score"] < 1 and any("DOI" in m for m in completeness["missing"])


def test_invalid_description_is_reported_not_raised(zoo_fixture, tmp_path):
    folder = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    del rdf["inputs"]
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    report = check_package(folder)
    assert not report.format_valid and not report.passed
    assert report.reproduction == {}
    # the consumer rules still judge the raw description: no input is DeepImageJ's D5
    assert {r.rule: r.status for r in report.deepimagej}[5] == "failed"
    assert "inputs" in report.to_markdown()


def test_untrusted_architecture_file_is_skipped(tmp_path):
    """State-dict weights whose architecture is a library callable: a failed safety finding, nothing run."""
    torch = pytest.importorskip("torch")
    from bioimgzoo.exporter import export_model
    from bioimgzoo.testing import checks as C
    from bioimgzoo.testing import nets as N

    torch.manual_seed(0)
    x = np.random.default_rng(0).random((1, 1, 16, 16)).astype(np.float32)
    exported = export_model(N.SameConv().eval(), x, tmp_path / "m.zip", name="Same conv net", **C.meta(),
                            weights=["pytorch_state_dict"])
    # the export ships the class's source (issue 19); a package naming the library callable instead is what
    # other producers write: rewrite the entry so
    import zipfile

    import yaml

    z = tmp_path / "library.zip"
    with zipfile.ZipFile(exported.path) as src, zipfile.ZipFile(z, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                rdf["weights"]["pytorch_state_dict"]["architecture"] = {
                    "callable": "SameConv", "import_from": "bioimgzoo.testing.nets", "kwargs": {}}
                data = yaml.safe_dump(rdf, sort_keys=False).encode()
            dst.writestr(info, data)
    report = check_package(z, deepimagej=False)
    # a library callable outside bioimgzoo's allow-list is a failed safety finding, never run
    callables = [f for f in report.findings if f.check == "safety.callables"]
    assert [f.status for f in callables] == ["failed"]
    assert "bioimgzoo.testing.nets:SameConv" in callables[0].message and "allow-list" in callables[0].message
    repro = report.reproduction.get("pytorch_state_dict")
    assert repro is None or (repro["status"] == "skipped" and "trust_code" in repro["errors"][0])
    assert not report.passed and not report.deepimagej_checked


def test_refusal_holds_without_the_files_family(zoo_fixture, tmp_path, monkeypatch):
    """Leaving out the files family must not let bioimageio.spec or core read a file outside the package."""
    from bioimgzoo.validation import format as fmt
    from bioimgzoo.validation import reproduction

    folder = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["weights"]["onnx"].update(source="/etc/passwd", sha256=None)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))

    def never(*a, **k):
        raise AssertionError("handed a package that names a file outside itself")

    monkeypatch.setattr(fmt, "spec_findings", never)
    monkeypatch.setattr(reproduction, "core_reproduction", never)
    report = check_package(folder, families=["format", "reproduction"])
    assert report.families == ["format", "reproduction"] and not report.passed
    statuses = {f.check: f.status for f in report.findings}
    assert statuses == {"format.open": "passed", "format.spec": "skipped", "format.upgrade": "passed",
                        "format.completeness": "warning", "format.repairs": "not-applicable",
                        "format.github_users": "passed",
                        "reproduction.runtime": "skipped"}
    assert "/etc/passwd" in next(f.message for f in report.findings if f.check == "format.spec")
