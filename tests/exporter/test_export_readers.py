"""What an export writes is what the deployed readers read (issue: packages every consumer opens).

The oldest 0.5 format that carries the package, plain file references, YAML every loader types alike, no
architecture imported from bioimgzoo (bioimgzoo's own network ships its source byte for byte and loads without
trust_code only while it is byte-identical), the tolerance capped by magnitude, a warning for raw inputs
without normalisation, and an offline ``validate`` that still reproduces the package.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
import yaml

from bioimgzoo.testing import checks as C
from bioimgzoo.testing import nets as N

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(0)


def _rdf(path) -> tuple[str, dict]:
    with zipfile.ZipFile(path) as zf:
        text = zf.read("rdf.yaml").decode()
    return text, yaml.safe_load(text)  # PyYAML: YAML 1.1


def _walk(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny U-Net of bioimgzoo's test-suite (not allow-listed: its source is extracted), exported once."""
    from bioimgzoo.exporter import export_package

    out = tmp_path_factory.mktemp("readers") / "tiny.zip"
    module = C.seeded(N.UNet2d, depth=2)
    example = RNG.random((1, 1, 64, 64)).astype(np.float32)
    meta = C.meta(authors=[{"name": "Ada Lovelace", "affiliation": "x", "github_user": "ada-nonexistent-19"}])
    result = export_package(module, example, out, name="Tiny UNet 2D", **meta,
                            preprocessing=[{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"],
                                                                                        "eps": 1e-06}}],
                            postprocessing=[{"id": "sigmoid"}])
    return result, module


