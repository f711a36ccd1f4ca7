"""A package whose architecture imports a package that is not installed: the message, and isolated=True.

The missing package is a tiny wheel built here from a setuptools project
(``pip wheel --no-build-isolation --no-index``: no network); the package's
environment file names it by requirement only, and the user names the wheel
folder (``wheels=`` / ``--wheels``).  Hostile environment files (paths,
URLs, pip options, a local project whose build backend writes a marker) are
refused before pip runs, and without ``trust_code`` nothing is installed at all.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioimgzoo.errors import InputError, UntrustedCodeError, WeightsError
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


def _wheel(tmp: Path, gain: float = 3.0, folder: str = "wheels") -> Path:
    src = tmp / f"dep-src-{folder}"
    (src / DEP).mkdir(parents=True)
    (src / DEP / "__init__.py").write_text(f"GAIN = {gain}\n")
    (src / "pyproject.toml").write_text(f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                        f'"setuptools.build_meta"\n\n[project]\nname = "{DEP}"\nversion = "0.1"\n')
    wheels = tmp / folder
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
    sys.path.insert(0, str(tmp / "dep-src-wheels"))
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
        sys.path.remove(str(tmp / "dep-src-wheels"))
        sys.modules.pop(DEP, None)
    env = rdf.parent / "environment.yaml"
    env.write_text(yaml.safe_dump({"name": "tiny", "channels": ["conda-forge"], "dependencies": [
        "python>=3.9", "pip", "pytorch", {"pip": [f"{DEP}==0.1"]}]}))
    descr = yaml.safe_load(rdf.read_text())
    descr["weights"]["pytorch_state_dict"]["dependencies"] = {
        "source": "environment.yaml", "sha256": hashlib.sha256(env.read_bytes()).hexdigest()}
    rdf.write_text(yaml.safe_dump(descr, sort_keys=False))
    return rdf, x, want, wheels


def test_the_dependency_file_is_read(package):
    deps = read_dependencies(package[0].parent / "environment.yaml")
    assert deps.pip == (f"{DEP}==0.1",) and not deps.conda_only
    assert {"python>=3.9", "pip", "pytorch"} == set(deps.provided)


def test_missing_architecture_dependency_names_module_file_and_command(package):
    import bioimgzoo

    with pytest.raises(WeightsError) as info:
        bioimgzoo.load(package[0], weights="pytorch_state_dict", trust_code=True)
    msg = str(info.value)
    assert f"imports {DEP!r}, which is not installed" in msg
    assert "environment.yaml" in msg and f"{DEP}==0.1" in msg
    assert f"declares in environment.yaml: {DEP}==0.1. Install them: pip install '{DEP}==0.1'" in msg
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

    with pytest.raises(UntrustedCodeError, match="installing a package runs its code"):
        bioimgzoo.load(package[0], isolated=True, wheels=package[3])
    with pytest.raises(InputError, match="with isolated=True"):
        bioimgzoo.load(package[0], wheels=package[3], trust_code=True)


@pytest.mark.slow
def test_isolated_runs_the_package_in_its_environment(package, tmp_path):
    """From this virtual environment (the suite's): the worker inherits its torch; the wheel is the user's."""
    import bioimgzoo
    from bioimgzoo import config
    from bioimgzoo.runtime.isolated import environment_key

    rdf, x, want, wheels = package
    model = bioimgzoo.load(rdf, trust_code=True, isolated=True, wheels=wheels)
    assert model.weights_format == "pytorch_state_dict"
    got = model.predict(x[0, 0], axes="yx")
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)
    tiled = model.predict(x[0, 0], axes="yx", tile=16, halo=1)  # windows through the worker, stitched here
    np.testing.assert_allclose(tiled, want[0], rtol=1e-5, atol=1e-5)
    envs = [p for p in (config.cache_dir() / "envs").iterdir()]
    assert [e.name for e in envs] == [environment_key([f"{DEP}==0.1"], wheels=wheels.resolve())[0]]
    assert DEP not in sys.modules  # it ran there, not here
    model.engine.close()

    # built once: a second load reuses it; the CLI flag takes the same path
    from click.testing import CliRunner

    from bioimgzoo.cli import main
    from bioimgzoo.io import write_image

    write_image(tmp_path / "img.tif", x[0, 0], axes="yx")
    res = CliRunner().invoke(main, ["predict", str(rdf), str(tmp_path / "img.tif"), "-o", str(tmp_path / "out"),
                                    "--trust-code", "--isolated", "--wheels", str(wheels), "--format", "npy"])
    assert res.exit_code == 0, res.output
    assert [p for p in (config.cache_dir() / "envs").iterdir()] == envs
    out = np.load(next((tmp_path / "out").glob("*out*.npy")))
    np.testing.assert_allclose(np.squeeze(out), want[0, 0], rtol=1e-5, atol=1e-6)

    # the same environment file with another wheel folder (same name and version, other content) is another
    # environment: one package's environment never runs another's wheel
    other = _wheel(tmp_path, gain=5.0, folder="other-wheels")
    model = bioimgzoo.load(rdf, trust_code=True, isolated=True, wheels=other)
    np.testing.assert_allclose(model.predict(x[0, 0], axes="yx"), want[0] * 5.0 / 3.0, rtol=1e-5, atol=1e-5)
    model.engine.close()
    assert len(list((config.cache_dir() / "envs").iterdir())) == 2


_PARENT_SCRIPT = """
import sys
from bioimgzoo.cli import main
main(prog_name="bioimgzoo", args=sys.argv[1:])
"""


@pytest.mark.slow
def test_isolated_from_a_fresh_virtual_environment(package, tmp_path):
    """`--isolated --trust-code --wheels` from a venv made here, whose base interpreter has no torch.

    The venv sees this suite's packages only through a .pth of its own site-packages (as a venv holding
    its own torch): an isolated environment built with --system-site-packages would see the base
    interpreter's packages and no torch.
    """
    import sysconfig

    rdf, x, want, wheels = package
    parent = tmp_path / "parent-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(parent)], check=True, capture_output=True)
    py = parent / "bin" / "python"
    site_dir = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    here = sysconfig.get_paths()["purelib"]
    (site_dir / "suite.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    base = subprocess.run([str(py), "-c", "import sys; print(sys.prefix != sys.base_prefix)"], capture_output=True,
                          text=True)
    assert base.stdout.strip() == "True"  # a virtual environment
    np.save(tmp_path / "img.npy", x[0, 0])
    res = subprocess.run([str(py), "-c", _PARENT_SCRIPT, "predict", str(rdf), str(tmp_path / "img.npy"), "-o",
                          str(tmp_path / "out"), "--axes", "yx", "--trust-code", "--isolated", "--wheels", str(wheels)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = np.load(next((tmp_path / "out").glob("*out*.npy")))
    np.testing.assert_allclose(np.squeeze(out), want[0, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_failed_build_leaves_nothing(tmp_path):
    from bioimgzoo import config
    from bioimgzoo.runtime.isolated import ensure_environment

    env = tmp_path / "environment.yaml"
    env.write_text(yaml.safe_dump({"dependencies": ["pip", {"pip": ["bzm-no-such-package==9"]}]}))
    (tmp_path / "no-wheels").mkdir()
    with pytest.raises(WeightsError, match="installing the dependencies of environment.yaml"):
        ensure_environment(read_dependencies(env), wheels=tmp_path / "no-wheels")
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


# ------------------------------------------------------------------ hostile dependency files
BACKEND = """
import pathlib
pathlib.Path({marker!r}).write_text("the build backend ran")


