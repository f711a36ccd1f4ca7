"""Tasks: N2V masking, losses, targets, processing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bioimgzoo.errors import TrainingError  # noqa: E402
from bioimgzoo.train.processing import apply_processing  # noqa: E402
from bioimgzoo.train.tasks import (Noise2VoidTask, SegmentationTask, get_task, inner_boundaries,  # noqa: E402
                                   n2v_mask)


def test_n2v_mask_replaces_only_masked_pixels_with_neighbours():
    rng = np.random.default_rng(0)
    h, w = 32, 40
    # every pixel has a unique value, so a replacement reveals where it came from
    x = np.arange(2 * h * w, dtype=np.float32).reshape(2, 1, h, w)
    masked, mask = n2v_mask(x, rng, fraction=1 / 16, radius=2)
    assert mask.shape == (2, 1, h, w) and mask.dtype == bool
    changed = masked != x
    assert not (changed & ~mask).any()                      # nothing outside the mask changed
    assert (changed == mask).all()                          # every masked pixel changed (never itself)
    for b in range(2):
        assert mask[b].sum() == (h // 4) * (w // 4)         # stratified: one per 4x4 box
        ys, xs = np.nonzero(mask[b, 0])
        for y, x_ in zip(ys, xs):
            src = int(masked[b, 0, y, x_]) - b * h * w
            sy, sx = divmod(src, w)
            assert max(abs(sy - y), abs(sx - x_)) <= 2 and (sy, sx) != (y, x_)


def test_n2v_loss_ignores_unmasked_pixels():
    task = Noise2VoidTask()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 16, 16)).astype(np.float32)
    batch = {k: torch.from_numpy(v) for k, v in task.make_batch(x, None, rng).items()}
    out = torch.zeros(2, 1, 16, 16)
    base = task.loss(out, batch)
    changed = out.clone()
    changed[batch["mask"] == 0] = 100.0  # garbage outside the blind spots
    assert torch.equal(task.loss(changed, batch), base)
    expected = ((batch["target"] ** 2) * batch["mask"]).sum() / batch["mask"].sum()
    assert base.item() == pytest.approx(expected.item())


def test_n2v_processing_is_an_exact_inverse():
    task = Noise2VoidTask()
    rng = np.random.default_rng(2)
    images = [rng.normal(100, 15, (1, 20, 20)).astype(np.float32) for _ in range(3)]
    task.setup(images, None)
    assert task.preprocessing()[0]["id"] == "fixed_zero_mean_unit_variance"
    assert task.postprocessing()[0]["id"] == "scale_linear"
    normed = task.normalize(images[0])
    assert abs(float(np.concatenate([task.normalize(i) for i in images]).mean())) < 1e-4
    np.testing.assert_allclose(task.to_output(normed, images[0]), images[0], rtol=1e-5, atol=1e-3)


def test_n2v_needs_statistics_before_export():
    with pytest.raises(TrainingError, match="normalisation statistics"):
        Noise2VoidTask().preprocessing()


def test_segmentation_targets_and_processing():
    lab = np.zeros((8, 8), np.int32)
    lab[1:4, 1:7] = 1
    lab[4:7, 1:7] = 2  # touches label 1
    b = inner_boundaries(lab)
    assert b[3, 3] and b[4, 3]          # both sides of the contact line
    assert not b[2, 3]                  # interior
    assert b[1, 3] and not b[0, 3]      # the object's edge, not the background
    t = SegmentationTask(boundary=True).prepare_target(lab, np.zeros((1, 8, 8)))
    assert t.shape == (2, 8, 8) and t[0].sum() == 36 and t[1].sum() == b.sum()
    task = SegmentationTask()
    assert task.outputs_logits
    assert [s["id"] for s in task.preprocessing()] == ["zero_mean_unit_variance"]
    img = np.random.default_rng(0).normal(50, 10, (1, 16, 16)).astype(np.float32)
    n = task.normalize(img)
    assert abs(n.mean()) < 1e-5 and abs(n.std() - 1) < 1e-4


def test_segmentation_loss_uses_probabilities_for_a_parent_with_final_sigmoid():
    task = SegmentationTask()
    task.use_processing([{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}], [])
    assert not task.outputs_logits
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    good = task.loss(target.clamp(0.01, 0.99), {"target": target})
    bad = task.loss(1 - target.clamp(0.01, 0.99), {"target": target})
    assert good < bad


def test_apply_processing_formulas():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    out = apply_processing([{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 0,
                                                             "max_percentile": 100}}], x)
    assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1, abs=1e-5)
    out = apply_processing([{"id": "scale_linear", "kwargs": {"gain": 2, "offset": 1}}, {"id": "clip",
                            "kwargs": {"min": 0, "max": 10}}], x)
    assert out.max() == 10 and out[0, 0, 1] == 3
    with pytest.raises(TrainingError, match="not supported"):
        apply_processing([{"id": "stardist_postprocessing"}], x)


def test_get_task_by_name():
    assert isinstance(get_task("segmentation"), SegmentationTask)
    assert isinstance(get_task("n2v"), Noise2VoidTask)
    with pytest.raises(TrainingError, match="unknown task"):
        get_task("classification")


def test_training_processing_is_the_runtimes():
    from bioimgzoo.runtime.processing import SUPPORTED_OPS
    from bioimgzoo.train import processing

    assert processing.SUPPORTED == SUPPORTED_OPS
    x = np.stack([np.zeros((3, 4)), np.ones((3, 4))]).astype(np.float32)
    out = apply_processing([{"id": "softmax", "kwargs": {"axis": "channel"}}], x)
    np.testing.assert_allclose(out.sum(axis=0), 1, rtol=1e-6)
