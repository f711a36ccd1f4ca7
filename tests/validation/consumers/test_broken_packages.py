"""One broken package per consumer failure of issue 14: each tool fails with exactly the rule ids it should.

Packages are built once with :func:`bioimgzoo.testing.write_package` (a real
network, real weights and test tensors); each variant edits its rdf.yaml.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from bioimgzoo.testing import SameConv, TensorDef, TwoInTwoOut, write_package  # noqa: E402
from bioimgzoo.validation.consumers import consumer_verdicts  # noqa: E402

pytestmark = pytest.mark.slow  # building the packages exports and runs real networks (~10 s)


def _rdf(folder):
    return yaml.safe_load((folder / "rdf.yaml").read_text())


def _variant(base, tmp_path, edit, name="variant"):
    """A copy of the package ``base`` with ``edit(rdf, folder)`` applied to its rdf.yaml."""
    folder = tmp_path / name
    shutil.copytree(base, folder)
    rdf = _rdf(folder)
    edit(rdf, folder)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _clean(folder):
    """Write what bioimageio.spec leaves out and DeepImageJ needs (D4 covers, D12 explicit axis ids)."""
    rdf = _rdf(folder)
    rdf["covers"] = []
    rdf["tags"] = ["segmentation"]  # BiaPy's workflow tag (B3)
    for kind in ("inputs", "outputs"):
        for t in rdf[kind]:
            for a in t["axes"]:
                a.setdefault("id", {"batch": "batch", "channel": "channel", "time": "time"}.get(a["type"], "x"))
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _state_dict_entry(rdf):
    """A pytorch_state_dict entry (never read by the static rules) so BiaPy's B1 judges only the inputs."""
    rdf["weights"]["pytorch_state_dict"] = {
        "source": "weights_sd.pt", "pytorch_version": "2.4.0",
        # out_channels: BiaPy reads a segmentation network's class count from the kwargs (B2)
        "architecture": {"source": "arch.py", "callable": "Net", "kwargs": {"out_channels": 1}}}


@pytest.fixture(scope="module")
def one_input(tmp_path_factory):
    x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    rdf = write_package(tmp_path_factory.mktemp("one"), SameConv().eval(),
                        inputs=[TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
                        outputs=[TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})])
    return _clean(rdf.parent)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    rng = np.random.default_rng(1)
    a, b = (rng.random((1, 1, 16, 16)).astype(np.float32) for _ in range(2))
    sizes = {"y": 16, "x": 16}
    refs_a = {"y": ("a", "y"), "x": ("a", "x")}
    rdf = write_package(tmp_path_factory.mktemp("two"), TwoInTwoOut().eval(),
                        inputs=[TensorDef("a", "bcyx", sizes=sizes, test=a), TensorDef("b", "bcyx", sizes=sizes, test=b)],
                        outputs=[TensorDef("s", "bcyx", refs=refs_a), TensorDef("p", "bcyx", refs=refs_a)],
                        formats=("torchscript",))
    return _clean(rdf.parent)


def test_the_base_package_passes_every_tool_that_runs_it(one_input, tmp_path):
    v = consumer_verdicts(one_input)
    for tool in ("deepimagej", "icy", "ilastik", "qupath"):
        assert v[tool].status == "passed", (tool, v[tool].reasons)
    assert v["biapy"].failed_rules == ("B1",)  # torchscript + onnx only: BiaPy loads state dicts
    assert v["careamics"].status == "not-applicable"
    with_sd = consumer_verdicts(_variant(one_input, tmp_path, lambda rdf, f: _state_dict_entry(rdf)), static=True)
    assert with_sd["biapy"].status == "passed", with_sd["biapy"].reasons
    # what the variants would change is really judged: the network runs in DeepImageJ's simulation
    sim = next(f for f in v["deepimagej"].findings if f.check == "deepimagej.simulation")
    assert sim.status == "passed" and sim.details["mismatched"] == 0, sim.message


