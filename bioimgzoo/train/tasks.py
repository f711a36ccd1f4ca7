"""Training tasks: what a network learns, how it is measured and how its package processes data.

A task bundles everything about a problem that is not the network:

* the *declared* pre/post-processing of the package (what a zoo consumer's
  runtime will apply); training normalises its images with exactly these
  steps (:mod:`bioimgzoo.train.processing`), so the exported package
  reproduces the validation metrics;
* how a target image becomes a training target, how a batch is built (with
  Noise2Void's blind-spot masking) and the loss;
* the validation metrics, computed on whole images in the consumer's output
  space (probabilities, denoised intensities).

Built-in tasks: :class:`SegmentationTask` and :class:`Noise2VoidTask`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import TrainingError
from . import metrics as M
from .processing import apply_processing, as_step_dict

__all__ = ["Task", "SegmentationTask", "Noise2VoidTask", "n2v_mask", "inner_boundaries", "get_task"]

#: ``predict_fn(normalized (c, y, x)) -> raw network output (k, y, x)``, given to :meth:`Task.evaluate`.
PredictFn = Callable[[np.ndarray], np.ndarray]


class Task:
    """Base class of training tasks (see the module docstring for the parts)."""

    #: short name, used in cards and the CLI
    name = "task"
    #: augmentations used when the trainer is given ``augment=True``
    default_augment: dict[str, bool] = {"flips": True, "intensity": False, "noise": False}
    #: whether the training batches need targets (False: self-supervised)
    trains_on_targets = True

    def __init__(self) -> None:
        self._pre_override: list[dict] | None = None
        self._post_override: list[dict] | None = None

    # -- processing declared for the package ---------------------------------------------------
    def default_preprocessing(self) -> list[dict]:
        return []

    def default_postprocessing(self) -> list[dict]:
        return []

    def preprocessing(self) -> list[dict]:
        """The package's input preprocessing, as ``{"id", "kwargs"}`` dicts."""
        return copy.deepcopy(self._pre_override if self._pre_override is not None else self.default_preprocessing())

    def postprocessing(self) -> list[dict]:
        """The package's output postprocessing, as ``{"id", "kwargs"}`` dicts."""
        return copy.deepcopy(self._post_override if self._post_override is not None
                             else self.default_postprocessing())

    def use_processing(self, preprocessing: Sequence[Any], postprocessing: Sequence[Any]) -> None:
        """Train with (and declare) given processing instead of the task's own, e.g. a parent package's."""
        self._pre_override = [as_step_dict(s) for s in preprocessing]
        self._post_override = [as_step_dict(s) for s in postprocessing]

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """The network's input for one raw image (channel, y, x): the declared preprocessing."""
        return apply_processing(self.preprocessing(), image)

    def to_output(self, raw: np.ndarray, image: np.ndarray) -> np.ndarray:
        """What a consumer gets from the raw network output: the declared postprocessing."""
        return apply_processing(self.postprocessing(), raw, reference=image, post=True)

    # -- training ------------------------------------------------------------------------------
    def out_channels(self, in_channels: int) -> int:
        """Output channels a network for this task needs."""
        raise NotImplementedError

    def setup(self, images: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None) -> None:
        """Learn what the task needs from the training images (e.g. normalisation statistics)."""

    def state_dict(self) -> dict:
        """Picklable state (plain Python types) stored in checkpoints."""
        return {"pre": self._pre_override, "post": self._post_override}

    def load_state_dict(self, state: dict) -> None:
        self._pre_override = state.get("pre")
        self._post_override = state.get("post")

    def prepare_target(self, target: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Turn a user's target image into the float32 (k, y, x) array patches are cut from."""
        t = np.asarray(target, np.float32)
        return t[None] if t.ndim == 2 else t

    def make_batch(self, x: np.ndarray, t: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Batch of network inputs/targets from augmented patches x (b, c, h, w), t (b, k, h, w)."""
        return {"input": x, "target": t}

    def loss(self, output, batch: dict):
        """Scalar torch loss of the network output for a batch (tensors)."""
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------------
    def primary_metric(self, has_targets: bool) -> tuple[str, str]:
        """(metric name, "max" or "min") used for early stopping and the best checkpoint."""
        raise NotImplementedError

    def evaluate(self, predict_fn: PredictFn, images: Sequence[np.ndarray],
                 targets: Sequence[np.ndarray] | None) -> dict[str, float]:
        """Metrics over whole validation images (raw images, raw targets)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Task name and settings, for the model card."""
        return {"task": self.name}


# ------------------------------------------------------------------------------------------------
# segmentation


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of an instance with a 4-neighbour of another label (or background); image edges excluded."""
    lab = np.asarray(labels)
    pad = np.pad(lab, 1, mode="edge")
    center = pad[1:-1, 1:-1]
    b = np.zeros(lab.shape, bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        b |= pad[1 + dy:pad.shape[0] - 1 + dy, 1 + dx:pad.shape[1] - 1 + dx] != center
    return b & (lab > 0)


def _instances_of(target: np.ndarray) -> np.ndarray:
    """Instance labels of a user target: its own labels, or components of a binary mask."""
    from scipy import ndimage as ndi

    t = np.asarray(target)
    if t.ndim == 3:
        t = t[0]
    t = t.astype(np.int64) if np.issubdtype(t.dtype, np.integer) else np.rint(t).astype(np.int64)
    if t.max() <= 1:
        return ndi.label(t > 0)[0]
    return t


class SegmentationTask(Task):
    """Foreground segmentation of instances (e.g. nuclei), optionally with a boundary channel.

    Targets are instance label images (0 = background) or binary masks.
    Output channel 0 is the foreground probability; with ``boundary=True``
    channel 1 is the probability of the inner boundary of an instance, which
    separates touching instances (see
    :func:`~bioimgzoo.train.metrics.probabilities_to_instances`).

    Loss: binary cross-entropy + soft Dice, per channel.  Metrics (pooled over
    all validation pixels/instances): ``iou`` and ``dice`` of the foreground
    (probability > 0.5), ``instance_f1`` at IoU 0.5 (plus
    ``instance_precision``/``instance_recall``).

    Package processing: ``zero_mean_unit_variance`` over y, x per sample and
    channel; ``sigmoid`` on the output (the network returns logits).
    """

    name = "segmentation"
    default_augment = {"flips": True, "intensity": True, "noise": True}

    def __init__(self, boundary: bool = False, *, threshold: float = 0.5, min_size: int = 4):
        super().__init__()
        self.boundary = bool(boundary)
        self.threshold = float(threshold)
        self.min_size = int(min_size)

    def default_preprocessing(self) -> list[dict]:
        return [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"], "eps": 1e-6}}]

    def default_postprocessing(self) -> list[dict]:
        return [{"id": "sigmoid", "kwargs": {}}]

    @property
    def outputs_logits(self) -> bool:
        """True when the network returns logits (sigmoid is the package's postprocessing)."""
        return any(s["id"] == "sigmoid" for s in self.postprocessing())

    def out_channels(self, in_channels: int) -> int:
        return 2 if self.boundary else 1

    def prepare_target(self, target: np.ndarray, image: np.ndarray) -> np.ndarray:
        lab = _instances_of(target)
        chans = [lab > 0]
        if self.boundary:
            chans.append(inner_boundaries(lab))
        return np.stack(chans).astype(np.float32)

    def loss(self, output, batch: dict):
        import torch
        import torch.nn.functional as F

        target = batch["target"]
        if self.outputs_logits:
            bce = F.binary_cross_entropy_with_logits(output, target)
            prob = torch.sigmoid(output)
        else:  # a parent network with its own final sigmoid
            prob = output.clamp(1e-6, 1 - 1e-6)
            bce = F.binary_cross_entropy(prob, target)
        dims = (0, 2, 3)
        inter = (prob * target).sum(dims)
        soft_dice = (2 * inter + 1.0) / (prob.sum(dims) + target.sum(dims) + 1.0)
        return bce + (1.0 - soft_dice).mean()

    def primary_metric(self, has_targets: bool) -> tuple[str, str]:
        return "iou", "max"

    def instances(self, probabilities: np.ndarray) -> np.ndarray:
        """Instance labels from the (consumer-space) probability output (k, y, x)."""
        return M.probabilities_to_instances(
            probabilities[0], probabilities[1] if self.boundary and len(probabilities) > 1 else None,
            threshold=self.threshold, min_size=self.min_size)

    def evaluate(self, predict_fn: PredictFn, images: Sequence[np.ndarray],
                 targets: Sequence[np.ndarray] | None) -> dict[str, float]:
        if targets is None:
            raise TrainingError("segmentation needs label images to validate: pass targets (labels)")
        inter = p_sum = t_sum = 0
        tp = fp = fn = 0
        for image, target in zip(images, targets):
            prob = self.to_output(predict_fn(self.normalize(image)), image)
            true = _instances_of(target)
            i, p, t = M.overlap_counts(prob[0] > self.threshold, true > 0)
            inter, p_sum, t_sum = inter + i, p_sum + p, t_sum + t
            a, b, c = M.match_instances(self.instances(prob), true, threshold=0.5)
            tp, fp, fn = tp + a, fp + b, fn + c
        union = p_sum + t_sum - inter
        return {
            "iou": 1.0 if union == 0 else inter / union,
            "dice": 1.0 if p_sum + t_sum == 0 else 2 * inter / (p_sum + t_sum),
            "instance_f1": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn),
            "instance_precision": 1.0 if tp + fp == 0 else tp / (tp + fp),
            "instance_recall": 1.0 if tp + fn == 0 else tp / (tp + fn),
        }

    def describe(self) -> dict:
        return {"task": self.name, "boundary_channel": self.boundary, "threshold": self.threshold,
                "loss": "binary cross-entropy + soft Dice"}


# ------------------------------------------------------------------------------------------------
# Noise2Void


def n2v_mask(x: np.ndarray, rng: np.random.Generator, *, fraction: float = 0.02,
             radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Blind-spot masking of Noise2Void (Krull et al. 2019) on a batch (b, c, h, w).

    Pixels are chosen by stratified sampling -- one random pixel in every
    box of ``round(1/sqrt(fraction))`` pixels square -- and each one's value
    (in all channels) is replaced by that of a random other pixel within
    ``radius`` (uniform, never the pixel itself; mirrored at image edges).

    Returns
    -------
    masked : ndarray, same shape and dtype as x
        The network input.
    mask : ndarray of bool, shape (b, 1, h, w)
        True at the replaced pixels, where the loss is computed.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"n2v_mask expects (b, c, h, w), got shape {x.shape}")
    if not 0 < fraction <= 0.25:
        raise ValueError(f"fraction must be in (0, 0.25], got {fraction}")
    b, c, h, w = x.shape
    box = max(2, int(round(1.0 / np.sqrt(fraction))))
    gy, gx = np.meshgrid(np.arange(0, h, box), np.arange(0, w, box), indexing="ij")
    gy, gx = gy.ravel(), gx.ravel()
    n = gy.size
    masked = x.copy()
    mask = np.zeros((b, 1, h, w), bool)
    offsets = np.array([(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                        if (dy, dx) != (0, 0)])
    for i in range(b):
        py = gy + rng.integers(0, box, n)
        px = gx + rng.integers(0, box, n)
        keep = (py < h) & (px < w)
        py, px = py[keep], px[keep]
        off = offsets[rng.integers(0, len(offsets), py.size)]
        # mirror at the edges: never maps a non-zero offset back onto the pixel itself
        ny = np.abs(py + off[:, 0])
        ny = np.where(ny >= h, 2 * (h - 1) - ny, ny)
        nx = np.abs(px + off[:, 1])
        nx = np.where(nx >= w, 2 * (w - 1) - nx, nx)
        masked[i][:, py, px] = x[i][:, ny, nx]
        mask[i, 0, py, px] = True
    return masked, mask


class Noise2VoidTask(Task):
    """Self-supervised denoising with Noise2Void (Krull et al., CVPR 2019).

    Trains on noisy images only: in every patch a few pixels are replaced by
    a random neighbour (:func:`n2v_mask`) and the network learns to predict
    their original values from the surroundings alone -- which recovers the
    signal but not pixel-independent noise.  The loss is the mean squared
    error on the masked pixels.  When clean images are given as targets, the
    validation metrics are ``psnr``/``ssim`` of the denoised images and of
    the noisy inputs (``psnr_input``, ``ssim_input``, ``psnr_gain``);
    otherwise the self-supervised ``val_loss`` on fixed masks.

    Package processing, and why: the denoised image must come back in the
    input's intensities, but a per-sample normalisation cannot be undone by
    any spec postprocessing (``scale_mean_variance`` would rescale the output
    to the *noisy* input's standard deviation, re-inflating it by the noise
    variance).  So the task normalises with fixed statistics of the training
    images: preprocessing ``fixed_zero_mean_unit_variance`` (mean, std) and
    postprocessing ``scale_linear`` (gain = std + eps, offset = mean), its
    exact inverse.  The price: images much brighter or darker than the
    training images are out of distribution -- retrain or fine-tune for them.
    """

    name = "n2v"
    default_augment = {"flips": True, "intensity": False, "noise": False}
    trains_on_targets = False
    eps = 1e-6

    def __init__(self, *, mask_fraction: float = 0.02, radius: int = 2,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None):
        super().__init__()
        if not 0 < mask_fraction <= 0.25:
            raise TrainingError(f"mask_fraction must be in (0, 0.25], got {mask_fraction}")
        self.mask_fraction = float(mask_fraction)
        self.radius = int(radius)
        self.mean = mean
        self.std = std

    def _stats_kwargs(self) -> tuple[dict, dict]:
        if self.mean is None or self.std is None:
            raise TrainingError("Noise2VoidTask has no normalisation statistics yet: train it first "
                                "(Trainer.fit computes them from the training images) or pass mean= and std=")
        if isinstance(self.mean, (list, tuple)):
            mean = [float(v) for v in self.mean]
            std = [max(float(v), 1e-6) for v in self.std]  # type: ignore[union-attr]
            return ({"mean": mean, "std": std, "axis": "channel"},
                    {"gain": [s + self.eps for s in std], "offset": mean, "axis": "channel"})
        mean, std = float(self.mean), max(float(self.std), 1e-6)  # type: ignore[arg-type]
        return {"mean": mean, "std": std}, {"gain": std + self.eps, "offset": mean}

    def default_preprocessing(self) -> list[dict]:
        pre, _ = self._stats_kwargs()
        return [{"id": "fixed_zero_mean_unit_variance", "kwargs": pre}]

    def default_postprocessing(self) -> list[dict]:
        _, post = self._stats_kwargs()
        return [{"id": "scale_linear", "kwargs": post}]

    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def setup(self, images: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None) -> None:
        if self._pre_override is not None or (self.mean is not None and self.std is not None):
            return  # fixed by the caller or by a parent package
        c = images[0].shape[0]
        if c == 1:
            vals = np.concatenate([np.asarray(im, np.float64).ravel() for im in images])
            self.mean, self.std = float(vals.mean()), float(vals.std())
        else:
            vals = np.concatenate([np.asarray(im, np.float64).reshape(c, -1) for im in images], axis=1)
            self.mean = [float(v) for v in vals.mean(axis=1)]
            self.std = [float(v) for v in vals.std(axis=1)]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.mean, self.std = state.get("mean"), state.get("std")

    def make_batch(self, x: np.ndarray, t: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        masked, mask = n2v_mask(x, rng, fraction=self.mask_fraction, radius=self.radius)
        return {"input": masked, "target": x, "mask": mask.astype(np.float32)}

    def loss(self, output, batch: dict):
        mask = batch["mask"]
        sq = (output - batch["target"]) ** 2 * mask
        return sq.sum() / (mask.sum() * output.shape[1]).clamp_min(1.0)

    def primary_metric(self, has_targets: bool) -> tuple[str, str]:
        return ("psnr", "max") if has_targets else ("val_loss", "min")

    def evaluate(self, predict_fn: PredictFn, images: Sequence[np.ndarray],
                 targets: Sequence[np.ndarray] | None) -> dict[str, float]:
        if targets is None:
            # self-supervised: the blind-spot loss on masks that are the same at every evaluation
            rng = np.random.default_rng(20190101)
            total = count = 0.0
            for image in images:
                x = self.normalize(image)[None]
                masked, mask = n2v_mask(x, rng, fraction=self.mask_fraction, radius=self.radius)
                out = predict_fn(masked[0])
                m = mask[0, 0]
                total += float(((out - x[0]) ** 2)[:, m].sum())
                count += float(m.sum()) * out.shape[0]
            return {"val_loss": total / max(count, 1.0)}
        res: dict[str, list[float]] = {"psnr": [], "psnr_input": [], "ssim": [], "ssim_input": []}
        for image, clean in zip(images, targets):
            den = self.to_output(predict_fn(self.normalize(image)), image)
            clean = np.asarray(clean, np.float32)
            clean = clean[None] if clean.ndim == 2 else clean
            for ch in range(clean.shape[0]):
                rng_ = float(clean[ch].max() - clean[ch].min()) or 1.0
                res["psnr"].append(M.psnr(den[ch], clean[ch], data_range=rng_))
                res["psnr_input"].append(M.psnr(image[ch], clean[ch], data_range=rng_))
                res["ssim"].append(M.ssim(den[ch], clean[ch], data_range=rng_))
                res["ssim_input"].append(M.ssim(image[ch], clean[ch], data_range=rng_))
        out = {k: float(np.mean(v)) for k, v in res.items()}
        out["psnr_gain"] = out["psnr"] - out["psnr_input"]
        return out

    def describe(self) -> dict:
        return {"task": self.name, "mask_fraction": self.mask_fraction, "neighbour_radius": self.radius,
                "loss": "mean squared error on blind-spot pixels"}


def get_task(task: Any, **kwargs: Any) -> Task:
    """A task object from a Task or a name (``"segmentation"``, ``"n2v"``)."""
    if isinstance(task, Task):
        return task
    names = {"segmentation": SegmentationTask, "seg": SegmentationTask,
             "n2v": Noise2VoidTask, "noise2void": Noise2VoidTask}
    cls = names.get(str(task).lower())
    if cls is None:
        raise TrainingError(f"unknown task {task!r}: use 'segmentation' or 'n2v' (or a Task object)")
    return cls(**kwargs)
