"""The CLI speaks CLI: options, never the API's keywords; quoted code unchanged; the host that failed named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bioimgzoo.cli import main
from bioimgzoo.cli._messages import quoted_spans, to_cli

PACKAGE = Path(__file__).resolve().parents[2] / "bioimgzoo"
# an API keyword in a message: "isolated=True", "pass id=", "device='cpu'"
_API_KEYWORD = re.compile(r"(?<![\w.\-`])([a-z][a-z0-9_]*)=(?:True|False|'|\"|\[|\d|\s|\)|$)")
# not the API's keywords: the CLI's own per-axis syntax (--tile y=256,x=512)
_NOT_API = {"x", "y", "z", "t", "c"}
# raised only by Python calls that the command line never makes with these unset: the CLI always passes
# --steps (never epochs), trains Noise2Void with statistics, computes its own measures and example input
_API_ONLY = {"epochs", "mean", "std", "reference_axes", "example_input"}


def _message_texts():
    """Every string of a raise or a warning in the package, with where it is (f-string pieces joined)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            call = None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call = node.exc
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("warning", "error") and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id in ("log", "logger"):
                call = node
            if call is None:
                continue
            for arg in call.args[:1]:
                parts = []
                for piece in ast.walk(arg):
                    if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                        parts.append(piece.value)
                    elif isinstance(piece, ast.FormattedValue):
                        parts.append("X")
                if parts:
                    yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", "".join(parts)


def test_every_message_names_options_once_written_for_the_cli():
    left = []
    for where, text in _message_texts():
        shown = to_cli(text)
        at, parts = 0, []
        for a, b in quoted_spans(shown):  # quoted code keeps its keywords, by design
            parts.append(shown[at:a])
            at = b
        prose = "".join(parts) + shown[at:]
        for m in _API_KEYWORD.finditer(prose):
            if m.group(1) not in _NOT_API | _API_ONLY:
                left.append(f"{where}: {m.group(0)!r} in {to_cli(text)[:160]!r}")
    assert not left, "messages the CLI prints still name Python keywords:\n" + "\n".join(left)


def test_the_check_sees_a_keyword_it_does_not_translate():
    assert _API_KEYWORD.search(to_cli("pass frobnicate=True to do it"))
    assert not _API_KEYWORD.search(to_cli("load it without isolated=True"))


def test_known_keywords_become_options():
    assert to_cli("the isolated environment would hold nothing new: load it without isolated=True") == \
        "the isolated environment would hold nothing new: load it without --isolated"
    assert to_cli("pass id= (e.g. id='lab-nuclei'; CLI: --id lab-nuclei).") == "pass --id (e.g. --id lab-nuclei)."
    assert to_cli("pass id= (CLI: --id) to publish it") == "pass --id to publish it"
    assert to_cli("pass a smaller tile= or batch_size=") == "pass a smaller --tile or --batch-size"


def test_quoted_code_is_left_as_it_is():
    torchscript = ("prediction failed: RuntimeError: The following operation failed in the TorchScript "
                   "interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"code/__torch__.py\", "
                   "line 10, in forward\n    x = torch.zeros([1], device=torch.device(\"cpu\"))\n"
                   "RuntimeError: Expected all tensors on the same device=cpu")
    assert to_cli(torchscript) == torchscript
    assert to_cli("the network fails (ValueError: bad axes='yx'): pass axes='cyx'") == \
        "the network fails (ValueError: bad axes='yx'): pass --axes=cyx"
    assert to_cli("call `model.predict(x, device='cpu')` in Python") == "call `model.predict(x, device='cpu')` in Python"


def test_a_file_on_a_third_party_host_is_not_blamed_on_the_hub(zoo_fixture, tmp_path, monkeypatch):
    from bioimgzoo.hub import transport
    from bioimgzoo.testing.zoo_server import ZooServer

    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(transport, "BACKOFF_MAX_S", 0.05)
    monkeypatch.setenv("BIOIMGZOO_RETRIES", "0")
    rdf = yaml.safe_load((zoo_fixture / "rdf.yaml").read_text())
    weights = dict(rdf["weights"])
    weights["onnx"] = {**weights["onnx"], "source": "http://127.0.0.2:9/weights.onnx"}  # nobody listens there
    with ZooServer() as server:
        server.publish_folder("third-party", zoo_fixture, rdf_changes={"weights": weights})
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        r = CliRunner().invoke(main, ["pull", "third-party", "--weights", "onnx"])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert "cannot connect to 127.0.0.2:9" in r.output
        assert "the file lives there" in r.output and "BIOIMGZOO_HUB / --hub do not change it" in r.output
        # the hub itself unreachable: then the hub setting is what to check
        r = CliRunner().invoke(main, ["pull", "third-party", "--hub", "http://127.0.0.1:9"])
        assert r.exit_code == 1 and "cannot connect to 127.0.0.1:9" in r.output
        assert "the hub address (BIOIMGZOO_HUB or --hub" in r.output


@pytest.mark.parametrize("args, wanted", [
    (["predict", "M", "x.tif", "-o", "o", "--labels-3d"], "--labels-3d"),
])
def test_option_errors_name_options(args, wanted, tmp_path):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and wanted in r.output and "labels_3d" not in r.output
