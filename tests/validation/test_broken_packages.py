"""One broken package per failure: each fails with exactly its finding named, and nothing unsafe runs."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from bioimgzoo.testing import TensorDef, write_package  # noqa: E402
from bioimgzoo.validation import check_package  # noqa: E402

OWN = ("format", "files", "safety", "reproduction", "agreement")

ARCH = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x)))
'''


def _net(seed: int = 0, depth: int = 2):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(depth):
        layers += [torch.nn.Conv2d(1 if i == 0 else 4, 4 if i < depth - 1 else 1, 3, padding=1)]
        if i < depth - 1:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.3
    return net.eval()


def _write(folder: Path, module, *, formats=("torchscript", "onnx"), halo: int = 2, arch=None) -> Path:
    """A package of ``module`` (its halo: 2, the receptive-field radius of :func:`_net`'s two convolutions)."""
    x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    return write_package(folder, module, formats=formats, state_dict_architecture=arch,
                         inputs=[TensorDef("x_in", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
                         outputs=[TensorDef("y_out", "bcyx", refs={"y": ("x_in", "y"), "x": ("x_in", "x")},
                                            halo={"y": halo, "x": halo} if halo else {})])


def _failed(report) -> set[str]:
    return {f.check for f in report.failures if f.family in OWN}


def _edit_rdf(rdf: Path, change) -> None:
    data = yaml.safe_load(rdf.read_text())
    change(data)
    rdf.write_text(yaml.safe_dump(data, sort_keys=False))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A small valid package (torchscript + onnx, parametrized size): the base every broken one copies."""
    return _write(tmp_path_factory.mktemp("good"), _net()).parent


def _copy(good: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(good, dest)
    return dest


def _zip(folder: Path, dest: Path, extra=()) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
        for info, data in extra:
            zf.writestr(info, data)
    return dest


@pytest.mark.slow
def test_the_good_package_passes(good):
    report = check_package(good)
    assert report.passed, [(f.check, f.message) for f in report.failures]
    checks = {f.check for f in report.findings if f.status == "passed"}
    assert {"files.sha256", "files.present", "reproduction.runtime", "agreement.formats", "agreement.sizes",
            "agreement.determinism", "agreement.tiling"} <= checks
    sizes = next(f for f in report.findings if f.check == "agreement.sizes")
    assert len(sizes.details["tried"]) == 6  # n = 0, 1, 2 with batch 1 and 2


def test_sha256_mismatch(good, tmp_path):
    pkg = _copy(good, tmp_path)
    x = np.load(pkg / "test_x_in.npy")
    np.save(pkg / "test_x_in.npy", x + 1)
    report = check_package(pkg)
    assert _failed(report) == {"files.sha256"}
    f = next(f for f in report.failures if f.check == "files.sha256")
    assert "test_x_in.npy" in f.message and f.details["actual"] == _sha(pkg / "test_x_in.npy")
    assert {f.status for f in report.findings if f.family == "reproduction"} == {"skipped"}


def test_missing_file(good, tmp_path):
    pkg = _copy(good, tmp_path)
    (pkg / "test_y_out.npy").unlink()
    report = check_package(pkg)
    assert _failed(report) == {"files.present"}
    assert "test_y_out.npy" in next(f for f in report.failures if f.check == "files.present").message


def test_zip_slip(good, tmp_path):
    z = _zip(good, tmp_path / "slip.zip", [(zipfile.ZipInfo("../../evil.txt"), b"x")])
    report = check_package(z)
    assert _failed(report) == {"files.zip"}
    f = report.failures[0]
    assert f.details["kind"] == "zip-slip" and "evil.txt" in f.message and not report.passed
    assert not (tmp_path.parent / "evil.txt").exists()


def test_symlink_member(good, tmp_path):
    info = zipfile.ZipInfo("link.npy")
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    z = _zip(good, tmp_path / "link.zip", [(info, b"/etc/passwd")])
    report = check_package(z)
    assert _failed(report) == {"files.zip"}
    assert report.failures[0].details["kind"] == "symlink" and "link.npy" in report.failures[0].message


def test_nested_package_is_reported(good, tmp_path):
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(good.iterdir()):
            zf.write(p, f"model/{p.name}")
    report = check_package(z, families=["format", "files"])
    assert "files.zip" in _failed(report)
    assert next(f for f in report.failures if f.check == "files.zip").details["kind"] == "nested"


def _state_dict_package(tmp_path: Path, arch_source: str) -> Path:
    arch = tmp_path / "src" / "arch.py"
    arch.parent.mkdir(parents=True)
    arch.write_text(arch_source)
    net = _net()
    # the architecture file's Net has the same layers, named c1/c2: its state dict loads into it

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = net[0], net[2]

        def forward(self, x):
            return self.c2(torch.relu(self.c1(x)))

    rdf = _write(tmp_path / "w", Wrapped().eval(), formats=("onnx",), arch=(str(arch), "Net", {}))
    return rdf.parent


def test_state_dict_pickle_that_would_run_os_system(tmp_path):
    pkg = _state_dict_package(tmp_path, ARCH)
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import pickle

    weights = pkg / "weights_sd.pt"
    with zipfile.ZipFile(weights, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
        zf.writestr("archive/version", "3\n")
    _edit_rdf(pkg / "rdf.yaml", lambda d: d["weights"]["pytorch_state_dict"].update(sha256=_sha(weights)))
    for trust in (False, True):
        report = check_package(pkg, trust_code=trust)
        assert _failed(report) == {"safety.pickle"}, [(f.check, f.message) for f in report.failures]
        f = next(f for f in report.failures if f.check == "safety.pickle")
        assert "posix.system" in f.message or "nt.system" in f.message
        assert "posix.system" in f.details["disallowed_globals"] or "nt.system" in f.details["disallowed_globals"]
    assert not marker.exists()


def test_architecture_file_calling_subprocess(tmp_path):
    marker = tmp_path / "RAN"
    evil = ARCH.replace("import torch\n", "import subprocess\nimport torch\n", 1).replace(
        "super().__init__()", f"super().__init__()\n        subprocess.run(['touch', {str(marker)!r}])")
    pkg = _state_dict_package(tmp_path, evil)
    marker.unlink(missing_ok=True)  # write_package built the module in this process, not from the file
    report = check_package(pkg)
    assert _failed(report) == {"safety.code"}
    msgs = [f.message for f in report.failures if f.check == "safety.code"]
    assert any("import subprocess" in m for m in msgs) and any(": subprocess.run (" in m for m in msgs)
    assert not marker.exists()  # parsed, never run without trust
    repro = {f.details.get("weights_format"): f for f in report.findings if f.check == "reproduction.runtime"}
    assert not repro or all(f.status == "skipped" for f in repro.values())


def test_wrong_test_output_keeps_produced_and_difference(good, tmp_path):
    pkg = _copy(good, tmp_path)
    y = np.load(pkg / "test_y_out.npy")
    y[..., :8, :8] += 1.0
    np.save(pkg / "test_y_out.npy", y)
    sha = _sha(pkg / "test_y_out.npy")
    _edit_rdf(pkg / "rdf.yaml", lambda d: d["outputs"][0]["test_tensor"].update(sha256=sha))
    report = check_package(pkg)
    assert _failed(report) == {"reproduction.runtime"}
    f = next(f for f in report.failures if f.check == "reproduction.runtime")
    out = f.details["outputs"]["y_out"]
    assert out["mismatched_per_million"] == pytest.approx(64 / y.size * 1e6) and out["max_abs"] == pytest.approx(1, abs=1e-3)
    wf = f.details["weights_format"]
    produced, diff = report.artifacts[f"produced/{wf}/y_out"], report.artifacts[f"difference/{wf}/y_out"]
    assert produced.shape == y.shape
    assert np.allclose(diff, produced - y, atol=1e-5) and np.abs(diff[..., :8, :8] + 1).max() < 1e-3


def test_non_deterministic_outputs(tmp_path):
    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            return self.net(x) + 1e-4 * torch.rand_like(x)

    pkg = _write(tmp_path / "n", Noisy().eval(), formats=("torchscript",)).parent
    _edit_rdf(pkg / "rdf.yaml", lambda d: d.setdefault("config", {}).setdefault("bioimageio", {}).update(
        # spec allows at most 1% of the test output's maximum; the noise stays well below it
        reproducibility_tolerance=[{"absolute_tolerance": 5e-4, "relative_tolerance": 0.0}]))
    report = check_package(pkg)
    assert _failed(report) == {"agreement.determinism"}
    assert "two runs on the test input differ" in report.failures[0].message


def test_weight_formats_that_disagree(good, tmp_path):
    class Converted(torch.nn.Module):
        """A bad conversion: the same as the onnx weights at the test input's size only."""

        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            y = self.net(x)
            if x.shape[-1] == 32:
                return y
            return y * 2.0

    pkg = _copy(good, tmp_path)
    torch.jit.script(Converted().eval()).save(str(pkg / "weights.pt"))
    sha = _sha(pkg / "weights.pt")
    _edit_rdf(pkg / "rdf.yaml", lambda d: d["weights"]["torchscript"].update(sha256=sha))
    report = check_package(pkg, weights=["onnx", "torchscript"])
    # both reproduce the test tensor: only the input of another size shows the disagreement
    assert _failed(report) == {"agreement.formats"}
    f = report.failures[0]
    assert "torchscript disagrees with onnx on a random input" in f.message
    assert f.details["other_input"]["y_out"]["max_abs"] > 0.01 and f.details["test_input"]["y_out"]["passed"]


def test_too_small_halo_shows_seams(tmp_path):
    # six 3x3 convolutions: receptive-field radius 6, declared halo 1
    pkg = _write(tmp_path / "h", _net(depth=6), formats=("onnx",), halo=1).parent
    report = check_package(pkg)
    assert _failed(report) == {"agreement.tiling"}
    f = report.failures[0]
    seams = f.details["outputs"]["y_out"]["seams"]
    assert seams["max_abs"] > 1e-3 and seams["pixels"] > 0 and seams["band_width"] >= 1
    assert "seams of up to" in f.message
    assert report.artifacts["seams/onnx/y_out"].ndim == 2


@pytest.mark.slow
def test_reference_core_through_the_root_function(good):
    import bioimgzoo

    report = bioimgzoo.validate(good, reference="core", require=["careamics"])
    core = [f for f in report.findings if f.check == "reproduction.core"]
    assert {f.details["weights_format"] for f in core} == {"onnx", "torchscript"}
    assert all(f.status == "passed" and f.details["consumers_agree"] for f in core), [f.message for f in core]
    # CAREamics is not about this package: requiring it does not fail it
    assert report.consumers["careamics"]["status"] == "not-applicable" and report.passed


def test_spec_never_downloads_remote_files(good, tmp_path, monkeypatch):
    """bioimageio.spec would fetch http(s) files without our size caps: it checks the fields only, and the
    files family fetches them through bioimgzoo's client (here: a port nothing listens on)."""
    from bioimgzoo.validation import format as fmt

    pkg = _copy(good, tmp_path)
    _edit_rdf(pkg / "rdf.yaml", lambda d: d.update(covers=[{"source": "http://127.0.0.1:9/cover.png"}]))
    calls = []
    real = fmt.spec_findings
    monkeypatch.setattr(fmt, "spec_findings", lambda *a, **k: calls.append(k) or real(*a, **k))
    report = check_package(pkg, families=["format", "files"])
    assert calls and all(k["perform_io_checks"] is False for k in calls)
    assert _failed(report) == {"files.present"}, [(f.check, f.message) for f in report.failures]
    assert "127.0.0.1:9/cover.png" in report.failures[0].message
