"""Weight formats mean the same everywhere: every alias through load, predict, pull, mirror, export, finetune."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from bioimgzoo.descr.weights import ALIASES, RUNNABLE, canonical_format
from bioimgzoo.errors import ExportError, TrainingError, WeightsError

torch = pytest.importorskip("torch")

#: what users type for each runnable format: the name, its case and dash variants, every alias
SPELLINGS = [(c, c) for c in RUNNABLE] + [(c.upper(), c) for c in RUNNABLE] \
    + [(c.replace("_", "-"), c) for c in RUNNABLE if "_" in c] \
    + [(alias, c) for alias, c in ALIASES.items() if c in RUNNABLE]


def test_every_spelling_is_canonical():
    for typed, canonical in SPELLINGS:
        assert canonical_format(typed) == canonical
    with pytest.raises(WeightsError, match="unknown weight format 'tensorflow'"):
        canonical_format("tensorflow", among=RUNNABLE)
    with pytest.raises(WeightsError, match="unknown weight format 'onnxx'"):
        canonical_format("onnxx")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny U-Net with all three runnable formats, exported with aliases for the format names."""
    from bioimgzoo.exporter import export_package
    from bioimgzoo.testing import checks
    from bioimgzoo.train.nets import UNet2d  # allow-listed: its state dict loads without trust_code

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("weights") / "tiny.zip"
    example = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    result = export_package(UNet2d(1, 1, depth=2, base=4), example, out, weights=["Pytorch", "ts", "ONNX"],
                            **checks.meta(name="Tiny weights U-Net"))
    assert sorted(result.weights_formats) == sorted(RUNNABLE)
    folder = out.parent / "tiny"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(folder)
    return out, folder


def test_export_takes_aliases(tmp_path):
    from bioimgzoo.exporter import export_package
    from bioimgzoo.testing import checks, nets

    example = np.zeros((1, 1, 32, 32), np.float32)
    with pytest.raises(ExportError, match="unknown weight format 'tflite'"):
        export_package(nets.UNet2d(1, 1, depth=2, base=4), example, tmp_path / "x.zip", weights=["ts", "tflite"],
                       **checks.meta(name="Tiny weights U-Net"))
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.parametrize("typed,canonical", SPELLINGS)
def test_load(package, typed, canonical):
    import bioimgzoo

    assert bioimgzoo.load(package[0], weights=typed, device="cpu").weights_format == canonical


@pytest.mark.parametrize("typed,canonical", SPELLINGS)
def test_predict_cli(package, typed, canonical, tmp_path, monkeypatch):
    from bioimgzoo.cli import main
    from bioimgzoo.runtime import engines

    used = []
    real = engines.create_engine
    monkeypatch.setattr(engines, "create_engine", lambda pkg, fmt, **kw: used.append(fmt) or real(pkg, fmt, **kw))
    np.save(tmp_path / "img.npy", np.zeros((32, 32), np.float32))
    res = CliRunner().invoke(main, ["predict", str(package[0]), str(tmp_path / "img.npy"), "-o", str(tmp_path / "o"),
                                    "--weights", typed, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert used == [canonical]


@pytest.fixture
def hub(package, monkeypatch):
    from bioimgzoo.testing.zoo_server import ZooServer

    with ZooServer() as server:
        server.publish_folder("tiny-unet", package[1])
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        yield server


def _weights_file(folder, canonical):
    import yaml

    return yaml.safe_load((folder / "rdf.yaml").read_text())["weights"][canonical]["source"]


@pytest.mark.parametrize("typed,canonical", SPELLINGS)
def test_pull(package, hub, typed, canonical):
    from bioimgzoo.hub import pull

    pulled = pull("tiny-unet", weights=typed)
    assert pulled.weights_format == canonical
    assert _weights_file(package[1], canonical) in pulled.files


@pytest.mark.parametrize("typed,canonical", SPELLINGS)
def test_mirror(package, hub, typed, canonical, tmp_path):
    from bioimgzoo.hub import mirror

    result = mirror(["tiny-unet"], tmp_path / "mirror", weights=typed)
    files = result.models[0].files
    assert _weights_file(package[1], canonical) in files
    others = [_weights_file(package[1], c) for c in RUNNABLE if c != canonical]
    assert not any(o in files for o in others)


@pytest.mark.parametrize("typed,canonical", SPELLINGS)
def test_finetune(package, typed, canonical):
    from bioimgzoo.package import open_package
    from bioimgzoo.train.finetune import load_trainable

    pkg = open_package(package[0])
    if canonical == "onnx":
        with pytest.raises(TrainingError, match="unknown weight format"):
            load_trainable(pkg, weights=typed)
        return
    _module, info = load_trainable(pkg, weights=typed)
    assert info["format"] == canonical