def build_wheel(*args, **kwargs):
    raise RuntimeError("never built")


def get_requires_for_build_wheel(*args, **kwargs):
    return []
"""


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """A local project whose in-tree build backend writes a marker when pip imports it."""
    tmp = tmp_path_factory.mktemp("evil")
    marker = tmp / "MARKER"
    proj = tmp / "evilproj"
    proj.mkdir()
    (proj / "backend.py").write_text(BACKEND.format(marker=str(marker)))
    (proj / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                         'backend-path = ["."]\n\n[project]\nname = "evil"\nversion = "1.0"\n')
    return proj, marker


def _hostile_lines(proj: Path) -> list[list[str]]:
    return [
        ["./evilproj"], [str(proj)], [f"evil @ file://{proj}"], ["evil @ file:./evilproj"],
        ["--find-links ./wheels", DEP], [f"--find-links={proj.parent}", "evil"], ["-f", str(proj.parent), "evil"],
        ["-e ./evilproj"], ["--editable=./evilproj"], ["-r other.txt"], ["-c constraints.txt", DEP],
        ["--index-url http://127.0.0.1:9/simple", "evil"], ["-i http://127.0.0.1:9/simple", "evil"],
        ["--extra-index-url=http://127.0.0.1:9/simple", "evil"], ["--trusted-host 127.0.0.1", "evil"],
        ["git+https://127.0.0.1:9/evil.git#egg=evil"], ["evil @ git+https://127.0.0.1:9/evil.git"],
        ["hg+https://127.0.0.1:9/evil"], ["http://127.0.0.1:9/evil-1.0.tar.gz"], ["evil @ https://127.0.0.1:9/e.zip"],
        ["evil-1.0.tar.gz"], ["evil-1.0-py3-none-any.whl"], ["evil.zip"], ["evil --config-settings=x=y"],
        ["evil --hash=sha256:00"], ["${HOME}/evilproj"], ["evil==1.0 \\"], [DEP, "evil; os_name == 'posix' @ x"],
    ]


def _allow_listed_package(package, tmp_path: Path, pip_lines: list[str]) -> Path:
    """The fixture's package re-described with bioimgzoo's own allow-listed network and a hostile env file."""
    src = package[0].parent
    dst = tmp_path / "pkg"
    shutil.copytree(src, dst)
    env = dst / "environment.yaml"
    env.write_text(yaml.safe_dump({"name": "evil", "dependencies": ["pip", {"pip": pip_lines}]}))
    descr = yaml.safe_load((dst / "rdf.yaml").read_text())
    entry = descr["weights"]["pytorch_state_dict"]
    entry["architecture"] = {"callable": "UNet2d", "import_from": "bioimgzoo.train.nets", "kwargs": {}}
    entry["dependencies"] = {"source": "environment.yaml", "sha256": hashlib.sha256(env.read_bytes()).hexdigest()}
    (dst / "rdf.yaml").write_text(yaml.safe_dump(descr, sort_keys=False))
    return dst / "rdf.yaml"


def test_the_hostile_project_would_run_under_pip(evil, tmp_path):
    """Control: pip building the local project runs its backend (what every refusal below prevents)."""
    proj, marker = evil
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path), str(proj)], capture_output=True, cwd=tmp_path)
    assert marker.is_file()
    marker.unlink()


def test_hostile_dependency_files_are_refused_before_pip_runs(package, evil, tmp_path):
    import bioimgzoo
    from bioimgzoo import config

    proj, marker = evil
    for i, lines in enumerate(_hostile_lines(proj)):
        rdf = _allow_listed_package(package, tmp_path / str(i), lines)
        # without trust: nothing is installed, even for an allow-listed network
        with pytest.raises(UntrustedCodeError, match="installing a package runs its code"):
            bioimgzoo.load(rdf, isolated=True)
        # with trust: only requirement specifiers from the index (or the user's wheel folder)
        with pytest.raises(WeightsError, match="bioimgzoo installs only requirement specifiers") as info:
            bioimgzoo.load(rdf, isolated=True, trust_code=True, wheels=package[3])
        assert "asks pip for" in str(info.value) and "--wheels DIR" in str(info.value), lines
        assert not marker.exists(), lines
    assert not (config.cache_dir() / "envs").exists()  # nothing was even started


def test_requirement_lines_kept_and_refused():
    from bioimgzoo.runtime.dependencies import index_requirements

    ok = ["numpy>=1.24", "scikit-image ==0.21.*  # the filters", "torch", "foo[bar,baz]>=1,<2",
          "bar; python_version >= '3.9'", "# a comment", "", "Pillow~=10.0"]
    assert index_requirements(ok, where="f") == ("numpy>=1.24", "scikit-image==0.21.*", "torch", "foo[bar,baz]<2,>=1",
                                                 'bar; python_version >= "3.9"', "Pillow~=10.0")
    for bad in ("./x", "x @ https://h/x.whl", "-e .", "--pre", "x.whl", "git+ssh://h/x", "$X", "C:\\x"):
        with pytest.raises(WeightsError, match="asks pip for"):
            index_requirements(["numpy", bad], where="f")


def test_environment_key_covers_what_decides_the_content(tmp_path):
    from bioimgzoo.runtime.isolated import environment_key

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x-1.0-py3-none-any.whl").write_bytes(b"one")
    (b / "x-1.0-py3-none-any.whl").write_bytes(b"two")
    keys = {environment_key(["x==1.0"])[0], environment_key(["x==1.0"], wheels=a)[0],
            environment_key(["x==1.0"], wheels=b)[0], environment_key(["x==1.1"])[0]}
    assert len(keys) == 4
    assert environment_key(["y", "x"])[0] == environment_key(["x", "y"])[0]
    (b / "x-1.0-py3-none-any.whl").write_bytes(b"one")  # same name, same content: the folder still counts
    assert environment_key(["x==1.0"], wheels=a)[0] != environment_key(["x==1.0"], wheels=b)[0]
    content = environment_key(["x"])[1]
    assert content["python"][0] and content["torch"] and content["inherits"]


def test_pip_s_index_settings_are_part_of_the_key(monkeypatch):
    from bioimgzoo.runtime.isolated import environment_key

    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    plain = environment_key(["x==1.0"])[0]
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert environment_key(["x==1.0"])[0] != plain


def test_the_install_command_a_message_suggests_holds_no_package_chosen_option(tmp_path):
    env = tmp_path / "environment.yaml"
    env.write_text(yaml.safe_dump({"dependencies": ["pip", {"pip": ["--index-url http://127.0.0.1:9/simple",
                                                                     "evil @ file:///tmp/evil", "numpy>=1.24"]}]}))
    assert read_dependencies(env).install_command() == "pip install 'numpy>=1.24'"
    req = tmp_path / "requirements.txt"
    req.write_text("-r other.txt\n--find-links /tmp/w\nscipy\n")
    assert read_dependencies(req).install_command() == "pip install scipy"
