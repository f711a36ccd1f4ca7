"""Safety verdicts that hold against a hostile package author (issue 20).

Each attack is built here and must end in a FAILED safety finding, with
nothing run: pickles placed where ``torch.load`` reads them but a zip scan
does not (a pickle in front of a clean torch zip; the fifth pickle of a
legacy file; a STACK_GLOBAL whose names come from the memo), library or
imported callables named as the architecture (``os:system``), obfuscated
code in the architecture file (aliases, star imports, getattr / sys.modules /
builtins indirection, strings folded at run time), and ONNX external data
hidden in function constants, sparse initializers, subgraphs and training
graphs.  The controls show each pickle attack is real: a plain
``torch.load`` (in a subprocess) does run it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from bioimgzoo.validation import check_package  # noqa: E402
from bioimgzoo.validation.safety import (onnx_external_data, scan_pickle, scan_python,  # noqa: E402
                                         scan_state_dict)

from .test_broken_packages import ARCH, _state_dict_package  # noqa: E402


class _Touch:
    """Unpickling it runs ``touch MARKER`` (os.system): what a hostile state dict does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sd_package(tmp_path_factory) -> Path:
    """A valid package with state-dict weights and an architecture file (plus onnx)."""
    return _state_dict_package(tmp_path_factory.mktemp("sd"), ARCH)


def _variant(sd_package: Path, tmp_path: Path, *, weights: bytes | None = None, arch: str | None = None,
             edit=None) -> Path:
    pkg = tmp_path / "pkg"
    shutil.copytree(sd_package, pkg)
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text())
    entry = rdf["weights"]["pytorch_state_dict"]
    if weights is not None:
        (pkg / entry["source"]).write_bytes(weights)
        entry["sha256"] = _sha(pkg / entry["source"])
    if arch is not None:
        (pkg / entry["architecture"]["source"]).write_text(arch)
        entry["architecture"]["sha256"] = _sha(pkg / entry["architecture"]["source"])
    if edit is not None:
        edit(rdf)
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return pkg


def _safety(pkg: Path) -> dict[str, list]:
    report = check_package(pkg, families=["files", "safety"], deepimagej=False)
    out: dict[str, list] = {}
    for f in report.findings:
        if f.family == "safety":
            out.setdefault(f.check, []).append(f)
    return out


def _clean_state_dict() -> bytes:
    buf = io.BytesIO()
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), buf)
    return buf.getvalue()


def _legacy_state_dict() -> bytes:
    buf = io.BytesIO()
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _torch_load_runs(path: Path, marker: Path) -> bool:
    """Control: a plain torch.load of ``path`` in a subprocess writes ``marker``."""
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120)
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ran


# ------------------------------------------------------------------------------------------------ pickles
def test_a_pickle_in_front_of_a_clean_torch_zip_fails(sd_package, tmp_path):
    marker = tmp_path / "PWNED"
    polyglot = pickle.dumps(_Touch(marker), protocol=2) + _clean_state_dict()
    assert zipfile.is_zipfile(io.BytesIO(polyglot))  # what fooled the scan: the zip at the end
    (tmp_path / "poly.pt").write_bytes(polyglot)
    assert _torch_load_runs(tmp_path / "poly.pt", marker)  # torch reads the leading pickle
    scan = scan_state_dict(tmp_path / "poly.pt")
    assert scan["format"] == "legacy" and any(g.endswith(".system") for g in scan["disallowed_globals"])
    found = _safety(_variant(sd_package, tmp_path, weights=polyglot))
    assert [f.status for f in found["safety.pickle"]] == ["failed"]
    assert "system" in found["safety.pickle"][0].message and not marker.exists()


@pytest.mark.parametrize("which", [0, 2, 3, 4])  # magic number, system info, the object, the storage keys
def test_every_pickle_of_a_legacy_file_is_scanned(sd_package, tmp_path, which):
    marker = tmp_path / "PWNED"
    data = _legacy_state_dict()
    bounds, pos = [], 0
    for _ in range(5):
        n = scan_pickle(data[pos:])["length"]
        bounds.append((pos, pos + n))
        pos += n
    start, stop = bounds[which]
    evil = data[:start] + pickle.dumps(_Touch(marker), protocol=2) + data[stop:]
    (tmp_path / "legacy.pt").write_bytes(evil)
    if which in (0, 4):  # torch unpickles these before (or without) comparing anything
        assert _torch_load_runs(tmp_path / "legacy.pt", marker)
    scan = scan_state_dict(tmp_path / "legacy.pt")
    assert any(g.endswith(".system") for g in scan["disallowed_globals"]), scan["pickles"]
    assert len(scan["pickles"]) == 5
    found = _safety(_variant(sd_package, tmp_path, weights=evil))
    assert [f.status for f in found["safety.pickle"]] == ["failed"] and not marker.exists()