def test_two_inputs_fail_deepimagej_ilastik_qupath_and_biapy(two_inputs, tmp_path):
    folder = _variant(two_inputs, tmp_path, lambda rdf, f: _state_dict_entry(rdf))
    v = consumer_verdicts(folder, static=True)
    expected = {"deepimagej": "D5", "icy": "D5", "ilastik": "I1", "qupath": "Q1", "biapy": "B1"}
    for tool, rule in expected.items():
        assert v[tool].status == "failed" and v[tool].failed_rules == (rule,), (tool, v[tool].reasons)
        assert "2 inputs" in v[tool].reasons[rule] and v[tool].fixes[rule]
    assert v["careamics"].status == "not-applicable"


def test_a_time_axis_fails_deepimagej_d13(one_input, tmp_path):
    def add_time(rdf, folder):
        for kind in ("inputs", "outputs"):
            axes = rdf[kind][0]["axes"]
            axes.insert(1, {"type": "time", "id": "time", "size": 1} if kind == "inputs" else
                        {"type": "time", "id": "time", "size": {"tensor_id": "raw", "axis_id": "time"}})

    v = consumer_verdicts(_variant(one_input, tmp_path, add_time), static=True)
    assert v["deepimagej"].failed_rules == ("D13",) and "time axis" in v["deepimagej"].reasons["D13"]
    assert v["icy"].failed_rules == ("D13",)
    assert "B4" in v["biapy"].failed_rules  # not bcyx
    assert "I3" not in v["ilastik"].failed_rules  # ilastik knows a time axis


@pytest.mark.parametrize("kwargs, fails", [
    ({"axis": "channel", "mean": [0.5], "std": [2.0]}, True),   # CAREamics' export style
    ({"mean": 0.5, "std": 2.0}, False),
])
def test_one_element_list_fixed_zero_mean_unit_variance_fails_d23(one_input, tmp_path, kwargs, fails):
    def edit(rdf, folder):
        rdf["inputs"][0]["preprocessing"] = [{"id": "fixed_zero_mean_unit_variance", "kwargs": kwargs}]

    v = consumer_verdicts(_variant(one_input, tmp_path, edit), static=True)
    assert v["deepimagej"].failed_rules == (("D23",) if fails else ()), v["deepimagej"].reasons
    if fails:
        assert "even for one element" in v["deepimagej"].reasons["D23"]
        assert v["deepimagej"].fixes["D23"] == "Use scalar mean/std/threshold/gain/offset."


def _uint8_onnx(path):
    """An ONNX graph (opset 17, IR 8) whose output is uint8: Cast(Relu(x)) to uint8."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["b", 1, "y", "x"])
    y = helper.make_tensor_value_info("out", TensorProto.UINT8, ["b", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Relu", ["raw"], ["r"]),
                               helper.make_node("Cast", ["r"], ["out"], to=TensorProto.UINT8)], "u8", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_uint8_onnx_output_fails_d11(one_input, tmp_path):
    def edit(rdf, folder, declared):
        _uint8_onnx(folder / "weights.onnx")
        rdf["weights"] = {"onnx": {"source": "weights.onnx", "opset_version": 17}}
        rdf["outputs"][0]["data"] = {"type": declared}

    # declared uint8: JDLL cannot allocate it for ONNX (static, from the description alone)
    v = consumer_verdicts(_variant(one_input, tmp_path, lambda r, f: edit(r, f, "uint8"), "u8"), static=True)
    assert v["deepimagej"].failed_rules == ("D11",), v["deepimagej"].reasons
    assert "uint8 arrives as int8" in v["deepimagej"].reasons["D11"]
    # declared float32 but the graph emits uint8: read from the ONNX file
    folder = _variant(one_input, tmp_path, lambda r, f: edit(r, f, "float32"), "f32")
    assert consumer_verdicts(folder, static=True)["deepimagej"].status == "passed"
    v = consumer_verdicts(folder, tools=["deepimagej"])
    assert "D11" in v["deepimagej"].failed_rules and "receives as int8" in v["deepimagej"].reasons["D11"]
