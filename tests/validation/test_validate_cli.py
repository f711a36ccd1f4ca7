"""``bioimgzoo validate``: one line per family, failures with their fix, JSON with status and checks, exit code."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from bioimgzoo.cli import main


def _outside_package(zoo_fixture, tmp_path):
    """A copy of the fixture whose onnx weights name a file outside the package."""
    folder = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["weights"]["onnx"].update(source="/etc/passwd", sha256=None)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


@pytest.mark.slow
def test_fixture_passes_without_the_deepimagej_rules(zoo_fixture, tmp_path):
    out = tmp_path / "report.json"
    res = CliRunner().invoke(main, ["validate", str(zoo_fixture), "--weights", "onnx", "--no-deepimagej",
                                    "--json", str(out), "--md", str(tmp_path / "report.md")])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("PASSED")
    for family in ("format", "files", "reproduction"):
        assert sum(line.split()[0] == family for line in res.output.splitlines()[1:]) == 1, res.output
    d = json.loads(out.read_text())
    assert d["status"] == "passed" and d["passed"] is True
    checks = {c["id"]: c for c in d["checks"]}
    assert checks["reproduction.runtime"]["status"] == "passed"
    assert checks["reproduction.runtime"]["details"]["weights_format"] == "onnx"
    assert checks["files.inside"]["status"] == "passed" and checks["format.open"]["family"] == "format"
    assert all(set(c) >= {"id", "family", "status", "message", "severity", "fix"} for c in d["checks"])
    assert not any(c["family"] == "deepimagej" for c in d["checks"])
    assert "## Reproduction" in (tmp_path / "report.md").read_text()


def test_fixture_fails_on_the_deepimagej_rules_with_their_fixes(zoo_fixture, tmp_path):
    # leaving out reproduction keeps this fast: the DeepImageJ failures alone must fail the package
    from bioimgzoo.validation import check_package

    report = check_package(zoo_fixture, families=["format", "files", "deepimagej"])
    # a consumer tool is reported beside the status: it fails the package only when required
    assert report.status == "passed" and report.family_status("deepimagej") == "failed"
    assert report.consumers["deepimagej"]["status"] == "failed"
    report = check_package(zoo_fixture, families=["format", "files", "deepimagej"], require=["deepimagej"])
    assert report.status == "failed"
    # D0: JDLL's parser (modelled) throws on the space axis without an id that D12 names
    assert report.consumers["deepimagej"]["failed_rules"] == ["D0", "D9", "D12", "D27"]
    # consumer-rules.md: opset 20 (D9), axes without explicit ids (D12), a PNG sample tensor (D27)
    assert {f.check for f in report.failures} == {"deepimagej.D0", "deepimagej.D9", "deepimagej.D12", "deepimagej.D27"}
    assert all(f.fix for f in report.failures)


def test_file_outside_the_package_fails_and_nothing_runs(zoo_fixture, tmp_path):
    bad = _outside_package(zoo_fixture, tmp_path)
    out = tmp_path / "reports.json"
    res = CliRunner().invoke(main, ["validate", str(bad), str(bad), "-v", "--json", str(out)])
    assert res.exit_code == 1, res.output
    assert res.output.count("FAILED") >= 2 and "fix: Put every file" in res.output
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == 2  # several sources: a list of reports
    d = data[0]
    assert d["status"] == "failed" and d["families"]["files"] == "failed"
    checks = {c["id"]: c for c in d["checks"]}
    assert checks["files.inside"]["status"] == "failed" and "/etc/passwd" in checks["files.inside"]["message"]
    # spec and core would hash / load the refused file: they are skipped, saying why
    assert checks["format.spec"]["status"] == "skipped" and "not run" in checks["format.spec"]["message"]
    assert checks["reproduction.runtime"]["status"] == "skipped"
    assert d["reproduction"] == {}


def test_unknown_weights_format_is_a_usage_error(zoo_fixture):
    res = CliRunner().invoke(main, ["validate", str(zoo_fixture), "--weights", "nonsense"])
    assert res.exit_code != 0 and "Traceback" not in res.output