def test_a_clean_legacy_and_zip_state_dict_pass():
    for data in (_clean_state_dict(), _legacy_state_dict()):
        path = Path(pytest.importorskip("tempfile").mkdtemp()) / "w.pt"
        path.write_bytes(data)
        scan = scan_state_dict(path)
        assert not scan["disallowed_globals"] and not scan["disallowed_opcodes"] and not scan["error"], scan


def _op(name: str, arg: bytes = b"") -> bytes:
    return pickletools.code2op[{o.name: o.code for o in pickletools.opcodes}[name]].code.encode("latin-1") + arg


def _short(s: str) -> bytes:
    b = s.encode()
    return _op("SHORT_BINUNICODE", bytes([len(b)]) + b)


def test_stack_global_names_are_followed_through_the_memo():
    """Strings pushed for show, the real names fetched from the memo: the scanner follows the memo."""
    data = (_op("PROTO", b"\x04") + _short("posix") + _op("MEMOIZE") + _short("system") + _op("MEMOIZE")
            + _op("POP") + _op("POP") + _short("collections") + _short("OrderedDict") + _op("POP") + _op("POP")
            + _op("BINGET", b"\x00") + _op("BINGET", b"\x01") + _op("STACK_GLOBAL") + _short("touch /tmp/x")
            + _op("TUPLE1") + _op("REDUCE") + _op("STOP"))
    pickletools.dis(data, out=io.StringIO())  # a well-formed pickle
    scan = scan_pickle(data)
    assert scan["globals"] == ["posix.system"], scan
    # names the scanner cannot know exactly are never taken for allowed ones
    unknown = (_op("PROTO", b"\x04") + _short("collections") + _short("OrderedDict") + _op("DUP")
               + _op("STACK_GLOBAL") + _op("STOP"))
    assert scan_pickle(unknown)["globals"] == ["<unresolved>.<unresolved>"]


def test_a_tar_format_and_a_broken_zip_fail(tmp_path):
    tar = tmp_path / "old.pt"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("pickle")
        payload = pickle.dumps({"w": 1}, protocol=2)
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    scan = scan_state_dict(tar)
    assert scan["format"] == "tar" and "tar-format" in scan["error"]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    assert "unreadable zip" in scan_state_dict(broken)["error"]


# ------------------------------------------------------------------------------------------------ callables
@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("subprocess", "Popen"),
                                         ("bioimgzoo.cli", "main"), ("bioimgzoo.train.nets", "Unet2d"),
                                         ("importlib", "import_module"), ("torch.hub", "load"),
                                         ("numpy.ctypeslib", "load_library")])
def test_a_library_callable_outside_the_allow_list_fails(sd_package, tmp_path, module, name):
    def edit(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"] = {"callable": name, "import_from": module,
                                                                "kwargs": {}}

    found = _safety(_variant(sd_package, tmp_path, edit=edit))
    assert [f.status for f in found["safety.callables"]] == ["failed"], found
    assert f"{module}:{name}" in found["safety.callables"][0].message
    report = check_package(_variant(sd_package, tmp_path / "again", edit=edit), deepimagej=False)
    assert not report.passed


@pytest.mark.parametrize("module,name", [("torch.nn", "Conv2d"), ("careamics.models.unet", "UNet")])
def test_a_third_party_network_is_a_warning_for_the_reviewer(sd_package, tmp_path, module, name):
    def edit(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"] = {"callable": name, "import_from": module,
                                                                "kwargs": {}}

    found = _safety(_variant(sd_package, tmp_path, edit=edit))
    assert [f.status for f in found["safety.callables"]] == ["warning"], found
    assert f"{module}:{name}" in found["safety.callables"][0].message
    assert module.split(".")[0] in found["safety.callables"][0].message


