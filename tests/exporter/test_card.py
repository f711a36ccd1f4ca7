"""Model cards: loading, README rendering, and the cards the project ships."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from bioimgzoo.errors import ExportError
from bioimgzoo.exporter.card import CARD_KEYS, load_card, normalise_metrics, render_readme

REPO = Path(__file__).resolve().parents[2]
CARDS = sorted((REPO / "model_cards").glob("*.yaml"))


def test_project_ships_the_two_cards():
    assert {p.name for p in CARDS} >= {"nuclei-unet2d.yaml", "n2v-denoiser.yaml"}
    readme = (REPO / "model_cards" / "README.md").read_text()
    for key in CARD_KEYS:  # every key of the schema is documented
        assert f"`{key}`" in readme, key


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.name)
def test_shipped_cards_are_complete(path):
    card, base = load_card(path)
    assert base == path.parent
    for key in ("name", "description", "intended_use", "out_of_scope_use", "limitations", "training_data",
                "validation", "cite", "tags", "authors", "license", "id"):
        assert card.get(key), f"{path.name} lacks {key}"
    assert len(card["description"]) <= 512
    assert all(c.get("doi") or c.get("url") for c in card["cite"])
    rows = normalise_metrics(card["validation"]["metrics"])
    assert rows and all("name" in r for r in rows)
    assert {"module", "kwargs", "checkpoint", "example", "out"} <= set(card["export"])
    from bioimageio.spec._internal.constants import TAG_CATEGORIES

    auto = {"2d", "pytorch", "deepimagej"}
    for cat, values in TAG_CATEGORIES["model"].items():
        assert set(values) & (set(card["tags"]) | auto), f"{path.name}: no tag of category {cat}"


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "card.yaml"
    p.write_text("name: My model\nintendeduse: typo\n")
    with pytest.raises(ExportError, match="unknown card key.*intendeduse"):
        load_card(p)


def test_missing_and_malformed_cards(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        load_card(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ExportError, match="not valid YAML"):
        load_card(bad)
    with pytest.raises(ExportError, match="must be a list"):
        load_card({"tags": "nuclei"})


def test_readme_sections_and_metrics():
    text = render_readme(
        name="My model", description="Does things.",
        card={"intended_use": "Nuclei in DAPI images.", "limitations": ["fails on blur", "2D only"],
              "training_data": {"description": "synthetic", "size": 100}},
        validation={"dataset": "held-out set", "metrics": [{"name": "IoU", "value": 0.8123456},
                                                             {"name": "F1", "value": None}]},
        technical=["Input x"], reproducibility=[{"format": "onnx", "max_abs_diff": 1e-7, "rtol": 1e-3,
                                                  "atol": 1e-4}],
        cite=[{"text": "Paper", "doi": "10.1/x"}], authors=["A", "B"], license="MIT")
    for heading in ("# Intended use", "# Out-of-scope use", "# Limitations", "# Training data",
                    "# Technical specification", "# Validation", "# Citations"):
        assert heading in text
    assert "- fails on blur" in text and "Nuclei in DAPI images." in text
    assert "| IoU | 0.8123 |" in text and "| F1 | not measured yet |" in text
    assert "| onnx | 1e-07 |" in text and "https://doi.org/10.1/x" in text
    assert "Not stated by the authors" in text  # out-of-scope use was not given


def test_metrics_forms():
    assert normalise_metrics({"iou": 0.5}) == [{"name": "iou", "value": 0.5}]
    assert normalise_metrics({"iou": {"value": 0.5, "description": "d"}}) == [
        {"name": "iou", "value": 0.5, "description": "d"}]
    with pytest.raises(ExportError):
        normalise_metrics([{"value": 1}])


@pytest.mark.slow
def test_export_with_the_nuclei_card(tmp_path):
    """The shipped card renders into the README and validates without a spec warning."""
    torch = pytest.importorskip("torch")
    from bioimgzoo.exporter import export_package
    from bioimgzoo.train.nets import UNet2d
    from bioimgzoo.testing import checks as C

    torch.manual_seed(0)
    net = UNet2d(in_channels=1, out_channels=2, depth=1, base=2).eval()
    x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    card = REPO / "model_cards" / "nuclei-unet2d.yaml"
    card_data, _ = load_card(card)
    exp = card_data["export"]
    result = export_package(net, x, tmp_path / "nuclei.zip", card=card, authors=C.META["authors"],
                            preprocessing=exp["preprocessing"], postprocessing=exp["postprocessing"],
                            channel_names=exp["channel_names"], architecture="bioimgzoo.train.nets:UNet2d",
                            architecture_kwargs=net.init_kwargs(),
                            validation={"metrics": {"iou": 0.75}})
    C.check_spec(result.path)
    with zipfile.ZipFile(result.path) as zf:
        readme = zf.read("README.md").decode()
        rdf = zf.read("rdf.yaml").decode()
    assert card_data["name"] in readme and "synthetic nuclei" in readme.lower()
    assert "| iou | 0.75 |" in readme  # the caller's number replaces the card's
    rows = {r["name"]: r.get("value") for r in normalise_metrics(card_data["validation"]["metrics"])}
    f1 = rows["instance_f1"]
    assert f"| instance_f1 | {'not measured yet' if f1 is None else f'{f1:.4g}'} |" in readme  # the card's
    assert readme.count("| iou |") == 1
    assert "out_of_scope_use" in rdf and "import_from" not in rdf and "source: architecture.py" in rdf
    assert "id: nuclei-unet2d" in rdf
