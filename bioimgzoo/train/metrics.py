"""Evaluation metrics (numpy/scipy): segmentation overlap, instance matching, PSNR, SSIM.

All functions take numpy arrays and return Python floats/ints, so their
results go straight into a model card.

Definitions
-----------
* IoU = |P ∩ T| / |P ∪ T| and Dice = 2|P ∩ T| / (|P| + |T|) of binary masks;
  both are 1.0 when prediction and truth are both empty.
* Instance matching: a predicted and a true instance match when their IoU is
  at least the threshold (0.5); matching is one-to-one, greedy by descending
  IoU (for thresholds >= 0.5 a match is unique anyway).  F1 = 2TP / (2TP + FP + FN).
* PSNR = 10 log10(range² / MSE) with ``range`` the reference's max - min
  unless given.
* SSIM as Wang et al. 2004: Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03.
"""

from __future__ import annotations

import numpy as np

# one decoder for training metrics, the demo and `predict --labels`: what a card reports is what users get
from ..runtime.labels import probabilities_to_instances

__all__ = [
    "iou", "dice", "overlap_counts", "match_instances", "instance_f1", "psnr", "ssim",
    "probabilities_to_instances",
]


def overlap_counts(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int]:
    """(intersection, |pred|, |true|) of two binary masks, for pooling over images."""
    pred = np.asarray(pred, bool)
    true = np.asarray(true, bool)
    if pred.shape != true.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {true.shape}")
    return int(np.count_nonzero(pred & true)), int(np.count_nonzero(pred)), int(np.count_nonzero(true))


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two binary masks (1.0 when both are empty)."""
    inter, p, t = overlap_counts(pred, true)
    union = p + t - inter
    return 1.0 if union == 0 else inter / union


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice coefficient (F1 of pixels) of two binary masks (1.0 when both are empty)."""
    inter, p, t = overlap_counts(pred, true)
    return 1.0 if p + t == 0 else 2 * inter / (p + t)


def match_instances(pred: np.ndarray, true: np.ndarray, *, threshold: float = 0.5) -> tuple[int, int, int]:
    """Match predicted to true instances by IoU; return (true positives, false positives, false negatives).

    ``pred`` and ``true`` are label images (0 = background, each other value
    one instance; the values need not be consecutive).
    """
    pred = np.asarray(pred)
    true = np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"label images differ in shape: {pred.shape} vs {true.shape}")
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_ids, t_inv = np.unique(true, return_inverse=True)
    p_inv = p_inv.reshape(-1)
    t_inv = t_inv.reshape(-1)
    n_p, n_t = len(p_ids), len(t_ids)
    # contingency table of (pred id, true id) pixel counts; index 0 may be background
    table = np.bincount(p_inv * n_t + t_inv, minlength=n_p * n_t).reshape(n_p, n_t)
    p_fg = p_ids != 0
    t_fg = t_ids != 0
    inter = table[np.ix_(p_fg, t_fg)].astype(np.float64)
    n_pred, n_true = int(p_fg.sum()), int(t_fg.sum())
    if n_pred == 0 or n_true == 0:
        return 0, n_pred, n_true
    p_area = table[p_fg].sum(axis=1).astype(np.float64)
    t_area = table[:, t_fg].sum(axis=0).astype(np.float64)
    union = p_area[:, None] + t_area[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    cand = np.argwhere(ious >= threshold)
    order = np.argsort(-ious[cand[:, 0], cand[:, 1]], kind="stable")
    used_p: set[int] = set()
    used_t: set[int] = set()
    tp = 0
    for i, j in cand[order]:
        if i in used_p or j in used_t:
            continue
        used_p.add(int(i))
        used_t.add(int(j))
        tp += 1
    return tp, n_pred - tp, n_true - tp


def instance_f1(pred: np.ndarray, true: np.ndarray, *, threshold: float = 0.5) -> float:
    """F1 score of instance matching at the IoU ``threshold`` (1.0 when both have no instances)."""
    tp, fp, fn = match_instances(pred, true, threshold=threshold)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def psnr(pred: np.ndarray, ref: np.ndarray, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``pred`` against the reference ``ref``, in dB."""
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    mse = float(np.mean((pred - ref) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range ** 2 / mse))


def ssim(pred: np.ndarray, ref: np.ndarray, *, data_range: float | None = None, sigma: float = 1.5) -> float:
    """Mean structural similarity of two 2D images (Wang et al. 2004, Gaussian window)."""
    from scipy import ndimage as ndi

    x = np.asarray(pred, np.float64)
    y = np.asarray(ref, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if data_range is None:
        data_range = float(y.max() - y.min())
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(a):
        return ndi.gaussian_filter(a, sigma, truncate=3.5)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
