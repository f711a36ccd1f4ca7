"""``bioimgzoo convert``: ONNX and TorchScript added to a state-dict-only package, checked, the rest kept.

The package is written with bioimageio.spec's classes (format 0.5) with
only ``pytorch_state_dict`` weights and an architecture file, as most live
zoo models ship; the converted package must pass ``bioimgzoo validate``,
bioimageio.core's ``test_description`` and DeepImageJ's weight rules
(D7-D11: opset 17 declared as in the file, IR <= 8), keep every other file
byte for byte and the description's format and other fields, and credit
the source format as each new entry's ``parent``.  TensorFlow -> ONNX is
tested on StarDist's own export in ``tests/producers``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

ARCH = '''
import torch


class Net(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, width, 3, padding=1)
        self.c2 = torch.nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.c2(torch.relu(self.c1(x))))
'''


@pytest.fixture(scope="module")
def state_dict_package(tmp_path_factory) -> Path:
    from bioimgzoo.testing import TensorDef, write_package

    tmp = tmp_path_factory.mktemp("convert")
    arch = tmp / "net_arch.py"
    arch.write_text(ARCH)
    ns: dict = {}
    exec(compile(ARCH, str(arch), "exec"), ns)
    torch.manual_seed(0)
    net = ns["Net"](width=4)
    x = np.random.default_rng(0).random((1, 1, 48, 64)).astype(np.float32)
    rdf = write_package(tmp / "pkg", net, formats=(), state_dict_architecture=(str(arch), "Net", {"width": 4}),
                        inputs=[TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
                        outputs=[TensorDef("prob", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")},
                                           halo={"y": 2, "x": 2})])
    return rdf.parent


@pytest.mark.slow
def test_convert_adds_onnx_and_torchscript_to_a_state_dict_package(state_dict_package, tmp_path):
    import onnx

    import bioimgzoo
    from bioimgzoo.exporter.convert import convert_package

    out = tmp_path / "converted.zip"
    result = convert_package(state_dict_package, out, to="onnx,ts", trust_code=True)
    assert [c.format for c in result.converted] == ["onnx", "torchscript"]
    assert all(c.parent == "pytorch_state_dict" for c in result.converted)
    with zipfile.ZipFile(out) as z:
        files = {i.filename: z.read(i) for i in z.infolist()}
    # every file of the old package, byte for byte
    for p in state_dict_package.rglob("*"):
        if p.is_file() and p.name != "rdf.yaml":
            assert files[p.relative_to(state_dict_package).as_posix()] == p.read_bytes(), p.name
    old = yaml.safe_load((state_dict_package / "rdf.yaml").read_text())
    new = yaml.safe_load(files["rdf.yaml"])
    assert {k: v for k, v in new.items() if k != "weights"} == {k: v for k, v in old.items() if k != "weights"}
    assert new["weights"]["pytorch_state_dict"] == old["weights"]["pytorch_state_dict"]
    assert new["weights"]["onnx"]["parent"] == new["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert new["weights"]["onnx"]["opset_version"] == 17
    model = onnx.load_from_string(files[new["weights"]["onnx"]["source"]])
    assert model.ir_version <= 8
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not model.graph.initializer or all(not t.external_data for t in model.graph.initializer)

    report = bioimgzoo.validate(out, trust_code=True)
    failures = [(f.check, f.message) for f in report.failures if f.family not in report.consumers]
    assert report.passed, failures
    ran = {f.details.get("weights_format") for f in report.of_family("reproduction") if f.status == "passed"}
    assert {"onnx", "torchscript", "pytorch_state_dict"} <= ran, ran
    for tool in ("deepimagej", "icy"):  # the rules about the formats these tools read
        failed = set(report.consumers[tool].get("failed_rules") or [])
        assert not {"D7", "D8", "D9", "D10", "D11"} & failed, (tool, failed)
    _core_passes(out)

    x = np.random.default_rng(3).random((72, 80)).astype(np.float32)
    want = bioimgzoo.load(out, weights="pytorch_state_dict", trust_code=True).predict(x)
    for fmt in ("onnx", "torchscript"):
        np.testing.assert_allclose(bioimgzoo.load(out, weights=fmt).predict(x), want, atol=1e-5)


def _core_passes(path: Path) -> None:
    """bioimageio.core's own test passes, and tests every weights format (metadata warnings aside)."""
    from bioimageio.core import test_description

    summary = test_description(path)
    failed = [(d.name, [e.msg[:300] for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    tested = {d.loc[1] for d in summary.details if len(d.loc) >= 2 and d.loc[0] == "weights"}
    assert {"onnx", "torchscript", "pytorch_state_dict"} <= tested, tested


def test_convert_runs_the_package_code_only_when_trusted(state_dict_package, tmp_path):
    from bioimgzoo.errors import ExportError, UntrustedCodeError
    from bioimgzoo.exporter.convert import convert_package

    with pytest.raises((UntrustedCodeError, ExportError), match="trust"):
        convert_package(state_dict_package, tmp_path / "x.zip", to="onnx")
    assert not (tmp_path / "x.zip").exists()


def test_convert_cli_says_what_it_wrote_and_refuses_what_it_cannot(state_dict_package, tmp_path):
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    out = tmp_path / "folder-out"
    res = CliRunner().invoke(main, ["convert", str(state_dict_package), "--to", "torchscript", "-o", str(out),
                                    "--trust-code"])
    assert res.exit_code == 0, res.output
    assert "torchscript" in res.output and "from pytorch_state_dict" in res.output
    assert (out / "rdf.yaml").is_file() and (out / "weights_torchscript.pt").is_file()
    # again: the output exists
    res = CliRunner().invoke(main, ["convert", str(state_dict_package), "--to", "torchscript", "-o", str(out),
                                    "--trust-code"])
    assert res.exit_code == 1 and "--overwrite" in res.output and "Traceback" not in res.output
    # a format it cannot write
    res = CliRunner().invoke(main, ["convert", str(state_dict_package), "--to", "keras", "-o",
                                    str(tmp_path / "k.zip")])
    assert res.exit_code == 1 and "--to" in res.output
    # nothing to make it from: the converted folder has torchscript already; a torchscript-only package -> ts
    res = CliRunner().invoke(main, ["convert", str(out), "--to", "torchscript", "-o", str(tmp_path / "t.zip"),
                                    "--trust-code"])
    assert res.exit_code == 1 and "has it already" in res.output


def test_a_0_4_description_with_pip_requirements_opens(tmp_path):
    """dependencies: pip:./requirements.txt (valid 0.4, refused by the 0.5 upgrade) opens, with a warning."""
    import bioimgzoo
    from bioimgzoo.runtime.dependencies import declared_dependencies

    fixture = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "zoo-rdfs-2023"
    src = fixture / "10.5281_zenodo.5764892_6322939" / "rdf.yaml"
    if not src.is_file():
        pytest.skip(f"zoo descriptions not found at {fixture}")
    text = src.read_text()
    assert "dependencies: conda:" in text
    lines = [("    dependencies: pip:./requirements.txt" if ln.strip().startswith("dependencies: conda:") else ln)
             for ln in text.splitlines()]
    (tmp_path / "rdf.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "requirements.txt").write_text("numpy\nscipy>=1.0\n")
    pkg = bioimgzoo.open_package(tmp_path / "rdf.yaml")
    assert any("pip requirements file" in w and "isolated" in w for w in pkg.warnings), pkg.warnings
    deps = declared_dependencies(pkg)
    assert deps is not None and deps.pip == ("numpy", "scipy>=1.0")
    # the requirements themselves, never the package's file (which could hold pip options: issue 20)
    assert deps.install_command() == "pip install numpy 'scipy>=1.0'"
