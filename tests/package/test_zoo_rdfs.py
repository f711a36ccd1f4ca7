"""Real zoo descriptions of 2022-2023 (../shared/fixtures/zoo-rdfs-2023/: rdf.yaml only, no weights) open.

What bioimageio.spec accepts in its own format opens, with a warning for
each piece of metadata the upgrade to 0.5 rejects; what the spec rejects
only for metadata opens too; broken tensors end in one clear error each.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from bioimgzoo.errors import InvalidDescriptionError
from bioimgzoo.package import open_package

RDFS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "zoo-rdfs-2023"


def _folders() -> list[Path]:
    if not RDFS.is_dir():
        return []
    return sorted(p for p in RDFS.iterdir() if (p / "rdf.yaml").is_file())


@pytest.fixture(scope="module")
def folders() -> list[Path]:
    found = _folders()
    if not found:
        pytest.skip(f"zoo description fixtures not found at {RDFS} (they live in shared/ beside the repo)")
    return found


def _spec_verdict(folder: Path):
    """bioimageio.spec's own verdict in the description's own format: (accepted, error locations)."""
    from bioimageio.spec import InvalidDescr, build_description
    from bioimageio.spec._internal.validation_context import ValidationContext

    from bioimgzoo._yaml import load_yaml

    content = load_yaml((folder / "rdf.yaml").read_bytes(), str(folder))
    ctx = ValidationContext(root=folder, file_name="rdf.yaml", perform_io_checks=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = build_description(content, context=ctx, format_version="discover")
    if not isinstance(descr, InvalidDescr):
        return True, []
    return False, [tuple(e.loc) for e in descr.validation_summary.errors]


@pytest.fixture(scope="module")
def outcomes(folders):
    logging.getLogger("bioimgzoo").setLevel(logging.WARNING)
    result = {}
    for folder in folders:
        accepted, locs = _spec_verdict(folder)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pkg = open_package(folder)
            result[folder.name] = (accepted, locs, pkg, None)
        except InvalidDescriptionError as e:
            result[folder.name] = (accepted, locs, None, e)
    return result


@pytest.mark.slow
def test_every_description_the_spec_accepts_opens(outcomes):
    accepted = {k: v for k, v in outcomes.items() if v[0]}
    assert accepted, "the spec accepts none of the fixtures: the fixture set changed"
    failed = {k: str(v[3]).splitlines()[0] for k, v in accepted.items() if v[2] is None}
    assert not failed


@pytest.mark.slow
def test_metadata_the_upgrade_rejects_becomes_a_warning(outcomes):
    # the three the 0.5 upgrade used to refuse: a notebook as documentation, licenses not in SPDX
    by_kind = {"documentation": 0, "license": 0}
    for name, (accepted, _locs, pkg, _err) in outcomes.items():
        if accepted and pkg is not None:
            for w in pkg.warnings:
                for kind in by_kind:
                    by_kind[kind] += w.startswith(f"{kind} = ")
    assert by_kind["documentation"] >= 1 and by_kind["license"] >= 2
    notebook = next(pkg for (_a, _l, pkg, _e) in outcomes.values()
                    if pkg is not None and any(".ipynb" in w for w in pkg.warnings))
    assert notebook.descr.documentation is None  # dropped, the tensors untouched
    assert notebook.descr.inputs and notebook.descr.outputs


@pytest.mark.slow
def test_descriptions_the_spec_rejects_only_for_metadata_open(outcomes):
    from bioimgzoo.package.repair import METADATA_FIELDS

    metadata_only = {k: v for k, v in outcomes.items()
                     if not v[0] and v[1] and all(str(loc[0]) in METADATA_FIELDS
                                                  or (str(loc[0]) == "weights" and "authors" in map(str, loc))
                                                  for loc in v[1] if loc)
                     and all(loc for loc in v[1])}
    assert len(metadata_only) >= 4
    opened = {k for k, v in metadata_only.items() if v[2] is not None}
    # a description may hide a tensor error behind its metadata errors (the spec stops at the first layer):
    # each of those must name it
    for k in set(metadata_only) - opened:
        assert "not only in its metadata" in str(metadata_only[k][3])
    assert len(opened) >= 4
    for k in opened:
        pkg = metadata_only[k][2]
        assert pkg.warnings[0].startswith("bioimageio.spec rejects this description")


@pytest.mark.slow
def test_broken_tensors_give_one_clear_error_each(outcomes):
    broken = {k: v[3] for k, v in outcomes.items() if v[2] is None}
    assert broken
    for name, err in broken.items():
        text = str(err)
        assert "rdf.yaml" in text and ("not only in its metadata" in text or "format 0.5" in text), name
        assert "Traceback" not in text
        # the message names what is wrong with the tensors, not the 0.5 fields a failed conversion leaves
        assert "format_version: Input should be" not in text, name


@pytest.mark.slow
def test_format_04_output_with_halo_and_fixed_size_is_read_exactly(outcomes):
    fixed = [pkg for (_a, _l, pkg, _e) in outcomes.values()
             if pkg is not None and any("fixed size" in w and "read as the size of input" in w for w in pkg.warnings)]
    assert fixed
    from bioimgzoo.descr.sizes import SizeRef
    from bioimgzoo.descr.tensors import tensor_specs

    for pkg in fixed:
        ins, outs = tensor_specs(pkg.descr)
        raw_out = pkg.raw["outputs"][0]
        spec = outs[0]
        for letter, size, halo in zip(raw_out["axes"], raw_out["shape"], raw_out["halo"]):
            if letter in "xyz":
                assert isinstance(spec.sizes[letter], SizeRef)
                assert spec.halo.get(letter, 0) == halo
                assert ins[0].sizes[letter].min == size and ins[0].sizes[letter].step == 0


@pytest.mark.slow
def test_info_describes_every_description_that_opens(outcomes, monkeypatch):
    # the deployed readers in their own environments (spec 0.5.7.4, core 0.10.4) are two subprocesses per
    # description: over 75 that is minutes; they are tested on real descriptions in test_readers_venvs and
    # test_export_readers, and JDLL's and YAML 1.1's replays still run here
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    runner = CliRunner()
    opened = [k for k, v in outcomes.items() if v[2] is not None]
    for name in opened:
        r = runner.invoke(main, ["info", "--json", str(RDFS / name)])
        assert r.exit_code == 0, (name, r.output[-500:])
        facts = json.loads(r.output)
        assert facts["inputs"] and facts["outputs"]
        assert facts["warnings"] == list(outcomes[name][2].warnings)
    with_notes = next(k for k in opened if outcomes[k][2].warnings)
    r = runner.invoke(main, ["info", str(RDFS / with_notes)])
    assert r.exit_code == 0 and "note: " in r.output
    broken = next(k for k, v in outcomes.items() if v[2] is None)
    r = runner.invoke(main, ["info", str(RDFS / broken)])
    assert r.exit_code != 0 and "Traceback" not in r.output


@pytest.mark.slow
def test_a_package_the_spec_rejects_for_metadata_only_runs_with_warnings(tmp_path):
    """Format 0.5 too: a license outside SPDX and a notebook as documentation do not stop a prediction."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    import yaml

    import bioimgzoo
    from bioimgzoo import testing as T

    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    rdf = T.write_package(tmp_path / "p", T.SameConv(), formats=("torchscript",),
                          inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
                          outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})])
    content = yaml.safe_load(rdf.read_text())
    content["license"] = "Our-Own-Lab-License"
    (rdf.parent / "notes.ipynb").write_text("{}")
    content["documentation"] = "notes.ipynb"
    rdf.write_text(yaml.safe_dump(content))

    pkg = open_package(rdf)
    assert pkg.warnings[0].startswith("bioimageio.spec rejects this description (format 0.5")
    assert any(w.startswith("license = 'Our-Own-Lab-License' ignored") for w in pkg.warnings)
    assert any(w.startswith("documentation = ") and "notes.ipynb" in w for w in pkg.warnings)
    assert pkg.descr.license is None and pkg.descr.documentation is None  # no placeholder is left behind
    model = bioimgzoo.load(rdf)
    test_out = np.load(rdf.parent / "test_out.npy")
    np.testing.assert_allclose(model.predict(x, axes="bcyx"), test_out, rtol=1e-5, atol=1e-6)

    # a broken tensor next to broken metadata stays an error, naming the tensor
    content["inputs"][0]["axes"][2]["size"] = {"min": -3, "step": 8}
    rdf.write_text(yaml.safe_dump(content))
    with pytest.raises(InvalidDescriptionError, match=r"not only in its metadata[\s\S]*inputs\.0\.axes"):
        open_package(rdf)