def test_the_export_writes_what_every_reader_reads(tiny):
    from bioimageio.spec import load_description

    from bioimgzoo._yaml import load_yaml
    from bioimgzoo.validation.consumers._jdll_parse import jdll_read

    result, _ = tiny
    text, rdf = _rdf(result.path)
    # the oldest format that carries it: weights comments and reproducibility tolerances are 0.5.4's
    assert rdf["format_version"] == "0.5.4" and result.format_version == "0.5.4"
    assert "config.bioimageio.reproducibility_tolerance" in result.format_reasons
    # file references as plain relative paths (what JDLL casts to String, and spec < 0.5.11 requires)
    assert rdf["covers"] == ["cover.png"] and rdf["documentation"] == "README.md"
    refs = [v for p, v in _walk(rdf) if p.endswith(".source")]
    assert refs and all(isinstance(r, str) and "/" not in r and "://" not in r for r in refs)
    # numbers: YAML 1.1 (PyYAML) reads every value with the type YAML 1.2 (bioimageio.spec) reads
    assert "eps: 1.0e-06" in text and "1e-06" not in text
    assert {p: type(v) for p, v in _walk(rdf)} == {p: type(v) for p, v in _walk(load_yaml(text, "rdf"))}
    # JDLL's casts hold; no architecture imported from bioimgzoo; the file it ships imports none of it
    assert jdll_read(text) is None
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert "import_from" not in arch and arch["source"] == "architecture.py"
    import ast

    with zipfile.ZipFile(result.path) as zf:
        tree = ast.parse(zf.read("architecture.py"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + \
        [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.split(".")[0] == "bioimgzoo"], imported
    # today's bioimageio.spec reads the older form
    assert load_description(result.path, perform_io_checks=False).validation_summary.status == "valid-format"
    # every deployed reader was asked, and each opened it
    readers = {r["reader"]: r for r in result.readers}
    assert set(readers) == {"jdll", "yaml-1.1", "biapy", "zoo-ci"}
    assert all(r["status"] == "passed" for r in readers.values()), readers
    assert "0.5.7.4" in readers["biapy"]["version"] and "0.5.10.2" in readers["zoo-ci"]["version"]
    assert "format 0.5.4" in result.summary() and "readers" in result.summary()


def test_validate_offline_reproduces_a_fresh_export(tiny, monkeypatch):
    """No network: the github_user look-up is skipped with a warning, never a format failure that hides
    reproduction and agreement."""
    from bioimgzoo.validation import check_package

    monkeypatch.setenv("BIOIMGZOO_OFFLINE", "1")
    report = check_package(tiny[0].path, families=["format", "files", "reproduction"])
    by_id = {}
    for f in report.findings:
        by_id.setdefault(f.check, []).append(f)
    assert [f.status for f in by_id["format.github_users"]] == ["skipped"]
    assert "ada-nonexistent-19" in by_id["format.github_users"][0].message
    assert all(f.status == "passed" for f in by_id["format.spec"]), by_id["format.spec"]
    runtime = by_id["reproduction.runtime"]
    assert sorted(f.details.get("weights_format") for f in runtime if f.status == "passed") == ["onnx", "torchscript"]
    # the extracted architecture file is package code: it runs only with --trust-code
    assert all("trust" in f.message for f in runtime if f.status != "passed"), runtime
    assert report.status == "passed"


def test_own_network_ships_its_source_byte_for_byte_and_loads_without_trust(tmp_path):
    import bioimgzoo
    from bioimgzoo.errors import UntrustedCodeError
    from bioimgzoo.exporter import export_package
    from bioimgzoo.train import nets

    module = C.seeded(nets.UNet2d, depth=1, base=4)
    out = tmp_path / "own.zip"
    export_package(module, RNG.random((1, 1, 32, 32)).astype(np.float32), out, name="Own UNet 2D", **C.meta(),
                   weights=("pytorch_state_dict", "onnx"), postprocessing=[{"id": "sigmoid"}])
    _, rdf = _rdf(out)
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert "import_from" not in arch and arch["callable"] == "UNet2d"
    own = open(nets.__file__, "rb").read()
    with zipfile.ZipFile(out) as zf:
        shipped = zf.read(arch["source"])
        x = np.load(io.BytesIO(zf.read("test_input.npy")))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
    assert shipped == own and arch["sha256"] == hashlib.sha256(own).hexdigest()
    # byte-identical: no trust_code needed, and the result is the package's
    model = bioimgzoo.load(out, weights="pytorch_state_dict")
    np.testing.assert_allclose(model.predict(x[0], axes="cyx"), y[0], rtol=1e-5, atol=1e-6)

    # one byte more (the declared sha256 updated to match): package-chosen code like any other
    folder = tmp_path / "tampered"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(folder)
    (folder / "architecture.py").write_bytes(shipped + b"\n")
    text = (folder / "rdf.yaml").read_text().replace(arch["sha256"], hashlib.sha256(shipped + b"\n").hexdigest())
    (folder / "rdf.yaml").write_text(text)
    with pytest.raises(UntrustedCodeError, match="trust_code"):
        bioimgzoo.load(folder, weights="pytorch_state_dict").predict(x[0], axes="cyx")
    # the same bytes under another class name are not allow-listed either
    (folder / "architecture.py").write_bytes(shipped)
    (folder / "rdf.yaml").write_text(text.replace(hashlib.sha256(shipped + b"\n").hexdigest(), arch["sha256"])
                                     .replace("callable: UNet2d", "callable: _Up"))
    with pytest.raises(UntrustedCodeError):
        bioimgzoo.load(folder, weights="pytorch_state_dict").predict(x[0], axes="cyx")


class NegativeNet(torch.nn.Module):
    """Every output below zero (log-probability like): the tolerance cap must use the magnitude."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return -torch.abs(self.conv(x)) - 5.0


def test_negative_output_keeps_a_tolerance_by_magnitude(tmp_path):
    from bioimageio.spec import load_description

    from bioimgzoo.exporter import export_package

    module = C.seeded(NegativeNet)
    out = tmp_path / "neg.zip"
    result = export_package(module, RNG.random((1, 1, 32, 32)).astype(np.float32), out, name="Negative net",
                            **C.meta(), weights=("torchscript", "onnx"))
    notes = " ".join(result.notes)
    assert "none is declared" in notes and "largest magnitude" in notes
    # the check ran at a positive tolerance (the spec's default), never lowered to 0
    assert all(r["atol"] > 0 for r in result.reproducibility)
    _, rdf = _rdf(out)
    assert not rdf["config"]["bioimageio"].get("reproducibility_tolerance")
    assert load_description(out, perform_io_checks=True).validation_summary.status == "valid-format"


def test_format_version_option(tmp_path):
    from bioimgzoo.descr.readable import readable_rdf
    from bioimgzoo.errors import ExportError
    from bioimgzoo.exporter import export_package

    rdf = {"format_version": "0.5.12", "name": "a", "covers": [{"source": "c.png", "sha256": "0" * 64}],
           "documentation": {"source": "README.md", "sha256": "0" * 64},
           "weights": {"onnx": {"source": "w.onnx", "comment": "c"}}}
    out, fv, why = readable_rdf(rdf)
    assert fv == "0.5.4" and out["covers"] == ["c.png"] and out["documentation"] == "README.md"
    assert why == ["weights.onnx.comment"]
    out, fv, _ = readable_rdf(rdf, format_version="0.5.12")
    assert out["covers"] == rdf["covers"] and out["documentation"] == rdf["documentation"]
    with pytest.raises(ValueError, match="weights.onnx.comment need"):
        readable_rdf(rdf, format_version="0.5.3")
    no_comment = {**rdf, "weights": {"onnx": {"source": "w.onnx"}}}
    assert readable_rdf(no_comment)[1] == "0.5.3"
    # the option is checked before anything runs
    with pytest.raises(ExportError, match="format_version='0.4.10'"):
        export_package(N.UNet2d(), np.zeros((1, 1, 16, 16), np.float32), tmp_path / "x.zip", name="Some model",
                       **C.meta(), format_version="0.4.10")


def test_raw_input_without_normalisation_warns(tmp_path):
    from bioimgzoo.exporter._verdicts import normalisation_warnings
    from bioimgzoo.exporter._plan import ensure_dtype

    raw = (RNG.random((1, 1, 32, 32)) * 4000).astype(np.uint16)
    warnings = normalisation_warnings({"input": raw}, {"input": [ensure_dtype("float32")]})
    assert len(warnings) == 1 and "uint16" in warnings[0] and "--preprocessing" in warnings[0]
    from bioimgzoo.exporter._plan import _spec_procs

    zmuv = _spec_procs([{"id": "zero_mean_unit_variance"}], "pre", "pre")
    assert normalisation_warnings({"input": raw}, {"input": zmuv}) == []
    assert normalisation_warnings({"input": RNG.standard_normal((1, 1, 32, 32)).astype(np.float32)},
                                  {"input": []}) == []


def test_cli_export_takes_processing_and_format_version(tmp_path):
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    torch.manual_seed(0)
    net = N.UNet2d(depth=1)
    ckpt, example = tmp_path / "ckpt.pt", tmp_path / "ex.npy"
    torch.save(net.state_dict(), ckpt)
    np.save(example, (RNG.random((1, 1, 32, 32)) * 4000).astype(np.uint16))
    out = tmp_path / "cli.zip"
    base = ["export", "--module", "bioimgzoo.testing.nets:UNet2d", "--kwargs", '{"depth": 1}', "--checkpoint",
            str(ckpt), "--example", str(example), "--name", "CLI UNet 2D", "--description", "From the CLI.",
            "--author", "Test Author", "--weights", "torchscript", "--out", str(out)]
    res = CliRunner().invoke(main, base + ["--postprocessing", "sigmoid"])
    assert res.exit_code == 0, res.output
    assert "no normalisation is declared" in res.output  # raw uint16 in, nothing declared
    res = CliRunner().invoke(main, base + ["--preprocessing", "zero_mean_unit_variance", "--postprocessing",
                                           "sigmoid", "--format-version", "0.5.12"])
    assert res.exit_code == 0, res.output
    assert "no normalisation is declared" not in res.output
    _, rdf = _rdf(out)
    assert rdf["format_version"] == "0.5.12" and isinstance(rdf["covers"][0], dict)
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]][:2] == ["ensure_dtype", "zero_mean_unit_variance"] \
        or "zero_mean_unit_variance" in [p["id"] for p in rdf["inputs"][0]["preprocessing"]]
    assert [p["id"] for p in rdf["outputs"][0]["postprocessing"]][0] == "sigmoid"
    res = CliRunner().invoke(main, base + ["--preprocessing", "not an op!"])
    assert res.exit_code == 1 and "--preprocessing" in res.output


def test_an_export_passes_validates_agreement_of_formats(tiny):
    """The export judges its formats as validate does (one Tolerance, the zoo's comparison): what it writes
    passes agreement.formats, each format against the first, with the tolerance it declared."""
    from bioimgzoo.validation import check_package

    report = check_package(tiny[0].path, families=["format", "files", "reproduction", "agreement"], trust_code=True)
    formats = [f for f in report.findings if f.check == "agreement.formats"]
    assert len(formats) == 2 and all(f.status == "passed" for f in formats), formats
    assert {f.details["weights_format"] for f in formats} == {"torchscript", "pytorch_state_dict"}


def test_formats_that_disagree_beyond_the_declared_tolerance_are_refused_by_the_export():
    from bioimgzoo.descr.tolerance import Tolerance
    from bioimgzoo.errors import ExportError
    from bioimgzoo.exporter._reference import _formats_agree

    ref = np.linspace(0, 1, 1000, dtype=np.float32)
    tols = {"out": Tolerance(0.0, 1e-3, 0.0, "declared")}
    # each within 1e-3 of the module (+/- 0.9e-3), so 1.8e-3 apart from each other
    outputs = {"onnx": {"out": ref + 9e-4}, "torchscript": {"out": ref - 9e-4}}
    with pytest.raises(ExportError, match="agreement.formats"):
        _formats_agree(outputs, tols)
    _formats_agree({"onnx": {"out": ref + 4e-4}, "torchscript": {"out": ref - 4e-4}}, tols)
