import pytest
from click.testing import CliRunner

from bioimgzoo.cli import main


@pytest.mark.slow
def test_demo_command_writes_everything(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "4", "--size", "256", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert any(n.endswith(".zip") for n in names), names
    assert any(n.endswith(".tif") for n in names), names
    assert any(n.endswith(".png") for n in names), names
    assert str(out) in r.output or out.name in r.output
