"""Trainer.export -> reload -> predict, fine-tuning a package, the demo's whole path."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("bioimgzoo.exporter._export", reason="the exporter is not written yet")

from bioimgzoo.errors import TrainingError, UntrustedCodeError  # noqa: E402
from bioimgzoo.package import open_package  # noqa: E402
from bioimgzoo.train.export import merge_validation  # noqa: E402
from bioimgzoo.train.finetune import finetune  # noqa: E402
from bioimgzoo.train.tasks import SegmentationTask  # noqa: E402

from .conftest import tiny_trainer  # noqa: E402


def test_export_declares_processing_and_measured_metrics(exported_package, trained_segmenter):
    pkg = open_package(exported_package)
    d = pkg.descr
    assert [p.id for p in d.inputs[0].preprocessing if p.id != "ensure_dtype"] == ["zero_mean_unit_variance"]
    assert [p.id for p in d.outputs[0].postprocessing if p.id != "ensure_dtype"] == ["sigmoid"]
    arch = d.weights.pytorch_state_dict.architecture
    # bioimgzoo's own network travels as its source (readers have no bioimgzoo), byte for byte
    from bioimgzoo.train import nets

    assert not hasattr(arch, "import_from") and arch.callable == "UNet2d"
    assert pkg.file(arch).read_bytes() == open(nets.__file__, "rb").read()
    readme = zipfile.ZipFile(exported_package).read("README.md").decode()
    validation = readme.split("# Validation", 1)[1]
    iou = trained_segmenter.evaluate()["iou"]
    assert f"| iou | {round(iou, 4):.4g} |" in validation
    assert "training_steps**: 20" in readme


def test_exported_package_reloads_and_predicts_like_the_trainer(exported_package, trained_segmenter, nuclei):
    pytest.importorskip("bioimgzoo.runtime.model", reason="the runtime is not written yet")
    import bioimgzoo

    images, _ = nuclei
    model = bioimgzoo.load(exported_package, weights="onnx", device="cpu")
    got = np.asarray(model.predict(images[0], axes="yx"))
    want = trained_segmenter.predict(images[0])
    assert got.shape[-3:] == want.shape == (2, 96, 96)
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4)


def test_n2v_package_returns_input_intensities(noisy_pairs, tmp_path):
    pytest.importorskip("bioimgzoo.runtime.model", reason="the runtime is not written yet")
    import bioimgzoo
    from bioimgzoo.train.tasks import Noise2VoidTask

    noisy, clean = noisy_pairs
    noisy, clean = noisy * 1000 + 200, clean * 1000 + 200  # camera-like counts, far from [0, 1]
    trainer = tiny_trainer(Noise2VoidTask())
    trainer.fit(noisy, clean, steps=5)
    out = trainer.export(tmp_path / "n2v.zip", name="Tiny N2V test", description="d", authors=["a"],
                         weights=["torchscript"])
    pkg = open_package(out)
    post = [p for p in pkg.descr.outputs[0].postprocessing if p.id != "ensure_dtype"]
    assert [p.id for p in post] == ["scale_linear"]
    assert post[0].kwargs.offset == pytest.approx(trainer.task.mean)
    got = np.asarray(bioimgzoo.load(out, device="cpu").predict(noisy[0], axes="yx")).reshape(64, 64)
    np.testing.assert_allclose(got, trainer.predict(noisy[0])[0], rtol=1e-4, atol=1e-2)


def test_merge_validation_replaces_by_name_and_keeps_descriptions():
    card = {"dataset": "old", "metrics": [{"name": "iou", "value": None, "description": "mine"},
                                          {"name": "other", "value": 3}]}
    merged = merge_validation(card, {"iou": 0.912345, "dice": 0.95}, dataset="new")
    rows = {r["name"]: r for r in merged["metrics"]}
    assert rows["iou"] == {"name": "iou", "value": 0.9123, "description": "mine"}
    assert rows["other"]["value"] == 3 and rows["dice"]["value"] == 0.95
    assert merged["dataset"] == "new"


def test_finetune_patch_must_be_a_valid_input_size(exported_package, nuclei, tmp_path):
    images, labels = nuclei
    with pytest.raises(TrainingError, match="use 52"):
        finetune(exported_package, images, labels, steps=1, out=tmp_path / "x.zip", progress=False,
                 device="cpu", patch_size=32)


def test_export_before_training_fails(tmp_path):
    with pytest.raises(TrainingError, match="fit"):
        tiny_trainer(SegmentationTask()).export(tmp_path / "x.zip", name="Never trained", description="d",
                                                authors=["a"])


def test_finetune_exported_package_names_parent(exported_package, nuclei, tmp_path):
    images, labels = nuclei
    result = finetune(exported_package, images[:4], labels[:4], steps=4, out=tmp_path / "ft.zip", patch_size=64,
                      batch_size=2, eval_every=2, progress=False, device="cpu")
    assert result.parent["id"] == "tiny-nuclei-test" and result.parent["weights"] == "pytorch_state_dict"
    assert set(result.metrics_before) >= {"iou"} and set(result.metrics) >= {"iou"}
    child = open_package(result.path)
    assert str(child.descr.parent.id) == "tiny-nuclei-test"
    assert str(child.descr.id) != "tiny-nuclei-test"
    readme = zipfile.ZipFile(result.path).read("README.md").decode()
    assert "**parent**: Tiny nuclei test U-Net (zoo id tiny-nuclei-test" in readme
    # the child starts from the parent's weights: before fine-tuning they score the same as the parent did
    assert child.descr.name.endswith("fine-tuned")


def test_finetune_by_zoo_id_from_a_local_zoo(exported_package, nuclei, tmp_path):
    from bioimgzoo.hub import publish
    from bioimgzoo.train.demo import serve_folder

    images, labels = nuclei
    model_id = publish(exported_package, tmp_path / "zoo")
    assert model_id == "tiny-nuclei-test"
    with serve_folder(tmp_path / "zoo") as url:
        result = finetune(model_id, images[:4], labels[:4], steps=2, out=tmp_path / "ft.zip", patch_size=64,
                          batch_size=2, eval_every=2, progress=False, device="cpu", hub=url,
                          name="Tiny nuclei test U-Net mine", weights="torchscript")
    assert result.parent["source"] == "tiny-nuclei-test" and result.parent["weights"] == "torchscript"
    assert str(open_package(result.path).descr.parent.id) == "tiny-nuclei-test"


def test_finetune_refuses_package_code_without_trust(exported_package, nuclei, tmp_path):
    images, labels = nuclei
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(exported_package) as zf:
        zf.extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    rdf["weights"]["pytorch_state_dict"]["architecture"] = {"import_from": "some_other_library.nets",
                                                            "callable": arch["callable"], "kwargs": arch["kwargs"]}
    del rdf["weights"]["torchscript"], rdf["weights"]["onnx"]
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        finetune(folder, images, labels, steps=1, out=tmp_path / "x.zip", progress=False, device="cpu",
                 patch_size=64)
    assert not (tmp_path / "x.zip").exists()


def test_finetune_zoo_fixture_torchscript(zoo_fixture, nuclei, tmp_path):
    images, labels = nuclei
    result = finetune(zoo_fixture, images[:3], labels[:3], steps=2, out=tmp_path / "broad-ft.zip", patch_size=64,
                      batch_size=1, eval_every=2, progress=False, device="cpu")
    assert result.parent["weights"] == "torchscript"
    child = open_package(result.path)
    assert child.descr.weights.torchscript is not None and child.descr.weights.pytorch_state_dict is None
    assert child.descr.parent is None  # the fixture has no zoo id; the README names it instead
    readme = zipfile.ZipFile(result.path).read("README.md").decode()
    assert "**parent**: UNet 2D Nuclei Broad" in readme
    parent = open_package(zoo_fixture).descr
    # the parent's tensor ids, channel names, maintainers and tags stay; its authors are credited
    assert [str(t.id) for t in child.descr.inputs] == [str(t.id) for t in parent.inputs]
    assert [str(t.id) for t in child.descr.outputs] == [str(t.id) for t in parent.outputs]
    assert {m.github_user for m in child.descr.maintainers} >= {m.github_user for m in parent.maintainers}
    assert set(parent.tags) - {"deepimagej"} <= set(child.descr.tags)
    assert all(a.name in readme.split("**parent_authors**", 1)[1].splitlines()[0] for a in parent.authors)


def test_finetune_needs_a_task_when_the_parent_names_none(exported_package, nuclei, tmp_path):
    images, labels = nuclei
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(exported_package) as zf:
        zf.extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["tags"] = [t for t in rdf["tags"] if "segmentation" not in t]
    rdf["config"]["bioimageio"].pop("task", None)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(TrainingError, match="task='segmentation'"):
        finetune(folder, images, labels, steps=1, out=tmp_path / "x.zip", progress=False, device="cpu",
                 patch_size=64)
    with pytest.raises(TrainingError, match="needs labels"):
        finetune(exported_package, images, None, steps=1, out=tmp_path / "x.zip", progress=False, device="cpu",
                 patch_size=64)


@pytest.mark.slow
def test_demo_path_export_check_publish_load_predict(tmp_path):
    pytest.importorskip("bioimgzoo.runtime.model", reason="the runtime is not written yet")
    pytest.importorskip("bioimgzoo.validation")
    from bioimgzoo.train.demo import run_demo

    result = run_demo(tmp_path / "demo", steps=4, big_size=256, n_train=4, progress=False, device="cpu")
    for path in (result.package, result.prediction, result.labels, result.image, result.check_markdown,
                 result.check_json, result.overview, result.loss_curve):
        assert path.is_file() and path.stat().st_size > 0, path
    assert result.check_passed, result.check_markdown.read_text()
    assert (result.zoo_dir / "bioimage-io" / "artifacts" / result.model_id / "files" / "rdf.yaml").is_file()
    import tifffile

    pred = tifffile.imread(result.prediction)
    assert pred.shape == (2, 256, 256) and 0 <= pred.min() and pred.max() <= 1
    assert set(result.big_image_metrics) == {"iou", "dice", "instance_f1"}
    assert "held-out test images: IoU" in result.summary()
    shutil.rmtree(tmp_path / "demo")


def test_export_reads_the_trainer_through_its_public_api_only():
    import ast
    import importlib
    import inspect

    export = importlib.import_module("bioimgzoo.train.export")
    for mod in (export, importlib.import_module("bioimgzoo.train.finetune")):
        tree = ast.parse(inspect.getsource(mod))
        private = sorted({n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                          and isinstance(n.value, ast.Name) and n.value.id == "trainer" and n.attr.startswith("_")})
        assert not private, f"{mod.__name__} reads private trainer members {private}"
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if mod is export:
            assert "trainer" not in imported  # one direction: the trainer imports export, never the reverse
