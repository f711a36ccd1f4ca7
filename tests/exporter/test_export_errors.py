"""A module that cannot be packaged ends in one clear ExportError, and nothing is written at ``out``."""

from __future__ import annotations

import numpy as np
import pytest

from bioimgzoo.errors import ExportError
from bioimgzoo.testing import checks as C
from bioimgzoo.testing import nets as N

torch = pytest.importorskip("torch")
nn = torch.nn
X = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * float("nan")


class NoisyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + torch.rand_like(x)


class NumpyNet(nn.Module):
    """Leaves torch for numpy: neither scriptable nor traceable (the trace bakes in one input)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.from_numpy(np.ascontiguousarray(np.flip(y.detach().numpy(), axis=-1)))


class ThreeChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _fails(tmp_path, module, example=X, match=None, **kwargs):
    out = tmp_path / "model.zip"
    with pytest.raises(ExportError, match=match) as info:
        from bioimgzoo.exporter import export_model

        export_model(C.seeded(lambda: module), example, out, name="Broken model", **C.meta(), **kwargs)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind either
    return str(info.value)


def test_rejects_example(tmp_path):
    msg = _fails(tmp_path, ThreeChannels(), match="rejects the example input")
    assert "(1, 1, 32, 32)" in msg


def test_nan_output(tmp_path):
    _fails(tmp_path, NaNNet(), match="NaN")


def test_not_deterministic(tmp_path):
    _fails(tmp_path, NoisyNet(), match="not deterministic")


def test_neither_scriptable_nor_traceable(tmp_path):
    msg = _fails(tmp_path, NumpyNet(), match="neither scripted nor traced", weights=["torchscript"])
    assert "torch.jit.script" in msg and "torch.jit.trace" in msg


def test_existing_file_untouched_on_failure(tmp_path):
    out = tmp_path / "model.zip"
    out.write_bytes(b"previous package")
    from bioimgzoo.exporter import export_model

    with pytest.raises(ExportError):
        export_model(NaNNet().eval(), X, out, name="Broken model", **C.meta())
    assert out.read_bytes() == b"previous package"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


@pytest.mark.parametrize("kwargs, match", [
    ({"axes": "bcy"}, "name 3 axes but the array has 4"),
    ({"axes": "bcyq"}, "unknown axis letter"),
    ({"name": "ab"}, "not a valid model name"),
    ({"weights": ["keras"]}, "choose from"),
    ({"preprocessing": [{"id": "no_such_op"}]}, "invalid processing step"),
    ({"sizes": {"x": {"min": 5, "step": 3}}}, "sizes override"),
    ({"cite": [{"text": "no reference"}]}, "needs 'text' and a 'doi' or 'url'"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    out = tmp_path / "m.zip"
    from bioimgzoo.exporter import export_model

    args = {**C.meta(), "name": "Tiny UNet 2D", **kwargs}
    with pytest.raises(ExportError, match=match):
        export_model(C.seeded(N.UNet2d, depth=2), X, out, **args)
    assert not out.exists()


def test_an_unknown_option_is_python_s_own_error_naming_it(tmp_path):
    # export names every option in its signature, so a misspelt one fails as any Python call does
    from bioimgzoo.exporter import export_model

    with pytest.raises(TypeError, match="colour"):
        export_model(C.seeded(N.UNet2d, depth=2), X, tmp_path / "m.zip", name="Tiny UNet 2D", colour="red",
                     **C.meta())
    assert not (tmp_path / "m.zip").exists()


def test_out_must_be_zip(tmp_path):
    from bioimgzoo.exporter import export_model

    with pytest.raises(ExportError, match=".zip"):
        export_model(C.seeded(N.SameConv), X, tmp_path / "model", name="Same conv", **C.meta())


class Opaque(nn.Module):
    """Does not keep its constructor argument: export cannot rebuild it on its own."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_state_dict_without_architecture_says_what_to_do(tmp_path):
    """An explicitly requested pytorch_state_dict whose constructor arguments cannot be found."""
    msg = _fails(tmp_path, Opaque(2), match="architecture", weights=["pytorch_state_dict"])
    assert "architecture_kwargs" in msg and "width" in msg


def test_state_dict_skipped_by_default_with_note(tmp_path):
    from bioimgzoo.exporter import export_package

    torch.manual_seed(0)
    result = export_package(Opaque(2).eval(), X, tmp_path / "m.zip", name="Opaque net", **C.meta())
    assert result.weights_formats == ["torchscript", "onnx"]
    assert any("pytorch_state_dict weights left out" in n and "architecture_kwargs" in n for n in result.notes)


def test_state_dict_with_given_kwargs(tmp_path):
    from bioimgzoo.exporter import export_package

    torch.manual_seed(0)
    result = export_package(Opaque(2).eval(), X, tmp_path / "m.zip", name="Opaque net", **C.meta(),
                            architecture_kwargs={"width": 2}, weights=["pytorch_state_dict"])
    assert result.weights_formats == ["pytorch_state_dict"]
    import zipfile

    with zipfile.ZipFile(result.path) as zf:
        # the class's source (not the whole test module) ships beside the weights
        assert "architecture.py" in zf.namelist() and "test_export_errors.py" not in zf.namelist()
        assert "class Opaque" in zf.read("architecture.py").decode()


def test_local_class_using_its_function_argument_named_in_message(tmp_path):
    def make(gain: float):
        class Local(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 3, padding=1)

            def forward(self, x):
                return self.conv(x) * gain

        return Local()

    msg = _fails(tmp_path, make(2.0), match="argument of the enclosing function", weights=["pytorch_state_dict"])
    assert "module level" in msg and "'gain'" in msg


def test_top_level_export_function(tmp_path):
    """``bioimgzoo.export`` stays the function after the exporter's submodules were imported."""
    import bioimgzoo
    import bioimgzoo.exporter.card  # noqa: F401

    import types

    from bioimgzoo.exporter import export_model

    # the exporter's own function (no wrapper between the API and the work), never a module of that name
    assert not isinstance(bioimgzoo.export, types.ModuleType) and bioimgzoo.export is export_model
    with pytest.raises(ExportError, match="not a valid model name"):
        bioimgzoo.export(C.seeded(N.SameConv), X, tmp_path / "m.zip", name="ab", **C.meta())
    assert not (tmp_path / "m.zip").exists()
