"""A package whose architecture imports a package that is not installed: the message, and isolated=True.

The missing package is a tiny wheel built here from a setuptools project
(``pip wheel --no-build-isolation --no-index``: no network), which the
package's environment file points pip at with ``--find-links``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioimgzoo.errors import UntrustedCodeError, WeightsError
from bioimgzoo.runtime.dependencies import read_dependencies

DEP = "bzmtinydep"  # a name no index has
ARCH = f'''
import torch
import {DEP}


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * {DEP}.GAIN
'''


def _wheel(tmp: Path) -> Path:
    src = tmp / "dep-src"
    (src / DEP).mkdir(parents=True)
    (src / DEP / "__init__.py").write_text("GAIN = 3.0\n")
    (src / "pyproject.toml").write_text(f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                        f'"setuptools.build_meta"\n\n[project]\nname = "{DEP}"\nversion = "0.1"\n')
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-index", "--no-deps",
                    "-w", str(wheels), str(src)], check=True, capture_output=True)
    return wheels


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A state-dict package (architecture file importing the tiny dependency) declaring its environment."""
    import torch

    from bioimgzoo.testing import TensorDef, write_package

    tmp = tmp_path_factory.mktemp("isolated")
    wheels = _wheel(tmp)
    arch = tmp / "tiny_arch.py"
    arch.write_text(ARCH)
    # the package is written (and core makes its test output) with the dependency importable once
    sys.path.insert(0, str(tmp / "dep-src"))
    try:
        ns: dict = {}
        exec(compile(ARCH, str(arch), "exec"), ns)
        torch.manual_seed(0)
        net = ns["Net"]()
        x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
        rdf = write_package(tmp / "pkg", net, inputs=[TensorDef("raw", "bcyx", sizes={"y": (16, 16), "x": (16, 16)},
                                                                test=x)],
                            outputs=[TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})],
                            formats=(), state_dict_architecture=(str(arch), "Net", {}))
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
    finally:
        sys.path.remove(str(tmp / "dep-src"))
        sys.modules.pop(DEP, None)
    env = rdf.parent / "environment.yaml"
    env.write_text(yaml.safe_dump({"name": "tiny", "channels": ["conda-forge"], "dependencies": [
        "python>=3.9", "pip", "pytorch", {"pip": ["--no-index", f"--find-links {wheels}", f"{DEP}==0.1"]}]}))
    descr = yaml.safe_load(rdf.read_text())
    descr["weights"]["pytorch_state_dict"]["dependencies"] = {
        "source": "environment.yaml", "sha256": hashlib.sha256(env.read_bytes()).hexdigest()}
    rdf.write_text(yaml.safe_dump(descr, sort_keys=False))
    return rdf, x, want


def test_the_dependency_file_is_read(package):
    deps = read_dependencies(package[0].parent / "environment.yaml")
    assert deps.pip[-1] == f"{DEP}==0.1" and not deps.conda_only
    assert {"python>=3.9", "pip", "pytorch"} == set(deps.provided)


def test_missing_architecture_dependency_names_module_file_and_command(package):
    import bioimgzoo

    with pytest.raises(WeightsError) as info:
        bioimgzoo.load(package[0], weights="pytorch_state_dict", trust_code=True)
    msg = str(info.value)
    assert f"imports {DEP!r}, which is not installed" in msg
    assert "environment.yaml" in msg and f"{DEP}==0.1" in msg
    assert f"declares in environment.yaml: {DEP}==0.1. Install them: pip install --no-index --find-links " \
        f"{package[0].parent.parent.parent / 'wheels'} '{DEP}==0.1'" in msg
    assert "--isolated" in msg


def test_conda_only_dependencies_are_listed(tmp_path):
    from bioimgzoo.runtime.isolated import ensure_environment

    env = tmp_path / "environment.yaml"
    env.write_text("dependencies:\n  - conda-forge::vigra\n  - surely-not-installed-pkg=1.2\n  - numpy\n")
    deps = read_dependencies(env)
    assert deps.conda_only == ("conda-forge::vigra", "surely-not-installed-pkg=1.2")
    assert deps.provided == ("numpy",)  # installed here: reused
    with pytest.raises(WeightsError, match="conda-only packages: conda-forge::vigra, surely-not-installed-pkg=1.2"):
        ensure_environment(deps)


def test_isolated_needs_trust(package):
    import bioimgzoo

    with pytest.raises(UntrustedCodeError):
        bioimgzoo.load(package[0], isolated=True)


@pytest.mark.slow
def test_isolated_runs_the_package_in_its_environment(package, tmp_path):
    import bioimgzoo
    from bioimgzoo import config

    rdf, x, want = package
    model = bioimgzoo.load(rdf, trust_code=True, isolated=True)
    assert model.weights_format == "pytorch_state_dict"
    got = model.predict(x[0, 0], axes="yx")
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)
    tiled = model.predict(x[0, 0], axes="yx", tile=16, halo=1)  # windows through the worker, stitched here
    np.testing.assert_allclose(tiled, want[0], rtol=1e-5, atol=1e-5)
    envs = [p for p in (config.cache_dir() / "envs").iterdir()]
    assert len(envs) == 1 and envs[0].name == read_dependencies(rdf.parent / "environment.yaml").sha256
    assert DEP not in sys.modules  # it ran there, not here
    model.engine.close()

    # built once: a second load reuses it; the CLI flag takes the same path
    from click.testing import CliRunner

    from bioimgzoo.cli import main
    from bioimgzoo.io import write_image

    write_image(tmp_path / "img.tif", x[0, 0], axes="yx")
    res = CliRunner().invoke(main, ["predict", str(rdf), str(tmp_path / "img.tif"), "-o", str(tmp_path / "out"),
                                    "--trust-code", "--isolated", "--format", "npy"])
    assert res.exit_code == 0, res.output
    assert [p for p in (config.cache_dir() / "envs").iterdir()] == envs
    out = np.load(next((tmp_path / "out").glob("*out*.npy")))
    np.testing.assert_allclose(np.squeeze(out), want[0, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_failed_build_leaves_nothing(tmp_path):
    from bioimgzoo import config
    from bioimgzoo.runtime.isolated import ensure_environment

    env = tmp_path / "environment.yaml"
    env.write_text(yaml.safe_dump({"dependencies": ["pip", {"pip": ["--no-index", f"--find-links {tmp_path}",
                                                                     "bzm-no-such-package==9"]}]}))
    with pytest.raises(WeightsError, match="installing the dependencies of environment.yaml"):
        ensure_environment(read_dependencies(env))
    assert [p.name for p in (config.cache_dir() / "envs").iterdir()] == []


def test_a_library_architecture_that_is_not_installed(tmp_path):
    from types import SimpleNamespace

    from bioimgzoo.runtime.engines import StateDictEngine

    arch = SimpleNamespace(import_from="bzm_missing_lib.nets", callable="UNet", kwargs={})
    package = SimpleNamespace(name="careamics-like", descr=SimpleNamespace(weights=SimpleNamespace(
        pytorch_state_dict=SimpleNamespace(dependencies=None))))
    with pytest.raises(WeightsError, match=r"careamics-like imports 'bzm_missing_lib', which is not installed; the "
                                           r"package declares no dependencies: pip install bzm_missing_lib"):
        StateDictEngine(tmp_path / "w.pt", arch, package=package, device="cpu", trust_code=True)