def test_bioimgzoo_s_own_network_passes(sd_package, tmp_path):
    def edit(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"] = {"callable": "UNet2d",
                                                                "import_from": "bioimgzoo.train.nets",
                                                                "kwargs": {}}

    found = _safety(_variant(sd_package, tmp_path, edit=edit))
    assert [f.status for f in found["safety.callables"]] == ["passed"]


@pytest.mark.parametrize("source,why", [
    ("from os import system as Net\n", "imported from os"),
    ("import os\nNet = getattr(os, 'system')\n", "bound by an assignment"),
    ("from subprocess import *\n", "imported from subprocess"),
    ("import torch\n", "not defined"),
])
def test_an_architecture_file_callable_must_be_defined_there(sd_package, tmp_path, source, why):
    found = _safety(_variant(sd_package, tmp_path, arch=source))
    calls = found["safety.callables"]
    assert [f.status for f in calls] == ["failed"] and why in calls[0].message, calls


def test_the_shipped_class_passes(sd_package, tmp_path):
    found = _safety(_variant(sd_package, tmp_path))
    assert {f.status for f in found["safety.callables"]} == {"passed"}
    assert {f.status for f in found["safety.code"]} == {"passed"}
    assert {f.status for f in found["safety.pickle"]} == {"passed"}


# ------------------------------------------------------------------------------------------------ code
OBFUSCATED = {
    "alias": "import os\nf = os.system\n",
    "star import": "from os import *\n\ndef go():\n    system('x')\n",
    "getattr builtins": "def go():\n    getattr(__builtins__, 'ev' + 'al')('1')\n",
    "sys.modules": "import sys\n\ndef go():\n    sys.modules['o' + 's'].system('x')\n",
    "posix_spawn": "import os\n\ndef go():\n    os.posix_spawn('/bin/sh', ['sh'], {})\n",
    "__import__": "def go():\n    __import__('o' + 's').system('x')\n",
    "import_module": "import importlib\n\ndef go():\n    importlib.import_module('subpro' + 'cess').run(['x'])\n",
    "join": "import os\nF = getattr(os, ''.join(['sys', 'tem']))\n",
    "vars": "import os\nF = vars(os)['system']\n",
    "__dict__": "import os\nF = os.__dict__['sys' + 'tem']\n",
    "globals": "def go():\n    globals()['__builtins__']['exec']('x')\n",
    "subclasses": "def go():\n    return ().__class__.__base__.__subclasses__()\n",
    "returned module": "import os\n\ndef m():\n    return os\n\nm().system('x')\n",
    "container": "import os\nD = {'k': os}\nD['k'].system('x')\n",
    "default argument": "import os\n\ndef go(run=os.system):\n    run('x')\n",
    "self attribute": "import subprocess\n\nclass A:\n    def __init__(self):\n        self.p = subprocess\n",
    "reversed": "import os\nF = getattr(os, 'metsys'[::-1])\n",
    "chr": "import os\nF = getattr(os, chr(115) + 'ystem')\n",
    "hex": "import os\nF = getattr(os, bytes.fromhex('73797374656d').decode())\n",
    "base64 exec": "import base64\nexec(base64.b64decode('cHJpbnQoMSk='))\n",
    "computed name": "import os\n\ndef go(name):\n    return getattr(os, name)\n",
    "attrgetter": "import operator\nimport os\nF = operator.attrgetter('system')(os)\n",
    "ctypes": "import ctypes\nlibc = ctypes.CDLL(None)\n",
    "socket": "import socket\n\ndef go():\n    socket.create_connection(('127.0.0.1', 9))\n",
    "native torch": "import torch\ntorch.ops.load_library('/tmp/x.so')\n",
    "writes a file": "import pathlib\n\ndef go():\n    pathlib.Path('/tmp/x').write_text('y')\n",
    "open for writing": "def go():\n    open('/tmp/x', 'a').write('y')\n",
    "frames": "import sys\n\ndef go():\n    return sys._getframe(1).f_globals\n",
    "nested to defeat the scanner": "X = " + "a." * 3000 + "b\n",
    "a module's own os": "import torch\n\ndef go():\n    torch.os.system('x')\n",
    "os.path's os": "import os.path as osp\nF = osp.os.system\n",
    "builtins through print": "def go():\n    return print.__self__.eval('1')\n",
    "sys through numpy": "import numpy as np\nF = np.sys.modules['os']\n",
}


