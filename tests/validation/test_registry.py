"""The registry: every check a registered unit; one status vocabulary; families found, not listed."""

from __future__ import annotations

import pytest

from bioimgzoo.validation import STATUSES, CheckReport, Finding, check_package, families
from bioimgzoo.validation._registry import (FAILED, PASSED, SKIPPED, WARNING, Check, Family, register_family,
                                            roll_up)


def test_status_vocabulary():
    assert set(STATUSES) == {"passed", "failed", "warning", "skipped", "not-applicable"}


def test_every_check_has_id_family_severity_fix():
    fams = families()
    assert [f.name for f in fams][:6] == ["format", "files", "safety", "reproduction", "agreement", "deepimagej"]
    ids = [c.id for f in fams for c in f.checks]
    assert len(ids) == len(set(ids))
    for fam in fams:
        assert fam.checks, fam.name
        for c in fam.checks:
            assert c.family == fam.name and c.id.startswith(fam.name + ".")
            assert c.severity in ("error", "warning", "info") and c.fix and c.title
    assert {f"deepimagej.D{n}" for n in range(1, 30)} <= set(ids)
    assert {"format.open", "format.spec", "format.upgrade", "format.completeness", "files.inside", "files.zip",
            "files.present", "files.sha256", "safety.pickle", "safety.code", "safety.onnx", "safety.torchscript",
            "reproduction.runtime", "reproduction.core", "agreement.formats", "agreement.sizes",
            "agreement.determinism", "agreement.tiling"} <= set(ids)


def test_roll_up_is_the_worst_status():
    assert roll_up(["passed", "warning", "skipped"]) == "warning"
    assert roll_up(["passed", "skipped"]) == "passed"
    assert roll_up(["skipped", "not-applicable"]) == "skipped"
    assert roll_up([]) == "not-applicable"
    assert roll_up(["passed", "failed"]) == "failed"


def test_a_warning_check_never_fails_and_bad_statuses_are_refused():
    c = Check("x.y", "x", "t", "warning", "do this", lambda ctx: iter(()))
    f = c.finding(FAILED, "m")
    assert f.status == WARNING and f.fix == "do this"
    assert c.finding(PASSED, "ok").fix == ""
    with pytest.raises(ValueError, match="not one of"):
        c.finding("pass", "old word")
    with pytest.raises(ValueError, match="severity"):
        Family("x", "X", 99).add(Check("x.z", "x", "t", "fatal", "f", lambda ctx: iter(())))


def test_passed_is_derived_from_the_findings():
    ok = Finding("a.b", "a", PASSED, "fine")
    assert CheckReport("s", findings=[ok]).passed
    assert CheckReport("s", findings=[ok, Finding("a.c", "a", WARNING, "meh")]).passed
    assert not CheckReport("s", findings=[ok, Finding("a.c", "a", FAILED, "bad")]).passed
    # a family that could only skip has shown nothing: no pass
    assert not CheckReport("s", findings=[ok, Finding("r.c", "r", SKIPPED, "untrusted")]).passed
    legacy = CheckReport("s", format_errors=["broken"], format_warnings=["hm"])
    assert legacy.format_errors == ["broken"] and legacy.format_warnings == ["hm"] and not legacy.passed


def test_a_new_family_runs_and_a_crashing_check_is_a_finding(zoo_fixture, monkeypatch):
    from bioimgzoo.validation import _registry

    families()  # load the real ones first, then register into a copy the test throws away
    monkeypatch.setattr(_registry, "_FAMILIES", dict(_registry._FAMILIES))
    fam = register_family("zz_test", "Test family", order=999)

    @fam.check("ok", title="always passes", fix="-", requires=())
    def _ok(ctx):
        yield PASSED, "fine", {"n": 1}

    @fam.check("boom", title="crashes", fix="-", requires=("package",))
    def _boom(ctx):
        raise RuntimeError("bug in the check")
        yield  # pragma: no cover

    @fam.check("empty", title="nothing to judge", fix="-")
    def _empty(ctx):
        return iter(())

    report = check_package(zoo_fixture, families=["zz_test"])
    by_id = {f.check: f for f in report.findings}
    assert report.families == ["zz_test"]
    assert by_id["zz_test.ok"].status == "passed" and by_id["zz_test.ok"].details == {"n": 1}
    assert by_id["zz_test.boom"].status == "skipped" and "RuntimeError" in by_id["zz_test.boom"].message
    assert by_id["zz_test.empty"].status == "not-applicable"
    assert "## Test family: passed" in report.to_markdown()
    with pytest.raises(ValueError, match="registered twice"):
        fam.add(Check("zz_test.ok", "zz_test", "t", "error", "f", _ok))


def test_unknown_family_is_refused(zoo_fixture):
    with pytest.raises(ValueError, match="unknown check families"):
        check_package(zoo_fixture, families=["nope"])
