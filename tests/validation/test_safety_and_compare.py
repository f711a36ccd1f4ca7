"""The pieces the checks are made of: pickle and Python scanners, zip problems, comparisons, completeness."""

from __future__ import annotations

import pickle
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from bioimgzoo.validation.files import zip_problems
from bioimgzoo.validation.format import completeness
from bioimgzoo.validation.reproduction import Tolerance, compare_outputs
from bioimgzoo.validation.safety import scan_pickle, scan_python, scan_state_dict


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo never",))


def test_pickle_scan_names_the_global_without_unpickling():
    for protocol in (2, 4):  # GLOBAL, then STACK_GLOBAL with memoised strings
        scan = scan_pickle(pickle.dumps(_Evil(), protocol=protocol))
        assert any(g.endswith(".system") for g in scan["globals"]), scan
        assert "REDUCE" in scan["opcodes"]
    assert "STACK_GLOBAL" in scan_pickle(pickle.dumps(_Evil(), protocol=4))["opcodes"]
    assert scan_pickle(b"\x80\x02garbage")["error"]


def test_state_dict_scan_allows_a_plain_state_dict_and_refuses_others(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "sd.pt"
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), good)
    scan = scan_state_dict(good)
    assert scan["disallowed_globals"] == [] and scan["disallowed_opcodes"] == []
    assert "collections.OrderedDict" in scan["globals"]
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert scan_state_dict(legacy)["disallowed_globals"] == []
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
    assert any(g.endswith(".system") for g in scan_state_dict(bad)["disallowed_globals"])


def test_python_scan_finds_aliases_and_calls_and_passes_a_plain_network():
    src = ("import subprocess as sp\nfrom os import system\nimport socket\nimport torch\n"
           "def f():\n    sp.Popen(['x'])\n    system('y')\n    eval('1')\n    torch.nn.Conv2d(1, 1, 3)\n")
    found = {f["what"] for f in scan_python(src)}
    assert {"import subprocess", "from os import system", "import socket", "subprocess.Popen",
            "os.system", "builtins.eval"} <= found
    assert not any("torch" in w for w in found)
    assert scan_python("import torch\nclass Net(torch.nn.Module):\n    pass\n") == []
    assert scan_python("def (:")[0]["what"] == "syntax error"


def test_zip_problems_are_read_from_the_directory(tmp_path):
    z = tmp_path / "p.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("rdf.yaml", "x")
        zf.writestr("/abs.txt", "x")
        zf.writestr("a.txt", "1")
        zf.writestr("a.txt", "2")
    kinds = {p["kind"] for p in zip_problems(z)}
    assert kinds == {"zip-slip", "duplicate"}
    assert zip_problems(tmp_path) == [] and zip_problems("not a path at all") == []


def test_compare_counts_mismatches_and_labels_up_to_relabelling():
    e = np.zeros((10, 100), np.float32)
    p = e.copy()
    p[0, :3] = 1.0
    cmp = compare_outputs(p, e, Tolerance())
    assert cmp["mismatched"] == 3 and cmp["mismatched_per_million"] == 3000 and not cmp["passed"]
    assert cmp["max_abs"] == 1.0 and cmp["difference"][0, 0] == 1.0
    assert compare_outputs(p, e, Tolerance(mismatched_per_million=5000))["passed"]
    labels = np.repeat(np.arange(4), 25).reshape(10, 10)
    relabelled = (labels + 1) % 4 * 10
    assert compare_outputs(relabelled, labels, Tolerance(), labels=True)["passed"]
    merged = np.where(labels == 3, 2, labels)
    assert compare_outputs(merged, labels, Tolerance(), labels=True)["mismatched"] == 25
    assert compare_outputs(np.zeros((2, 3)), np.zeros((3, 2)), Tolerance())["compared_as"] == "shape"


def test_completeness_lists_what_is_missing():
    descr = SimpleNamespace(authors=[SimpleNamespace(name="A", affiliation="X", orcid=None),
                                     SimpleNamespace(name="B", affiliation=None, orcid=None)],
                            maintainers=[], cite=[SimpleNamespace(text="paper", doi="10.1/x")],
                            license="MIT", covers=["c.png"], tags=["t"])
    score, present, missing = completeness(descr, "# Model\n\n## Validation\nDone.")
    assert score == pytest.approx(5 / 7)
    assert any("not: B" in m for m in missing) and any("maintainers" in m for m in missing)
    assert "documentation with a '# Validation' section" in present
    _, _, missing = completeness(descr, "# Model\n")
    assert "documentation with a '# Validation' section" in missing
    assert len(completeness(descr, None)[1]) + len(completeness(descr, None)[2]) == 6  # not read: not judged


def test_raw_file_refs_reads_format_04_attachments_and_odd_values():
    from bioimgzoo.validation.files import raw_file_refs

    refs = dict(raw_file_refs({
        "attachments": {"files": ["../../etc/passwd", {"source": "notes.txt"}]},  # format 0.4's shape
        "covers": "cover.png",  # a string where a list belongs: not read as one file per character
        "weights": {"onnx": {"source": "w.onnx"}, "torchscript": "junk"},
    }))
    assert refs == {"attachments[0]": "../../etc/passwd", "attachments[1]": "notes.txt", "weights.onnx": "w.onnx"}
