"""The exporter refuses, with the reason, a class body or module-level statement with side effects (issue 20).

Each source below is a user's training file whose network class needs
something that runs when the file is imported: a shell command in the class
body, an absolute file read at module level, a helper that loads a file, a
decorator that registers into a file, a default argument that reads one, a
process call in ``forward``.  Copied into ``architecture.py`` it would run in
every consumer of the package; the extraction refuses it and says which
statement and why, and nothing of it ever runs (no marker file).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from bioimgzoo.exporter._source import SourceUnavailable, extract_from_file

torch = pytest.importorskip("torch")

NET = '''
class Net(nn.Module):
    def __init__(self, n: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * SCALE
'''

HEAD = "import os\nimport subprocess\nimport numpy as np\nimport torch\nfrom torch import nn\n"


def _variants(marker: Path) -> dict[str, tuple[str, str]]:
    """name -> (source, words the refusal must hold)."""
    m = str(marker)
    body_cmd = NET.replace("    def __init__", f"    os.system('touch {m}')\n\n    def __init__", 1)
    return {
        "shell command in the class body": (HEAD + "SCALE = 2.0\n" + body_cmd, "os.system"),
        "class attribute from a process": (HEAD + "SCALE = 2.0\n" + NET.replace(
            "    def __init__", "    VERSION = subprocess.check_output(['true'])\n\n    def __init__", 1),
            "subprocess.check_output"),
        "absolute file read at module level": (HEAD + "SCALE = float(open('/etc/hostname').read() and 2.0)\n" + NET,
                                               "absolute path"),
        "helper that loads a file": (HEAD + "def _load():\n    return np.load('stats.npy')\n\nSCALE = _load()\n" + NET,
                                     "reads or writes a file"),
        "side effect inside a kept block": (HEAD + f"if True:\n    SCALE = 2.0\n    open({m!r}, 'w').close()\n" + NET,
                                            "writes files"),
        "bare call in a kept block": (HEAD + "try:\n    SCALE = 2.0\n    print('training starts')\nexcept Exception:\n"
                                      "    SCALE = 1.0\n" + NET, "run for its effect"),
        "decorator registering into a file": (
            HEAD + f"SCALE = 2.0\n\ndef register(cls):\n    open({m!r}, 'a').write(cls.__name__)\n    return cls\n\n"
            + NET.replace("class Net", "@register\nclass Net", 1), "writes files"),
        "default argument reading a file": (HEAD + "SCALE = 2.0\n" + NET.replace(
            "n: int = 4", "n: int = int(open('/proc/cpuinfo').readline() and 4)", 1), "absolute path"),
        "process in forward": (HEAD + "SCALE = 2.0\n" + NET.replace(
            "return self.conv(x) * SCALE", "subprocess.run(['true'])\n        return self.conv(x) * SCALE", 1),
            "subprocess.run"),
        "obfuscated in the class body": (HEAD + "SCALE = 2.0\n" + NET.replace(
            "    def __init__", "    _ = getattr(os, 'sys' + 'tem')\n\n    def __init__", 1), "os.system"),
    }


@pytest.mark.parametrize("name", sorted(_variants(Path("/x"))))
def test_side_effects_are_refused_with_the_reason(tmp_path, name):
    marker = tmp_path / "RAN"
    source, words = _variants(marker)[name]
    path = tmp_path / "train_script.py"
    path.write_text(source)
    with pytest.raises(SourceUnavailable) as info:
        extract_from_file(path, "Net")
    msg = str(info.value)
    assert "does more than define the network" in msg and words in msg, msg
    assert not marker.exists()


def test_a_clean_module_is_still_extracted(tmp_path):
    path = tmp_path / "train_script.py"
    path.write_text(HEAD + "SCALE = 2.0\nCHANNELS = [1, 2, 4]\n\ndef helper(n):\n    return n * 2\n" + NET
                    + "\nif __name__ == '__main__':\n    os.system('echo train')\n    np.save('/tmp/out.npy', 1)\n")
    extracted = extract_from_file(path, "Net")
    assert "SCALE = 2.0" in extracted.text and "os.system" not in extracted.text
    assert "import subprocess" not in extracted.text


@pytest.mark.slow
def test_export_ships_no_side_effect_and_says_why(tmp_path, monkeypatch):
    """End to end: a module whose class body would write a marker in any other process is not shipped as source."""
    import bioimgzoo
    from bioimgzoo.errors import ExportError
    from bioimgzoo.testing import checks as C

    marker = tmp_path / "RAN_ELSEWHERE"
    import os

    source = (HEAD + "SCALE = 2.0\n" + NET.replace(
        "    def __init__", f"    if os.getpid() != {os.getpid()}:\n        open({str(marker)!r}, 'w').close()\n\n"
        "    def __init__", 1))
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "bz_side_effect_net.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("bz_side_effect_net")
    try:
        torch.manual_seed(0)
        net = module.Net().eval()
        x = np.random.default_rng(0).random((1, 1, 16, 16)).astype(np.float32)
        with pytest.raises(ExportError) as info:
            bioimgzoo.export(net, x, tmp_path / "m.zip", name="side effect net", **C.meta(),
                             weights=["pytorch_state_dict"])
        assert "does more than define the network" in str(info.value) and "writes files" in str(info.value)
        assert not marker.exists()  # never rebuilt in a fresh process, never imported from a written file
    finally:
        sys.modules.pop("bz_side_effect_net", None)
    assert not (tmp_path / "m.zip").exists()

