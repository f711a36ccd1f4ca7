"""Validation faster while checking more: one model load per format for every check and tool, a network input
run once (determinism excepted), fixed-size tiling on strips that still finds seams, heavy modules imported
only when needed (issue 24, item 7).  Timings are measured by scripts/bench_validate.py, never asserted here."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

T = pytest.importorskip("bioimgzoo.testing")


@pytest.fixture(scope="module")
def two_formats(tmp_path_factory):
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("two"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 2, "x": 2})],
        formats=("onnx", "torchscript"))


def test_each_format_is_loaded_once_and_the_same_input_runs_once(two_formats, monkeypatch):
    from bioimgzoo.runtime import engines
    from bioimgzoo.validation import check_package

    loads, runs = [], []
    create = engines.create_engine

    def counting(package, fmt, **kw):
        engine = create(package, fmt, **kw)
        loads.append(fmt)
        inner = engine.run

        def run(inputs):
            runs.append((fmt, tuple(hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in inputs)))
            return inner(inputs)
        engine.run = run
        return engine

    monkeypatch.setattr(engines, "create_engine", counting)
    report = check_package(two_formats, keep_artifacts=False)  # every family and the six tools
    assert report.passed, [f.message for f in report.failures]
    assert sorted(loads) == ["onnx", "torchscript"]  # the tools' simulations use the run's models too
    # a network input runs once per format, but for determinism's second run of the test input
    repeated = {k: runs.count(k) for k in set(runs) if runs.count(k) > 1}
    assert all(n == 2 for n in repeated.values()) and {fmt for fmt, _ in repeated} <= {"onnx", "torchscript"}
    determinism = [f for f in report.findings if f.check == "agreement.determinism"]
    assert len(repeated) == len(determinism) == 2
    sizes = next(f for f in report.findings if f.check == "agreement.sizes")
    assert sizes.status == "passed"


def test_a_network_that_depends_on_its_batch_fails_sizes(tmp_path):
    torch = pytest.importorskip("torch")
    from bioimgzoo.validation import check_package

    class BatchNormInTraining(torch.nn.Module):
        def forward(self, x):  # normalised over the whole batch: an image's output depends on the others
            return (x - x.mean()) / (x.std() + 1e-6)

    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    pkg = T.write_package(tmp_path, BatchNormInTraining(),
                          inputs=[T.TensorDef("raw", "bcyx", sizes={"y": 16, "x": 16}, test=x)],
                          outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})],
                          formats=("onnx",))
    report = check_package(pkg, families=["format", "files", "reproduction", "agreement"])
    sizes = [f for f in report.findings if f.check == "agreement.sizes"]
    assert sizes and sizes[0].status == "failed" and "depends on the other images of its batch" in sizes[0].message


def test_fixed_size_tiling_checks_each_axis_and_finds_seams(tmp_path):
    from bioimgzoo.validation import check_package

    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    # two 3x3 convolutions (receptive-field radius 2) with a declared halo of 1: seams along both axes
    pkg = T.write_package(tmp_path, T.SameConv(), inputs=[T.TensorDef("raw", "bcyx", sizes={"y": 64, "x": 64},
                                                                      test=x)],
                          outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")},
                                               halo={"y": 1, "x": 1})], formats=("onnx",))
    report = check_package(pkg, families=["format", "files", "reproduction", "agreement"])
    tiling = next(f for f in report.findings if f.check == "agreement.tiling")
    assert tiling.status == "failed" and "(along y)" in tiling.message and "(along x)" in tiling.message
    assert tiling.details["strips"] == [{"y": 126, "x": 64}, {"y": 64, "x": 126}]
    assert report.artifacts["seams/onnx/out"].ndim == 2


def test_a_static_check_imports_no_engine():
    from pathlib import Path

    rdf = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad" / "rdf.yaml"
    if not rdf.is_file():
        pytest.skip("the shared zoo fixture is not beside the repository")
    code = ("import sys\nfrom bioimgzoo.validation import check_package\n"
            f"r = check_package({str(rdf)!r}, static=True)\n"
            "print(r.status, [m for m in ('torch', 'onnxruntime', 'onnx', 'scipy', 'xarray', 'zarr', 'dask') "
            "if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("[]"), res.stdout
