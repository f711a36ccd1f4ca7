"""Metrics on hand-made masks: exact values."""

from __future__ import annotations

import numpy as np
import pytest

from bioimgzoo.train import metrics as M


def _square(shape, y0, x0, size, value=1):
    a = np.zeros(shape, np.int32)
    a[y0:y0 + size, x0:x0 + size] = value
    return a


def test_iou_and_dice_exact():
    pred = _square((10, 10), 0, 0, 4)   # 16 px
    true = _square((10, 10), 2, 0, 4)   # 16 px, overlap 2 rows x 4 = 8
    assert M.iou(pred, true) == pytest.approx(8 / 24)
    assert M.dice(pred, true) == pytest.approx(16 / 32)
    assert M.iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert M.dice(np.zeros((3, 3)), np.ones((3, 3))) == 0.0


def test_match_instances_and_f1_exact():
    true = np.zeros((20, 20), np.int32)
    true[0:4, 0:4] = 1      # matched exactly
    true[10:14, 10:14] = 2  # half-covered by pred 7 (IoU 8/24 < 0.5): a miss
    true[0:3, 15:18] = 3    # not predicted at all
    pred = np.zeros_like(true)
    pred[0:4, 0:4] = 5
    pred[12:16, 10:14] = 7
    pred[17:19, 0:2] = 9    # a false positive
    tp, fp, fn = M.match_instances(pred, true)
    assert (tp, fp, fn) == (1, 2, 2)
    assert M.instance_f1(pred, true) == pytest.approx(2 / (2 + 2 + 2))
    # IoU exactly 0.5 counts as a match (threshold is inclusive)
    half = _square((8, 8), 0, 0, 4)
    half_pred = np.zeros_like(half)
    half_pred[0:2, 0:4] = 1
    assert M.match_instances(half_pred, half) == (1, 0, 0)
    assert M.instance_f1(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_match_is_one_to_one():
    true = _square((10, 10), 0, 0, 6)
    pred = np.zeros_like(true)
    pred[0:6, 0:4] = 1  # IoU 24/36
    pred[0:6, 4:6] = 2  # IoU 12/36
    assert M.match_instances(pred, true) == (1, 1, 0)


def test_probabilities_to_instances_splits_touching_objects_with_boundary():
    fg = np.zeros((12, 20))
    fg[2:10, 2:18] = 1.0  # one foreground blob made of two touching objects
    boundary = np.zeros_like(fg)
    boundary[2:10, 9:11] = 1.0  # the boundary between them
    boundary[2, 2:18] = boundary[9, 2:18] = 1.0
    without = M.probabilities_to_instances(fg)
    with_b = M.probabilities_to_instances(fg, boundary)
    assert without.max() == 1
    assert with_b.max() == 2
    assert (with_b > 0).sum() == (fg > 0.5).sum()  # every foreground pixel is assigned
    assert len(np.unique(with_b[:, 2:9])) == 2 and len(np.unique(with_b[:, 11:18])) == 2
    small = np.zeros((10, 10))
    small[0, 0] = 1.0
    assert M.probabilities_to_instances(small, min_size=4).max() == 0


def test_psnr_and_ssim():
    ref = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    noisy = ref + 0.1
    assert M.psnr(noisy, ref) == pytest.approx(20.0)  # range 1, MSE 0.01
    assert M.psnr(ref, ref) == float("inf")
    assert M.ssim(ref, ref) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert M.ssim(ref + rng.normal(0, 0.3, ref.shape), ref) < 0.5