@pytest.mark.parametrize("name", sorted(OBFUSCATED))
def test_obfuscated_code_in_the_architecture_file_fails(sd_package, tmp_path, name):
    source = ARCH + "\n" + OBFUSCATED[name]
    assert scan_python(source), name
    found = _safety(_variant(sd_package, tmp_path, arch=source))
    assert "failed" in {f.status for f in found["safety.code"]}, (name, [f.message for f in found["safety.code"]])


def test_plain_networks_stay_clean():
    here = Path(__file__).resolve().parents[2] / "bioimgzoo"
    for rel in ("train/nets.py", "testing/nets.py"):
        assert scan_python((here / rel).read_text()) == [], rel
    assert scan_python(ARCH) == []
    legit = ("import os\nimport importlib.util\nimport torch\nfrom torch import nn\n"
             "HAS_X = importlib.util.find_spec('xformers') is not None\n"
             "class Net(nn.Module):\n    def __init__(self, act='ReLU', root=os.path.join('a', 'b')):\n"
             "        super().__init__()\n        self.act = getattr(nn, act)()\n"
             "        self.dtype = getattr(torch, 'float32')\n        self.debug = os.environ.get('DEBUG')\n"
             "    def forward(self, x):\n        return self.act(x)\n")
    assert scan_python(legit) == []


# ------------------------------------------------------------------------------------------------ onnx
def _onnx_models():
    from onnx import TensorProto, helper

    def external(name: str, location: str) -> TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "4")):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    leave = "../../../../etc/passwd"

    def model(graph, **kw):
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                       helper.make_opsetid("local", 1)], **kw)

    out = {}
    # a local function whose Constant holds external data
    const = helper.make_node("Constant", [], ["c"], value=external("c", leave))
    add = helper.make_node("Add", ["a", "c"], ["b"])
    fn = helper.make_function("local", "AddC", ["a"], ["b"], [const, add], [helper.make_opsetid("", 17)])
    out["function constant"] = model(helper.make_graph([helper.make_node("AddC", ["x"], ["y"], domain="local")],
                                                       "g", [x], [y]), functions=[fn])
    # a sparse initializer
    values = external("s_values", leave)
    indices = helper.make_tensor("s_idx", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    g.sparse_initializer.append(sparse)
    out["sparse initializer"] = model(g)
    # an If subgraph's initializer, and a Constant inside a Loop body inside it
    then = helper.make_graph([helper.make_node("Identity", ["t"], ["ty"])], "then", [],
                             [helper.make_tensor_value_info("ty", TensorProto.FLOAT, [1])],
                             initializer=[external("t", leave)])
    other = helper.make_graph([helper.make_node("Constant", [], ["ey"], value=external("e", "/etc/shadow"))],
                              "else", [], [helper.make_tensor_value_info("ey", TensorProto.FLOAT, [1])])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    out["subgraphs"] = model(helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=then,
                                                                  else_branch=other)], "g", [cond], [y]))
    # a sparse tensor in a node attribute
    sp_attr = helper.make_sparse_tensor(external("sv", leave), helper.make_tensor("si", TensorProto.INT64, [1], [0]),
                                        [1])
    out["sparse attribute"] = model(helper.make_graph([helper.make_node("Constant", [], ["y"],
                                                                        sparse_value=sp_attr)], "g", [], [y]))
    # a training graph
    m = model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    ti = m.training_info.add()
    ti.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[external("w", leave)]))
    out["training graph"] = m
    return out


@pytest.mark.parametrize("where", ["function constant", "sparse initializer", "subgraphs", "sparse attribute",
                                   "training graph"])
def test_onnx_external_data_is_found_wherever_a_tensor_lives(zoo_fixture, tmp_path, where):
    import onnx

    m = _onnx_models()[where]
    found = onnx_external_data(m)
    assert found and all(loc in ("../../../../etc/passwd", "/etc/shadow") for loc, _w in found), found
    # in a package: a failed finding (the location leaves the package)
    pkg = tmp_path / "pkg"
    shutil.copytree(zoo_fixture, pkg)
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text())
    onnx_file = pkg / rdf["weights"]["onnx"]["source"]
    onnx.save(m, str(onnx_file))
    rdf["weights"]["onnx"]["sha256"] = _sha(onnx_file)
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    found = _safety(pkg)
    assert "failed" in {f.status for f in found["safety.onnx"]}, [f.message for f in found["safety.onnx"]]
