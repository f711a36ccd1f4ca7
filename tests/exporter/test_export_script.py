"""Export from a training script, a function and the command line without running the user's program again.

The scripts below train a few steps and call ``bioimgzoo.export`` at their end, with no main guard, as
tutorials do.  Each appends a line to a marker file when its body runs: the export must not run it again
(importing the script to rebuild the class would), and ``bioimgzoo export --module script.py:Class`` must
not run it at all.  The package's state dict must rebuild the module from the generated architecture
file alone, in a fresh process, with the script deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bioimgzoo.exporter._source import SourceUnavailable, extract_from_file

torch = pytest.importorskip("torch")

_NETWORK = '''
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

Path(os.environ["MARKER"]).open("a").write("script body ran\\n")
WIDTH = 4
UNUSED_DATA = np.zeros(3)  # not needed by the network: must not be copied


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


class TinyUNet(nn.Module):
    def __init__(self, in_channels=1, out_channels=1, width=WIDTH):
        super().__init__()
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        self.down = conv_block(in_channels, width)
        self.bottom = conv_block(width, width)
        self.up = conv_block(2 * width, width)
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, x):
        d = self.down(x)
        b = F.interpolate(self.bottom(F.max_pool2d(d, 2)), scale_factor=2.0, mode="nearest")
        return self.head(self.up(torch.cat([b, d], 1)))
'''

_TRAIN = '''
torch.manual_seed(0)
net = {make}
optimizer = torch.optim.Adam(net.parameters(), 1e-2)
for step in range(3):
    x = torch.randn(2, 1, 32, 32)
    loss = ((net(x) - (x > 0).float()) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
torch.save(net.state_dict(), "checkpoint.pt")
np.save("example.npy", np.random.default_rng(0).standard_normal((1, 1, 48, 48)).astype("float32"))

import bioimgzoo

result = bioimgzoo.export(net, np.load("example.npy"), "script.zip", name="Tiny script U-Net",
                          description="Trained for three steps by a test script.",
                          authors=[{{"name": "Ann Author", "github_user": "bioimageiobot"}}],
                          task="semantic-segmentation", weights=["pytorch_state_dict"])
print(result)
'''

_IN_FUNCTION = '''
def build_network(width):
    scale = 2.0  # a constant of the function the class uses

    class LocalNet(nn.Module):
        def __init__(self, channels=4):
            super().__init__()
            self.channels = channels
            self.block = conv_block(1, channels)
            self.head = nn.Conv2d(channels, 1, 1)

        def forward(self, x):
            y = F.interpolate(F.max_pool2d(self.block(x), 2), scale_factor=scale, mode="nearest")
            return self.head(y)

    return LocalNet(width)
'''


def _python(args, cwd: Path, marker: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MARKER": str(marker), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def _rebuilds_alone(zip_path: Path, tmp: Path) -> None:
    """In a fresh process, with only the unpacked package: architecture file + state dict = the test output."""
    folder = tmp / "unpacked"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    import yaml

    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    sd = rdf["weights"]["pytorch_state_dict"]
    arch = sd["architecture"]
    assert arch["source"] == "architecture.py" and "kwargs" in arch
    code = textwrap.dedent(f"""
        import importlib.util, json, numpy as np, torch
        spec = importlib.util.spec_from_file_location("arch", "architecture.py")
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        net = getattr(mod, {arch['callable']!r})(**json.loads({json.dumps(json.dumps(arch['kwargs']))}))
        net.load_state_dict(torch.load({sd['source']!r}, weights_only=True)); net.eval()
        with torch.no_grad():
            got = net(torch.from_numpy(np.load("test_input.npy"))).numpy()
        np.testing.assert_allclose(got, np.load("test_output.npy"), rtol=1e-5, atol=1e-6)
        print("rebuilt")
    """)
    proc = _python(["-I", "-c", code], folder, tmp / "unused-marker")
    assert "rebuilt" in proc.stdout


def _core_test_passes(zip_path: Path) -> None:
    from bioimageio.core import test_description

    summary = test_description(zip_path)
    assert summary.status == "passed", summary.format()


@pytest.mark.slow
def test_script_with_top_level_class_runs_once_then_cli_runs_it_never(tmp_path):
    script = tmp_path / "train_and_share.py"
    script.write_text(_NETWORK + _TRAIN.format(make="TinyUNet()"))
    marker = tmp_path / "marker.txt"
    proc = _python([script.name], tmp_path, marker)
    assert _runs(marker) == 1, "the export ran the training script again"
    assert "pytorch_state_dict" in proc.stdout and "BiaPy" in proc.stdout  # the printed summary
    zip_path = tmp_path / "script.zip"
    with zipfile.ZipFile(zip_path) as zf:
        architecture = zf.read("architecture.py").decode()
    # the network's definitions, not the program: no training loop, no export, no unused data
    assert "class TinyUNet" in architecture and "def conv_block" in architecture and "WIDTH = 4" in architecture
    assert "optimizer" not in architecture and "bioimgzoo" not in architecture.split('"""', 2)[2]
    assert "UNUSED_DATA" not in architecture and "MARKER" not in architecture

    # the command line, on the same script: extracts the class, never runs the file
    out = tmp_path / "cli.zip"
    _python(["-m", "bioimgzoo.cli", "export", "--module", f"{script.name}:TinyUNet", "--checkpoint",
             "checkpoint.pt", "--example", "example.npy", "--name", "Tiny CLI U-Net", "--description",
             "Exported by the command line from a training script.", "--author", "Ann Author",
             "--maintainer", "Ann Author:bioimageiobot", "--task", "semantic-segmentation",
             "--weights", "pytorch_state_dict", "--out", out.name], tmp_path, marker)
    assert _runs(marker) == 1, "bioimgzoo export --module ran the script"

    script.unlink()
    for zp in (zip_path, out):
        _rebuilds_alone(zp, tmp_path / zp.stem)
        _core_test_passes(zp)


