"""The consumer checkers on real zoo descriptions: the 75 of 2022-2023 (static) and the shared fixture."""

from __future__ import annotations

import pytest

from bioimgzoo.validation.consumers import TOOLS, ConsumerVerdict, consumer_verdicts
from tests.conftest import SHARED

RDFS = SHARED / "fixtures" / "zoo-rdfs-2023"
_RULE_IDS = {f"D{i}" for i in range(1, 30)} | {f"I{i}" for i in range(1, 6)} | {f"Q{i}" for i in range(1, 6)} \
    | {f"B{i}" for i in range(1, 6)} | {"C1"} | {"D0", "I0", "B0", "jdll", "yaml-1.1", "biapy", "zoo-ci"}


def _folders():
    if not RDFS.is_dir():
        pytest.skip(f"the zoo descriptions are not at {RDFS} (they live in the shared/ folder beside the repo)")
    return sorted(p.parent for p in RDFS.glob("*/rdf.yaml"))


def _check_reasons(name: str, verdicts: dict[str, ConsumerVerdict]) -> None:
    assert list(verdicts) == list(TOOLS)
    for tool, v in verdicts.items():
        assert v.status in ("passed", "failed", "not-applicable", "skipped"), (name, tool)
        assert all(f.message for f in v.findings), (name, tool)
        if v.status == "failed":
            assert v.failed_rules and set(v.failed_rules) <= _RULE_IDS, (name, tool, v.failed_rules)
            assert set(v.reasons) == set(v.failed_rules) and all(v.reasons.values()), (name, tool)
            assert set(v.fixes) == set(v.failed_rules) and all(v.fixes.values()), (name, tool)
        elif v.status != "passed":
            assert v.findings and all(f.message for f in v.findings if f.status == v.status), (name, tool)
        # static: no rule crashed, and every file-reading rule says it was skipped rather than judged
        assert not [f for f in v.findings if "could not be judged" in f.message], (name, tool)


@pytest.mark.slow
def test_static_verdicts_on_all_75_zoo_descriptions(monkeypatch):
    # the deployed readers in their own environments (spec 0.5.7.4, core 0.10.4) are two subprocesses per
    # description: over 75 that is minutes; they are tested on real descriptions in test_readers_venvs and
    # test_export_readers, and JDLL's and YAML 1.1's replays still run here
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")
    folders = _folders()
    assert len(folders) == 75
    counts = {t: {} for t in TOOLS}
    for folder in folders:
        verdicts = consumer_verdicts(folder, static=True)
        _check_reasons(folder.name, verdicts)
        for tool, v in verdicts.items():
            counts[tool][v.status] = counts[tool].get(v.status, 0) + 1
    # every tool judged every description (CAREamics applies to none of these: no 'careamics' tag)
    assert counts["careamics"] == {"not-applicable": 75}
    for tool in ("deepimagej", "ilastik", "biapy"):
        assert counts[tool].get("passed", 0) and counts[tool].get("failed", 0), (tool, counts[tool])


def test_static_verdicts_of_known_descriptions():
    by_name = {f.name: f for f in _folders()}
    # a 2-output model: DeepImageJ (zoo CI), ilastik fail on the output count
    v = consumer_verdicts(by_name["10.5281_zenodo.5910854_5911832"], static=True)
    assert "D5" in v["deepimagej"].failed_rules and "I1" in v["ilastik"].failed_rules
    # a Keras-only model: nothing JDLL or ilastik runs
    v = consumer_verdicts(by_name["10.5281_zenodo.6865412_6919253"], static=True)
    assert "D7" in v["deepimagej"].failed_rules and "I2" in v["ilastik"].failed_rules
    # a format 0.3 description bioimageio.spec cannot read is still judged on its raw text
    v = consumer_verdicts(by_name["deepimagej_Stardist2DZeroCostDL4Mic_latest"], static=True)
    _check_reasons("stardist", v)
    assert "I5" in v["ilastik"].failed_rules  # spec does not read it: tiktorch refuses it
    assert "D26" in v["deepimagej"].failed_rules  # TIFF test tensors


def test_shared_fixture_static(zoo_fixture):
    """unet2d-nuclei-broad, by consumer-rules.md: opset 20 (D9), implicit axis ids (D12), a PNG sample (D27)."""
    v = consumer_verdicts(zoo_fixture, static=True)
    # D0: JDLL's parser (replayed) throws on the space axes without an id that D12 names
    assert v["deepimagej"].failed_rules == ("D0", "D9", "D12", "D27")
    assert v["icy"].failed_rules == ("D0", "D9", "D12")  # the zoo CI's sample rule is not Icy's
    assert v["ilastik"].status == "passed" and v["qupath"].status == "passed"
    assert v["biapy"].failed_rules == ("B1",)  # no pytorch_state_dict
    assert v["careamics"].status == "not-applicable"
    skipped = {f.check for f in v["deepimagej"].findings if f.status == "skipped"}
    assert {"deepimagej.D28", "deepimagej.simulation"} <= skipped  # they need the test tensors / weights


@pytest.mark.slow
def test_shared_fixture_with_its_files(zoo_fixture):
    v = consumer_verdicts(zoo_fixture)
    dij = {f.check: f for f in v["deepimagej"].findings}
    assert v["deepimagej"].failed_rules == ("D0", "D9", "D12", "D27")  # D0: JDLL throws on D12's axes
    assert "IR version is 9" in v["deepimagej"].reasons["D9"]  # read from weights.onnx
    assert dij["deepimagej.D8"].status == "passed" and "archive version" in dij["deepimagej.D8"].message
    sim = dij["deepimagej.simulation"]
    assert sim.status == "passed" and sim.details["mismatched"] == 0 and sim.details["tiles"] == [1, 1, 512, 512]
    assert v["ilastik"].status == "passed" and v["qupath"].status == "passed"
    ilastik_sim = next(f for f in v["ilastik"].findings if f.check == "ilastik.simulation")
    assert ilastik_sim.status == "passed", ilastik_sim.message
