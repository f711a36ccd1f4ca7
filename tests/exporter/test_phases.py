"""The export's phases: the plan is checked before the module runs; the probe's sizes are descr's AxisSizes."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from bioimgzoo.errors import ExportError
from bioimgzoo.testing import checks as C
from bioimgzoo.testing import nets as N

torch = pytest.importorskip("torch")
X = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)


def _plan(example=X, **kwargs):
    from bioimgzoo.exporter._plan import plan_export

    args = dict(name="Planned model", description="d", authors=["A. Author"], license=None, axes="bcyx",
                preprocessing=None, postprocessing=None, card=None)
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    return plan_export(example, "/tmp/never-written.zip", **args, overrides=kwargs)


def test_plan_resolves_options():
    example = {"raw": (X * 255).astype(np.uint8), "mask": X}
    plan = _plan(example, axes={"raw": "bcyx", "mask": "bcyx"}, weights=["onnx", "TS"],
                 tolerance={"relative": 0.01}, output_ids=["out"], test=True)
    assert plan.input_ids == ["raw", "mask"] and plan.output_ids == ["out"]
    assert plan.weights.formats == ("torchscript", "onnx") and plan.weights.explicit  # canonical order
    assert plan.tolerance.relative == 0.01 and plan.tolerance.absolute is None
    assert [p.id for p in plan.preprocessing["raw"]] == ["ensure_dtype"]  # the network gets float32
    assert plan.preprocessing["mask"] == []
    assert plan.meta.id == "planned-model" and "pytorch" in plan.meta.tags and "2d" in plan.meta.tags
    assert plan.core_test and plan.meta.license == "CC-BY-4.0"
    assert any("no citation given" in n for n in plan.notes)


def test_plan_output_ids():
    plan = _plan()
    assert plan.output_ids_for(1) == ["output"] and plan.output_ids_for(2) == ["output0", "output1"]
    with pytest.raises(ExportError, match="unique"):
        _plan(output_ids=["input"]).output_ids_for(1)
    with pytest.raises(ExportError, match="names 1 outputs but the module returns 2"):
        _plan(output_ids=["out"]).output_ids_for(2)


class Refuses(torch.nn.Module):
    """Fails on any input: an option error must come before the module runs."""

    def forward(self, x):
        raise RuntimeError("the module ran")


@pytest.mark.parametrize("kwargs, match", [
    ({"cite": [{"text": "no reference"}]}, "needs 'text'"),
    ({"weights": ["keras"]}, "choose from"),
    ({"tolerance": {"relative": "loose"}}, "tolerance="),
    ({"validation": "good"}, "validation= must be a mapping"),
    ({"parent": "planned-model"}, "equals this model's id"),
    ({"maintainers": [{"name": "M"}]}, "needs a github_user"),
])
def test_option_errors_come_before_the_module_runs(tmp_path, kwargs, match):
    from bioimgzoo.exporter import export_model

    with pytest.raises(ExportError, match=match):
        export_model(Refuses(), X, tmp_path / "m.zip", name="Planned model", **{**C.meta(), **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_probed_sizes_are_descr_axis_sizes():
    from bioimgzoo.descr.sizes import AxisSizes, valid_size_at_least
    from bioimgzoo.exporter._probe import ModuleRunner, ProbedSizes, probe_module

    run = ModuleRunner(C.seeded(N.UNet2d, depth=2), ["input"])
    r = probe_module(run, {"input": X}, {"input": "bcyx"}, run([X]), ["output"])
    s = r.inputs["input"].sizes["x"]
    assert isinstance(s, ProbedSizes) and isinstance(s, AxisSizes)
    assert s.is_valid(s.min + 3 * s.step) and not s.is_valid(s.min + 1)
    assert valid_size_at_least(s, s.min + 1) == s.min + s.step
    assert ProbedSizes(8, 4).describe() == "min 8, step 4" and ProbedSizes(8).fixed


def test_sizes_override_accepts_axis_sizes():
    from bioimgzoo.descr.sizes import AxisSizes
    from bioimgzoo.exporter._probe import ModuleRunner, probe_module

    run = ModuleRunner(C.seeded(N.SameConv), ["input"])
    r = probe_module(run, {"input": X}, {"input": "bcyx"}, run([X]), ["output"], sizes={"x": AxisSizes(16, 8)})
    s = r.inputs["input"].sizes["x"]
    assert (s.step, s.source) == (8, "override")
    assert s.min >= 16 and (s.min - 16) % 8 == 0  # raised by whole steps when the halo needs it


def test_no_long_functions_in_the_exporter():
    folder = Path(__file__).resolve().parents[2] / "bioimgzoo" / "exporter"
    long = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 120:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