@pytest.mark.slow
def test_class_defined_inside_a_function_keeps_its_state_dict(tmp_path):
    script = tmp_path / "train_in_function.py"
    script.write_text(_NETWORK + _IN_FUNCTION + _TRAIN.format(make="build_network(4)"))
    marker = tmp_path / "marker.txt"
    _python([script.name], tmp_path, marker)
    assert _runs(marker) == 1
    zip_path = tmp_path / "script.zip"
    with zipfile.ZipFile(zip_path) as zf:
        architecture = zf.read("architecture.py").decode()
    assert "scale = 2.0" in architecture and "class LocalNet" in architecture
    assert "def build_network" not in architecture
    script.unlink()
    _rebuilds_alone(zip_path, tmp_path)
    _core_test_passes(zip_path)


def test_extract_keeps_only_what_the_class_uses(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(_NETWORK + "\nnet = TinyUNet()\nfor i in range(3):\n    net(torch.zeros(1, 1, 8, 8))\n")
    marker = tmp_path / "marker.txt"
    os.environ["MARKER"] = str(marker)
    try:
        extracted = extract_from_file(script, "TinyUNet")
    finally:
        os.environ.pop("MARKER")
    assert not marker.exists()  # read, not run
    assert set(extracted.names) == {"nn", "F", "torch", "conv_block", "WIDTH"}
    namespace: dict = {}
    exec(compile(extracted.text, "architecture.py", "exec"), namespace)  # the extract alone defines the class
    net = namespace["TinyUNet"](width=2)
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("body, reason", [
    ("def f(w):\n    class N(nn.Module):\n        def forward(self, x):\n            return x * w\n    return N\n",
     "argument of the enclosing function"),
    ("from .local import helper\nclass N(nn.Module):\n    def forward(self, x):\n        return helper(x)\n",
     "relative import"),
    ("class N(nn.Module):\n    def forward(self, x):\n        return undefined_helper(x)\n", "not defined"),
])
def test_extract_says_why_it_cannot(tmp_path, body, reason):
    script = tmp_path / "s.py"
    script.write_text("from torch import nn\n" + body)
    from bioimgzoo.exporter._source import _extract

    path = ["f", "N"] if body.startswith("def f") else ["N"]
    with pytest.raises(SourceUnavailable, match=reason):
        _extract(script.read_text(), str(script), path, None, origin="s.py")


@pytest.mark.slow
def test_unextractable_class_ships_torchscript_and_onnx_and_says_why(tmp_path):
    from bioimgzoo.exporter import export_package
    from bioimgzoo.testing import checks as C

    def make(gain: float):
        class Gain(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

            def forward(self, x):
                return self.conv(x) * gain  # the enclosing function's argument: only alive while it runs

        return Gain()

    torch.manual_seed(0)
    example = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    result = export_package(make(2.0), example, tmp_path / "g.zip", name="Gain net", **C.meta())
    assert result.weights_formats == ["torchscript", "onnx"]
    assert "pytorch_state_dict" in result.left_out and "argument" in result.left_out["pytorch_state_dict"]
    assert "pytorch_state_dict" in result.summary() and "NOT written" in result.summary()
    readme = zipfile.ZipFile(result.path).read("README.md").decode()
    assert "No pytorch_state_dict weights" in readme and "gain" in readme


def test_notebook_class_is_extracted_from_the_executed_cells(monkeypatch):
    """In Jupyter each cell is its own pseudo-file: the imports of earlier cells are found in ``In``."""
    import linecache

    from bioimgzoo.exporter._source import extract_architecture

    cells = ["import torch\nfrom torch import nn\nK = 3\n", "x = 1 +\n",  # a cell with a syntax error
             "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
             "        self.c = nn.Conv2d(1, 1, K, padding=1)\n    def forward(self, x):\n        return self.c(x)\n",
             "net = Net()\nfor step in range(100):\n    pass\n"]
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "In", [""] + cells, raising=False)
    cell_file = "/nonexistent/ipykernel_1/cell3.py"
    monkeypatch.setitem(linecache.cache, cell_file, (len(cells[2]), None, cells[2].splitlines(True), cell_file))
    namespace = {"__name__": "__main__"}
    exec(compile(cells[0], "/nonexistent/ipykernel_1/cell1.py", "exec"), namespace)
    exec(compile(cells[2], cell_file, "exec"), namespace)
    text = extract_architecture(namespace["Net"]).text
    assert "from torch import nn" in text and "K = 3" in text and "class Net" in text
    assert "range(100)" not in text and "x = 1" not in text
