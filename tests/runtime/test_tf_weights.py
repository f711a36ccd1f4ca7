"""TensorFlow weights without the tensorflow extra: one message, which names it; info says the route.

(With the extra, real producers' packages are converted and run in tests/producers.)
"""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")


@pytest.fixture
def tf_only_package(tmp_path):
    """A format 0.5 package whose only weights are a (dummy) SavedModel bundle."""
    from bioimgzoo.testing import SameConv, TensorDef, write_package

    x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    rdf = write_package(tmp_path / "pkg", SameConv(), inputs=[TensorDef("raw", "bcyx", sizes={"y": (16, 16),
                                                                                             "x": (16, 16)}, test=x)],
                        outputs=[TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})],
                        formats=("onnx",))
    bundle = rdf.parent / "tf_model.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("saved_model.pb", b"not a real graph")
    data = yaml.safe_load(rdf.read_text())
    data["weights"] = {"tensorflow_saved_model_bundle": {
        "source": "tf_model.zip", "sha256": hashlib.sha256(bundle.read_bytes()).hexdigest(),
        "tensorflow_version": "2.15.0"}}
    rdf.write_text(yaml.safe_dump(data))
    return rdf.parent


def test_tensorflow_weights_without_the_extra_give_one_message(tf_only_package, monkeypatch):
    import bioimgzoo
    from bioimgzoo.cli.info import describe_package
    from bioimgzoo.errors import WeightsError
    from bioimgzoo.runtime import tf_weights

    monkeypatch.setattr(tf_weights, "extra_installed", lambda: False)
    with pytest.raises(WeightsError, match=r"pip install 'bioimgzoo\[tensorflow\]'"):
        bioimgzoo.load(tf_only_package)
    facts = describe_package(bioimgzoo.open_package(tf_only_package))
    (w,) = facts["weights"]
    assert w["runnable"] and "bioimgzoo[tensorflow]" in w["runs_as"]
    assert facts["default_weights"] == "tensorflow_saved_model_bundle"


def test_weights_tensorflow_cannot_load_says_so_once(tf_only_package):
    """With the extra: a bundle TensorFlow cannot read ends in one message, and nothing is cached."""
    import bioimgzoo
    from bioimgzoo import config
    from bioimgzoo.errors import WeightsError
    from bioimgzoo.runtime.tf_weights import extra_installed

    if not extra_installed():
        pytest.skip("the tensorflow extra is not installed (pip install -e '.[tensorflow]')")
    with pytest.raises(WeightsError, match="could not be loaded by TensorFlow"):
        bioimgzoo.load(tf_only_package, weights="tf")
    assert not list((config.cache_dir() / "tf-onnx").glob("*.onnx"))


def test_normalise_onnx_writes_what_deepimagej_reads(tmp_path):
    """IR version <= 8, only the opset domains the graph uses, outputs in the description's order."""
    import onnx
    from onnx import TensorProto, helper

    from bioimgzoo.runtime.tf_weights import normalise_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])],
                              "g", [x], [a, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "m.onnx")
    assert normalise_onnx(tmp_path / "m.onnx", output_names=["b", "a"]) == {"ir_version": 8, "opset": 17}
    back = onnx.load(tmp_path / "m.onnx")
    assert [o.name for o in back.graph.output] == ["b", "a"]
    assert [(o.domain, o.version) for o in back.opset_import] == [("", 17)]
