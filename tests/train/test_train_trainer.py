"""The trainer: learning, exact resume, early stopping, errors, prediction, loss curve."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bioimgzoo.errors import TrainingError  # noqa: E402
from bioimgzoo.train.tasks import Noise2VoidTask, SegmentationTask  # noqa: E402
from bioimgzoo.train.trainer import CHECKPOINT_NAME, Trainer  # noqa: E402

from .conftest import tiny_trainer  # noqa: E402


def test_tiny_training_lowers_loss_and_keeps_best(nuclei):
    images, labels = nuclei
    trainer = tiny_trainer(SegmentationTask())
    result = trainer.fit(images, labels, steps=30)
    losses = trainer.history["loss"]
    assert len(losses) == 30 and result.steps == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert trainer.history["val_step"] == [5, 10, 15, 20, 25, 30]
    best = max(m["iou"] for m in trainer.history["val"])
    assert result.metrics["iou"] == best
    # the module holds the best weights: measuring again gives the same numbers
    assert trainer.evaluate()["iou"] == pytest.approx(best)


def test_resume_equals_straight_training(nuclei, tmp_path):
    images, labels = nuclei
    n = 6
    straight = tiny_trainer(SegmentationTask(boundary=True), eval_every=n, checkpoint_every=n,
                            checkpoint_dir=tmp_path / "a")
    straight.fit(images, labels, steps=2 * n)

    first = tiny_trainer(SegmentationTask(boundary=True), eval_every=n, checkpoint_every=n,
                         checkpoint_dir=tmp_path / "b")
    first.fit(images, labels, steps=n)
    assert (tmp_path / "b" / CHECKPOINT_NAME).is_file()
    # a new process would build a new network (other initial weights) and a new trainer
    second = tiny_trainer(SegmentationTask(boundary=True), seed=0, eval_every=n, checkpoint_every=n,
                          checkpoint_dir=tmp_path / "b")
    torch.nn.init.zeros_(next(second.module.parameters()))
    result = second.fit(images, labels, steps=2 * n, resume=True)
    assert result.steps == 2 * n
    assert second.history["loss"] == straight.history["loss"]
    for (k, a), b in zip(straight.module.state_dict().items(), second.module.state_dict().values()):
        assert torch.equal(a, b), k
    last_a = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["model"]
    last_b = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["model"]
    for k in last_a:
        assert torch.equal(last_a[k], last_b[k]), k


def test_resume_errors(nuclei, tmp_path):
    images, labels = nuclei
    with pytest.raises(TrainingError, match="needs checkpoint_dir"):
        tiny_trainer(SegmentationTask()).fit(images, labels, steps=2, resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        tiny_trainer(SegmentationTask(), checkpoint_dir=tmp_path).fit(images, labels, steps=2, resume=True)
    tiny_trainer(SegmentationTask(), checkpoint_dir=tmp_path).fit(images, labels, steps=2)
    bigger = Trainer(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1)), SegmentationTask(), patch_size=32,
                     size_divisor=4, device="cpu", progress=False, checkpoint_dir=tmp_path, batch_size=4, seed=0)
    with pytest.raises(TrainingError, match="does not fit this network"):
        bigger.fit(images, labels, steps=4, resume=True)
    with pytest.raises(TrainingError, match="other images"):
        tiny_trainer(SegmentationTask(), checkpoint_dir=tmp_path).fit(images[:4], labels[:4], steps=4, resume=True)


def test_early_stopping(nuclei):
    images, labels = nuclei
    # a learning rate of ~0 (and no batch-norm statistics) never improves on the first validation
    from bioimgzoo.train.nets import UNet2d

    torch.manual_seed(0)
    trainer = Trainer(UNet2d(1, 1, depth=2, base=4, batch_norm=False), SegmentationTask(), patch_size=32,
                      batch_size=4, lr=1e-12, seed=0, device="cpu", eval_every=2, patience=2, progress=False)
    result = trainer.fit(images, labels, steps=40)
    assert result.stopped_early and result.steps == 6
    assert result.best_step == 2


def test_setup_errors(nuclei):
    images, labels = nuclei
    with pytest.raises(TrainingError, match="multiple of 4"):
        tiny_trainer(SegmentationTask(), patch_size=30)
    with pytest.raises(TrainingError, match="trains on targets"):
        tiny_trainer(SegmentationTask()).fit(images, steps=2)
    with pytest.raises(TrainingError, match="out_channels=2"):
        tiny_trainer(SegmentationTask(boundary=True), out_channels=1).fit(images, labels, steps=2)
    with pytest.raises(TrainingError, match="6 images but 2 targets"):
        tiny_trainer(SegmentationTask()).fit(images, labels[:2], steps=2)
    with pytest.raises(TrainingError, match="exactly one of steps"):
        tiny_trainer(SegmentationTask()).fit(images, labels)
    with pytest.raises(TrainingError, match="unknown device"):
        tiny_trainer(SegmentationTask(), device="gpu0")


def test_n2v_trains_on_noisy_images_only(noisy_pairs, tmp_path):
    noisy, clean = noisy_pairs
    trainer = tiny_trainer(Noise2VoidTask(), lr=3e-3)
    result = trainer.fit(noisy, clean, epochs=4)
    assert result.steps == 4 * trainer.steps_per_epoch()
    assert set(result.metrics) >= {"psnr", "psnr_input", "psnr_gain", "ssim"}
    # without clean images the self-supervised loss is the validation metric
    ss = tiny_trainer(Noise2VoidTask(), lr=3e-3)
    r2 = ss.fit(noisy, steps=5)
    assert ss.primary_metric == ("val_loss", "min") and "val_loss" in r2.metrics
    path = trainer.save_loss_curve(tmp_path / "curve.png")
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > 500 and im.size[1] > 500  # two panels: loss and validation


def test_single_image_is_split_by_rows(noisy_pairs):
    noisy, clean = noisy_pairs
    big = np.tile(noisy[0], (2, 2))  # one 128x128 image
    trainer = tiny_trainer(Noise2VoidTask(), val_fraction=0.25)
    trainer.fit(big, steps=2)
    assert trainer._split == {"n": 1, "mode": "rows", "val": [96]}
    assert trainer._val[0].shape == (1, 32, 128)


def test_tiled_prediction_equals_whole(nuclei):
    images, labels = nuclei
    trainer = tiny_trainer(SegmentationTask(), augment=False)
    trainer.fit(images, labels, steps=3)
    whole = trainer.predict(images[0])
    trainer.tile = 48  # forces 3x3 windows of 48 with a halo of 20
    tiled = trainer.predict(images[0])
    assert whole.shape == tiled.shape == (1, 96, 96)
    np.testing.assert_allclose(tiled, whole, atol=2e-3)


def test_public_run_api_is_what_export_reads(noisy_pairs):
    noisy, clean = noisy_pairs
    trainer = tiny_trainer(Noise2VoidTask(), weight_decay=1e-4)
    assert not trainer.has_validation and trainer.val_images == [] and trainer.val_targets is None
    trainer.fit(noisy, clean, steps=2)
    assert trainer.has_validation
    assert trainer.split == trainer._split and trainer.split["mode"] == "images"
    assert len(trainer.val_images) == len(trainer.split["val"]) == 1
    assert trainer.val_images[0] is trainer._val[0] and trainer.val_targets[0] is trainer._val_t[0]
    trainer.split["mode"] = "changed"  # views: the run's own records stay as they are
    trainer.val_images.clear()
    assert trainer._split["mode"] == "images" and trainer.has_validation
    cfg = trainer.config
    assert cfg["task"] == "n2v" and cfg["patch_size"] == [32, 32] and cfg["batch_size"] == 4
    assert cfg["weight_decay"] == 1e-4 and cfg["optimizer"] == "torch.optim.Adam"


def test_tiled_prediction_of_odd_sizes_uses_the_plan(nuclei):
    images, labels = nuclei
    trainer = tiny_trainer(SegmentationTask(), augment=False)
    trainer.fit(images, labels, steps=2)
    x = trainer.task.normalize(images[0][None, :90, :70])
    whole = trainer.predict_raw(x)
    trainer.tile = 40
    calls = []
    forward = trainer._forward
    trainer._forward = lambda a: calls.append(a.shape) or forward(a)
    tiled = trainer.predict_raw(x)
    assert tiled.shape == whole.shape == (1, 90, 70)
    assert len(calls) > 4 and all(s[1] <= 40 and s[2] <= 40 and s[1] % 4 == 0 for s in calls)
    np.testing.assert_allclose(tiled, whole, atol=2e-3)
