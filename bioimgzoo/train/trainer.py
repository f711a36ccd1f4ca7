"""The trainer: fit an ``nn.Module`` on a task, measure it, checkpoint it, export it.

::

    from bioimgzoo.train import Trainer, SegmentationTask, UNet2d, synthetic_nuclei

    images, labels = synthetic_nuclei(24, seed=0)
    trainer = Trainer(UNet2d(1, 1), SegmentationTask(), patch_size=64, seed=0,
                      checkpoint_dir="ckpt")
    trainer.fit(images, labels, steps=600)
    trainer.save_loss_curve("loss.png")
    trainer.export("nuclei.zip", name="Nuclei U-Net", description="...", authors=[{"name": "Me"}])

:meth:`Trainer.export` hands the trainer to
:func:`bioimgzoo.train.export.export_trained`; the import goes one way only
(this module imports :mod:`.export`, never the reverse), and the exporter
reads the trainer through its public API: :attr:`~Trainer.val_images`,
:attr:`~Trainer.val_targets`, :attr:`~Trainer.split`,
:attr:`~Trainer.has_validation`, :attr:`~Trainer.config`,
:attr:`~Trainer.history`, :attr:`~Trainer.best`, :meth:`~Trainer.evaluate`
and :meth:`~Trainer.example_input`.

What a run does, step by step (all randomness comes from ``seed``):

1. Images are split into training and validation images (``val_fraction``;
   a single image is split along y instead).  The task learns what it needs
   from the training images (Noise2Void: normalisation statistics) and
   normalises every image with the preprocessing the package will declare.
2. Each step samples ``batch_size`` random patches (images weighted by
   area), augments them (the 8 flips/rotations; for segmentation also an
   intensity jitter and additive noise, in normalised units), builds the
   task's batch (Noise2Void: blind-spot masking) and takes one Adam step.
3. Every ``eval_every`` steps (and at the end) the whole validation images
   are predicted and measured; the best weights by the task's primary metric
   are kept, and training stops early after ``patience`` evaluations without
   improvement.  The best weights are restored at the end.
4. Every ``checkpoint_every`` steps (and at the end) ``last.pt`` in
   ``checkpoint_dir`` is written atomically: weights, optimiser, step, random
   generator states, task state, history, best weights.  ``fit(...,
   resume=True)`` continues from it exactly: training 2N steps straight gives
   the same weights as N steps, then resuming up to 2N (with the same
   settings and data, on the same device, and N a multiple of
   ``eval_every``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._files import atomic_path
from ..errors import TrainingError
from .export import export_trained
from .tasks import Task, get_task

__all__ = ["Trainer", "FitResult", "CHECKPOINT_NAME"]

log = logging.getLogger("bioimgzoo.train")

#: file name of the checkpoint inside ``checkpoint_dir``
CHECKPOINT_NAME = "last.pt"
_CKPT_FORMAT = "bioimgzoo-train-checkpoint/1"


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did."""

    #: optimisation steps done in total (including those before a resume)
    steps: int
    #: step whose weights the module holds now (the best validated; the last without validation)
    best_step: int
    #: validation metrics of those weights ({} without validation)
    metrics: dict[str, float]
    #: True when early stopping ended the run before ``steps``
    stopped_early: bool
    #: wall-clock seconds of this call
    seconds: float
    #: the checkpoint written, if any
    checkpoint: Path | None = None
    #: primary metric name and mode
    primary_metric: tuple[str, str] | None = None
    history: dict = field(default_factory=dict, repr=False)


def _resolve_device(device: Any):
    import torch

    from ..runtime.devices import resolve_device

    if str(device).lower() == "mps":  # Apple GPUs train, though no engine predicts on them
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise TrainingError(f"device {device!r} asked for, but MPS is not available: use device='cpu'")
        return torch.device("mps")
    return torch.device(resolve_device(device, "pytorch_state_dict", error=TrainingError))


def _first_conv_in_channels(module) -> int | None:
    for p in module.parameters():
        if p.ndim == 4:
            return int(p.shape[1])
    return None


def _as_images(images: Any, in_channels: int, what: str) -> list[np.ndarray]:
    """Images as a list of float32 (channel, y, x) arrays."""
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, (list, tuple)):
        arr = np.asarray(images)
        if arr.ndim == 2:
            items = [arr]
        elif arr.ndim == 3:
            items = [arr] if (in_channels > 1 and arr.shape[0] == in_channels) else list(arr)
        elif arr.ndim == 4:
            items = list(arr)
        else:
            raise TrainingError(f"{what} must be 2D (y, x), 3D (n, y, x) or 4D (n, c, y, x) arrays, "
                                f"got shape {arr.shape}")
    else:
        items = list(images)
    out = []
    for i, im in enumerate(items):
        a = np.asarray(im)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise TrainingError(f"{what}[{i}] has shape {a.shape}: pass 2D (y, x) or (channel, y, x) images")
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            raise TrainingError(f"{what}[{i}] has dtype {a.dtype}: pass numeric images")
        out.append(a.astype(np.float32, copy=False))
    if not out:
        raise TrainingError(f"no {what} given: pass at least one image")
    return out


def _as_targets(targets: Any, what: str) -> list[np.ndarray] | None:
    """Targets as a list of arrays: (y, x) -> one, (n, y, x) / (n, k, y, x) -> n, list -> as is."""
    if targets is None:
        return None
    if isinstance(targets, (list, tuple)):
        return [np.asarray(t) for t in targets]
    arr = np.asarray(targets)
    if arr.ndim == 2:
        return [arr]
    if arr.ndim in (3, 4):
        return list(arr)
    raise TrainingError(f"{what} must be 2D (y, x), 3D (n, y, x) or a list of arrays, got shape {arr.shape}")


def _pad_to_at_least(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Mirror-pad a (c, y, x) array so it is at least h x w."""
    while a.shape[1] < h or a.shape[2] < w:
        py = min(max(h - a.shape[1], 0), a.shape[1])
        px = min(max(w - a.shape[2], 0), a.shape[2])
        a = np.pad(a, ((0, 0), (0, py), (0, px)), mode="symmetric")
    return a


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the (..., y, x) array a."""
    if k >= 4:
        a = a[..., ::-1]
    return np.rot90(a, k % 4, axes=(-2, -1))


class Trainer:
    """Train a network for a task; measure, checkpoint and export it.

    Parameters
    ----------
    module : torch.nn.Module
        The network (e.g. :class:`~bioimgzoo.train.nets.UNet2d`); its output
        channels must be ``task.out_channels(in_channels)``.
    task : Task or str
        :class:`~bioimgzoo.train.tasks.SegmentationTask`,
        :class:`~bioimgzoo.train.tasks.Noise2VoidTask`, ``"segmentation"`` or ``"n2v"``.
    patch_size : int or (int, int)
        Training patch height/width; multiples of the network's size divisor.
    batch_size : int
        Patches per step.
    lr, weight_decay : float
        Adam's learning rate and weight decay.
    val_fraction : float
        Fraction of the images held out for validation (0: no validation).
    seed : int
        Seeds the split, patch sampling, augmentation, masking and torch.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Where to train; "auto" picks CUDA when available.
    checkpoint_dir : path, optional
        Where ``last.pt`` is written; needed for ``resume=True``.
    checkpoint_every, eval_every : int
        Steps between checkpoints / validations.
    patience : int, optional
        Stop after this many validations without improvement.
    augment : bool or dict
        ``True``: the task's default augmentations; ``False``: none; a dict
        ``{"flips": bool, "intensity": bool, "noise": bool}`` to choose.
    progress : bool
        Show a progress bar with loss and validation metric.
    size_divisor : int, optional
        Input height/width multiple the network needs (default: the module's
        ``size_divisor`` attribute, else 16).
    tile : int
        Validation/prediction images larger than this are predicted in tiles.
    in_channels : int, optional
        Input channels (default: read from the module's first convolution).
    """

    def __init__(self, module, task: Task | str, *, patch_size: int | Sequence[int] = 64, batch_size: int = 8,
                 lr: float = 1e-3, weight_decay: float = 0.0, val_fraction: float = 0.2, seed: int = 0,
                 device: Any = "auto", checkpoint_dir: str | os.PathLike | None = None,
                 checkpoint_every: int = 100, eval_every: int = 100, patience: int | None = None,
                 augment: bool | Mapping[str, bool] = True, progress: bool = True,
                 size_divisor: int | None = None, tile: int = 512, in_channels: int | None = None):
        import torch

        if not isinstance(module, torch.nn.Module):
            raise TrainingError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.task = get_task(task)
        ps = (int(patch_size), int(patch_size)) if np.isscalar(patch_size) else tuple(int(p) for p in patch_size)
        if len(ps) != 2:
            raise TrainingError(f"patch_size must be an int or (height, width), got {patch_size!r}")
        self.size_divisor = int(size_divisor or getattr(module, "size_divisor", 16) or 16)
        if any(p < self.size_divisor or p % self.size_divisor for p in ps):
            raise TrainingError(f"patch_size {ps} must be a multiple of {self.size_divisor} "
                                "(the network halves the image that many times)")
        self.patch_size: tuple[int, int] = ps  # type: ignore[assignment]
        if batch_size < 1:
            raise TrainingError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= val_fraction < 1:
            raise TrainingError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if lr <= 0:
            raise TrainingError(f"lr must be > 0, got {lr}")
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.device = _resolve_device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.eval_every = max(1, int(eval_every))
        self.patience = None if patience is None else max(1, int(patience))
        if augment is True:
            self.augment = dict(self.task.default_augment)
        elif augment is False or augment is None:
            self.augment = {"flips": False, "intensity": False, "noise": False}
        else:
            unknown = set(augment) - {"flips", "intensity", "noise"}
            if unknown:
                raise TrainingError(f"unknown augmentations {sorted(unknown)}: use flips, intensity, noise")
            self.augment = {"flips": False, "intensity": False, "noise": False, **dict(augment)}
        self.progress = bool(progress)
        self.tile = max(int(tile), self.size_divisor)
        self.in_channels = int(in_channels or _first_conv_in_channels(module) or 1)

        self.history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val": []}
        #: seconds spent in training steps, over all runs of this training (resumes included)
        self.train_seconds = 0.0
        self.step = 0
        self.best: dict[str, Any] = {"value": None, "step": 0, "metrics": {}, "state": None}
        self._bad_evals = 0
        self._optimizer = None
        self._rng: np.random.Generator | None = None
        self._train: list[np.ndarray] = []
        self._train_t: list[np.ndarray] | None = None
        self._val: list[np.ndarray] = []
        self._val_t: list[np.ndarray] | None = None
        self._split: dict[str, Any] = {}
        self._data_ready = False

    # ------------------------------------------------------------------------------------------
    # what the run holds, for export and reports (read-only views)

    @property
    def val_images(self) -> list[np.ndarray]:
        """The raw (unnormalised) validation images, (channel, y, x) float32; [] before the data are set."""
        return list(self._val)

    @property
    def val_targets(self) -> list[np.ndarray] | None:
        """The validation targets (label or clean images), or None."""
        return list(self._val_t) if self._val_t is not None else None

    @property
    def has_validation(self) -> bool:
        """True when the data are set and hold validation images."""
        return bool(self._val)

    @property
    def split(self) -> dict[str, Any]:
        """How the validation data were chosen: ``{"n", "mode", "val", ...}``.

        ``mode``: ``"images"`` (``val`` lists the held-out image indices),
        ``"rows"`` (one image; ``val`` holds the first validation row),
        ``"given"`` (``val_images=`` was passed) or ``"none"``.
        """
        return dict(self._split)

    @property
    def config(self) -> dict[str, Any]:
        """The run's settings (JSON-able): what a checkpoint records and a model card reports."""
        return {"patch_size": list(self.patch_size), "batch_size": self.batch_size, "lr": self.lr,
                "seed": self.seed, "task": self.task.name, "augment": dict(self.augment),
                "weight_decay": self.weight_decay, "optimizer": "torch.optim.Adam",
                "learning_rate_schedule": "constant"}

    # ------------------------------------------------------------------------------------------
    # data

    def prepare(self, images: Any, targets: Any = None, *, val_images: Any = None, val_targets: Any = None) -> None:
        """Split and normalise the data as :meth:`fit` does, without training.

        Lets :meth:`evaluate` measure a network before training it (e.g. a
        parent model before fine-tuning); :meth:`fit` calls it itself.
        """
        self._set_data(images, targets, val_images, val_targets)

    def _set_data(self, images: Any, targets: Any, val_images: Any, val_targets: Any) -> None:
        imgs = _as_images(images, self.in_channels, "images")
        for i, im in enumerate(imgs):
            if im.shape[0] != self.in_channels:
                raise TrainingError(f"images[{i}] has {im.shape[0]} channel(s) but the network expects "
                                    f"{self.in_channels}")
        tgts = _as_targets(targets, "targets")
        if tgts is not None:
            if len(tgts) != len(imgs):
                raise TrainingError(f"{len(imgs)} images but {len(tgts)} targets: give one target per image")
            for i, (im, t) in enumerate(zip(imgs, tgts)):
                if t.shape[-2:] != im.shape[-2:]:
                    raise TrainingError(f"targets[{i}] is {t.shape[-2:]} but images[{i}] is {im.shape[-2:]}: "
                                        "a target must have its image's height and width")
        if self.task.trains_on_targets and tgts is None:
            raise TrainingError(f"the {self.task.name} task trains on targets: pass label images as targets")

        if val_images is not None:
            train_imgs, train_t = imgs, tgts
            val_imgs = _as_images(val_images, self.in_channels, "val_images")
            val_t = None
            if val_targets is not None:
                val_t = _as_targets(val_targets, "val_targets")
                if len(val_t) != len(val_imgs):
                    raise TrainingError(f"{len(val_imgs)} validation images but {len(val_t)} validation targets")
            split = {"n": len(imgs), "mode": "given", "val": [], "n_val_given": len(val_imgs)}
        elif self.val_fraction == 0:
            train_imgs, train_t, val_imgs, val_t = imgs, tgts, [], None
            split = {"n": len(imgs), "mode": "none", "val": []}
        elif len(imgs) >= 2:
            order = np.random.default_rng(self.seed).permutation(len(imgs))
            n_val = min(max(1, int(round(len(imgs) * self.val_fraction))), len(imgs) - 1)
            val_idx = sorted(int(i) for i in order[:n_val])
            train_idx = sorted(int(i) for i in order[n_val:])
            train_imgs = [imgs[i] for i in train_idx]
            val_imgs = [imgs[i] for i in val_idx]
            train_t = [tgts[i] for i in train_idx] if tgts is not None else None
            val_t = [tgts[i] for i in val_idx] if tgts is not None else None
            split = {"n": len(imgs), "mode": "images", "val": val_idx}
        else:  # one image: the last val_fraction of its rows validate
            im = imgs[0]
            h = im.shape[1]
            cut = int(round(h * (1 - self.val_fraction)))
            cut -= cut % self.size_divisor
            if cut < self.patch_size[0] or h - cut < self.size_divisor:
                raise TrainingError(f"one image of height {h} is too small to split into training and validation "
                                    f"parts with patch size {self.patch_size}: give more images, a smaller patch "
                                    "size, or val_fraction=0")
            train_imgs, val_imgs = [im[:, :cut]], [im[:, cut:]]
            train_t = [tgts[0][..., :cut, :]] if tgts is not None else None
            val_t = [tgts[0][..., cut:, :]] if tgts is not None else None
            split = {"n": 1, "mode": "rows", "val": [cut]}

        self.task.setup(train_imgs, train_t)
        ph, pw = self.patch_size
        self._train = [_pad_to_at_least(self.task.normalize(im), ph, pw) for im in train_imgs]
        self._train_t = None
        if self.task.trains_on_targets and train_t is not None:
            self._train_t = [_pad_to_at_least(self.task.prepare_target(t, im), ph, pw)
                             for t, im in zip(train_t, train_imgs)]
        self._val, self._val_t = val_imgs, val_t
        areas = np.array([a.shape[1] * a.shape[2] for a in self._train], np.float64)
        self._weights = areas / areas.sum()
        self._split = split
        self._data_ready = True

    def steps_per_epoch(self) -> int:
        """Steps that sample as many pixels as the training images hold (after :meth:`fit` set the data)."""
        if not self._data_ready:
            raise TrainingError("no training data yet: call fit() first")
        pixels = sum(a.shape[1] * a.shape[2] for a in self._train)
        return max(1, math.ceil(pixels / (self.batch_size * self.patch_size[0] * self.patch_size[1])))

    def _sample_batch(self) -> dict[str, np.ndarray]:
        rng = self._rng
        assert rng is not None
        ph, pw = self.patch_size
        c = self._train[0].shape[0]
        xs = np.empty((self.batch_size, c, ph, pw), np.float32)
        ts = None
        if self._train_t is not None:
            ts = np.empty((self.batch_size, self._train_t[0].shape[0], ph, pw), np.float32)
        picks = rng.choice(len(self._train), size=self.batch_size, p=self._weights)
        for b, i in enumerate(picks):
            img = self._train[i]
            y0 = int(rng.integers(0, img.shape[1] - ph + 1))
            x0 = int(rng.integers(0, img.shape[2] - pw + 1))
            xp = img[:, y0:y0 + ph, x0:x0 + pw]
            tp = self._train_t[i][:, y0:y0 + ph, x0:x0 + pw] if ts is not None else None
            if self.augment["flips"]:
                k = int(rng.integers(0, 8))
                if ph != pw and k % 2:  # a 90° rotation would change a non-square patch's shape
                    k -= 1
                xp = _dihedral(xp, k)
                tp = _dihedral(tp, k) if tp is not None else None
            if self.augment["intensity"]:
                xp = xp * rng.uniform(0.75, 1.25) + rng.uniform(-0.25, 0.25)
            if self.augment["noise"] and rng.random() < 0.5:
                xp = xp + rng.normal(0.0, rng.uniform(0.0, 0.2), xp.shape).astype(np.float32)
            xs[b] = xp
            if ts is not None:
                ts[b] = tp
        return self.task.make_batch(xs, ts, rng)

    # ------------------------------------------------------------------------------------------
    # prediction

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """Raw network output for one normalised (c, y, x) array whose sides are multiples of the divisor."""
        import torch

        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x[None])).to(self.device)
            return self.module(t)[0].float().cpu().numpy()

    def predict_raw(self, x: np.ndarray, *, halo: int = 32) -> np.ndarray:
        """Raw network output for a normalised (c, y, x) image of any size (padded; tiled when large).

        Images with a side over :attr:`tile` are cut by the runtime's tile plan
        (:func:`bioimgzoo.runtime.plan.plan_tiles`): windows of ``tile``
        aligned to the size divisor, ``halo`` pixels of context discarded at
        inner window edges, each output pixel from exactly one window.
        """
        from ..runtime.plan import plan_tiles

        d = self.size_divisor
        c, h, w = x.shape
        H, W = -(-h // d) * d, -(-w // d) * d
        xp = _pad_to_at_least(x, H, W)[:, :H, :W] if (H, W) != (h, w) else x
        T = self.tile - self.tile % d
        halo = max(0, min(halo, (T - d) // 2))
        tiles = plan_tiles({"y": H, "x": W}, {"y": min(T, H), "x": min(T, W)},
                           halo={"y": halo, "x": halo}, align={"y": d, "x": d})
        was_training = self.module.training
        self.module.eval()
        try:
            out = None
            for tile in tiles:
                wy, wx = tile.windows["y"], tile.windows["x"]
                o = self._forward(xp[:, wy.start:wy.stop, wx.start:wx.stop])
                if out is None:
                    out = np.empty((o.shape[0], H, W), np.float32)
                out[:, wy.inner_start:wy.inner_stop, wx.inner_start:wx.inner_stop] = \
                    o[:, wy.inner_start - wy.start:wy.inner_stop - wy.start,
                      wx.inner_start - wx.start:wx.inner_stop - wx.start]
        finally:
            self.module.train(was_training)
        return out[:, :h, :w]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """What the exported package would return for one raw image: (k, y, x), postprocessed."""
        im = _as_images([image], self.in_channels, "image")[0]
        return self.task.to_output(self.predict_raw(self.task.normalize(im)), im)

    # ------------------------------------------------------------------------------------------
    # validation

    def evaluate(self, images: Any = None, targets: Any = None) -> dict[str, float]:
        """Metrics of the current weights on ``images`` (default: the validation split)."""
        if images is None:
            if not self._data_ready:
                raise TrainingError("nothing to evaluate: call fit() first or pass images")
            if not self._val:
                raise TrainingError("no validation images (val_fraction=0): pass images to evaluate")
            imgs, tgts = self._val, self._val_t
        else:
            imgs = _as_images(images, self.in_channels, "images")
            tgts = _as_targets(targets, "targets")
        self.module.to(self.device)
        return {k: float(v) for k, v in self.task.evaluate(self.predict_raw, imgs, tgts).items()}

    @property
    def primary_metric(self) -> tuple[str, str]:
        """(name, "max"/"min") of the metric that picks the best weights."""
        return self.task.primary_metric(self._val_t is not None)

    def _better(self, value: float) -> bool:
        best = self.best["value"]
        if best is None:
            return True
        return value > best if self.primary_metric[1] == "max" else value < best

    # ------------------------------------------------------------------------------------------
    # checkpoints

    def _state_copy(self) -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / last.pt`` (None without checkpoint_dir)."""
        return self.checkpoint_dir / CHECKPOINT_NAME if self.checkpoint_dir is not None else None

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write the full training state (atomically) and return its path."""
        import torch

        path = Path(path) if path is not None else self.checkpoint_path()
        if path is None:
            raise TrainingError("no checkpoint_dir given: pass checkpoint_dir= to the Trainer")
        state = {
            "format": _CKPT_FORMAT,
            "step": self.step,
            "model": self._state_copy(),
            "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
            "numpy_rng": self._rng.bit_generator.state if self._rng is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "task": self.task.state_dict(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "best": {k: v for k, v in self.best.items()},
            "bad_evals": self._bad_evals,
            "split": self._split,
            "config": self.config,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def _load_checkpoint(self, path: Path) -> None:
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle/zip errors of a corrupt or foreign file
            raise TrainingError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}): "
                                "delete it and train without resume") from e
        if not isinstance(state, dict) or state.get("format") != _CKPT_FORMAT:
            raise TrainingError(f"{path} is not a bioimgzoo training checkpoint: delete it or pick another "
                                "checkpoint_dir")
        cfg = state.get("config", {})
        if cfg.get("task") != self.task.name:
            raise TrainingError(f"checkpoint {path} is from a {cfg.get('task')!r} run, not {self.task.name!r}: "
                                "use another checkpoint_dir")
        mine = {"patch_size": list(self.patch_size), "batch_size": self.batch_size, "seed": self.seed}
        changed = [k for k, v in mine.items() if cfg.get(k) != v]
        if changed:
            log.warning("resuming with other settings than the checkpoint (%s): the run will not repeat "
                        "an uninterrupted one exactly", ", ".join(changed))
        if state.get("split") != self._split:
            raise TrainingError(f"checkpoint {path} was trained on other images (or another validation split): "
                                "resume with the same images and settings, or train without resume")
        try:
            self.module.load_state_dict(state["model"])
        except RuntimeError as e:
            raise TrainingError(f"checkpoint {path} does not fit this network ({str(e).splitlines()[0]}): "
                                "resume with the same architecture, or use another checkpoint_dir") from e
        self.module.to(self.device)
        self._make_optimizer()
        if state.get("optimizer") is not None:
            self._optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.task.load_state_dict(state["task"])
        self.history = state["history"]
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best = state["best"]
        self._bad_evals = int(state.get("bad_evals", 0))
        self._rng = np.random.default_rng()
        if state.get("numpy_rng") is not None:
            self._rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _make_optimizer(self) -> None:
        import torch

        self._optimizer = torch.optim.Adam(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------------------------------
    # training

    def fit(self, images: Any, targets: Any = None, *, steps: int | None = None, epochs: float | None = None,
            resume: bool = False, val_images: Any = None, val_targets: Any = None) -> FitResult:
        """Train until ``steps`` (or ``epochs``) in total, or until early stopping.

        Parameters
        ----------
        images : array or list of arrays
            Raw images: (y, x), (n, y, x), (n, c, y, x) or a list of
            (y, x) / (c, y, x) arrays of any sizes.
        targets : array or list of arrays, optional
            Segmentation: label images (needed).  Noise2Void: clean images,
            used for validation metrics only.
        steps : int
            Total optimisation steps of the run; with ``resume=True``
            training continues from the checkpoint's step up to this number.
        epochs : float
            Alternative to ``steps``: passes over the training pixels.
        resume : bool
            Continue from ``checkpoint_dir/last.pt``.
        val_images, val_targets : optional
            Explicit validation data instead of a split of ``images``.
        """
        import torch

        if (steps is None) == (epochs is None):
            raise TrainingError("give exactly one of steps= or epochs=")
        t_start = time.perf_counter()
        self._set_data(images, targets, val_images, val_targets)
        total = int(steps) if steps is not None else int(math.ceil(float(epochs) * self.steps_per_epoch()))
        if total < 1:
            raise TrainingError(f"steps must be >= 1, got {total}")

        out_ch = self.task.out_channels(self.in_channels)
        self.module.to(self.device)
        self._begin_run(resume)
        has_val = bool(self._val)
        stopped_early = False
        start_step = self.step
        metric_name, _ = self.primary_metric

        bar, bar_task = self._progress_bar(total) if self.progress and self.step < total else (None, None)
        try:
            self.module.train()
            checked_channels = False
            while self.step < total and not stopped_early:
                t_step = time.perf_counter()
                batch = self._sample_batch()
                tb = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                      for k, v in batch.items() if v is not None}
                output = self.module(tb["input"])
                if not checked_channels:
                    if output.ndim != 4 or output.shape[1] != out_ch:
                        raise TrainingError(
                            f"the network returns shape {tuple(output.shape)}, but the {self.task.name} task needs "
                            f"{out_ch} output channel(s) in (batch, channel, y, x): build it with "
                            f"out_channels={out_ch}")
                    checked_channels = True
                loss = self.task.loss(output, tb)
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {loss.item()} at step {self.step + 1}: lower the learning "
                                        f"rate (lr={self.lr}) or check the images for NaN/inf values")
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._optimizer.step()
                self.step += 1
                self.train_seconds += time.perf_counter() - t_step
                self.history["step"].append(self.step)
                self.history["loss"].append(float(loss.item()))
                if has_val and (self.step % self.eval_every == 0 or self.step == total):
                    stopped_early = self._validate(total)
                    self.module.train()
                    if bar is not None:
                        v = self.history["val"][-1][metric_name]
                        bar.update(bar_task, metric=f"val {metric_name} {v:.4g}")
                if self.checkpoint_dir is not None and (self.step % self.checkpoint_every == 0
                                                        or self.step == total or stopped_early):
                    self.save_checkpoint()
                if bar is not None:
                    bar.update(bar_task, completed=self.step, loss=f"{self.history['loss'][-1]:.4g}")
        finally:
            if bar is not None:
                bar.stop()
        self.module.eval()

        if has_val and self.best["state"] is not None:
            self.module.load_state_dict(self.best["state"])
            best_step, best_metrics = int(self.best["step"]), dict(self.best["metrics"])
        else:
            best_step, best_metrics = self.step, {}
        seconds = time.perf_counter() - t_start
        if start_step < self.step:
            log.info("trained steps %d-%d in %.1f s", start_step + 1, self.step, seconds)
        return FitResult(steps=self.step, best_step=best_step, metrics=best_metrics, stopped_early=stopped_early,
                         seconds=seconds, checkpoint=self.checkpoint_path() if self.checkpoint_dir else None,
                         primary_metric=self.primary_metric if has_val else None, history=self.history)

    def _begin_run(self, resume: bool) -> None:
        """Load the checkpoint (``resume``) or reset the run: seeds, optimiser, step, history, best."""
        import torch

        if resume:
            path = self.checkpoint_path()
            if path is None:
                raise TrainingError("resume=True needs checkpoint_dir: pass the folder the first run wrote to")
            if not path.is_file():
                raise TrainingError(f"no checkpoint {path} to resume from: run without resume first")
            self._load_checkpoint(path)
            log.info("resumed from %s at step %d", path, self.step)
            return
        torch.manual_seed(self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._make_optimizer()
        self.step = 0
        self.history = {"step": [], "loss": [], "val_step": [], "val": []}
        self.train_seconds = 0.0
        self.best = {"value": None, "step": 0, "metrics": {}, "state": None}
        self._bad_evals = 0

    def _progress_bar(self, total: int):
        """A started rich progress bar (loss, validation metric) and its task id."""
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn(f"[bold]train {self.task.name}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[metric]}"),
                       TimeElapsedColumn(), TimeRemainingColumn())
        bar_task = bar.add_task("train", total=total, completed=self.step, loss="-", metric="")
        bar.start()
        return bar, bar_task

    def _validate(self, total: int) -> bool:
        """Measure, keep the best weights; True when early stopping should end the run."""
        metrics = self.evaluate()
        self.history["val_step"].append(self.step)
        self.history["val"].append(metrics)
        name, _ = self.primary_metric
        value = metrics[name]
        if self._better(value):
            self.best = {"value": value, "step": self.step, "metrics": metrics, "state": self._state_copy()}
            self._bad_evals = 0
        else:
            self._bad_evals += 1
        if self.patience is not None and self._bad_evals >= self.patience and self.step < total:
            log.info("early stopping at step %d: no better %s for %d validations", self.step, name, self._bad_evals)
            return True
        return False

    # ------------------------------------------------------------------------------------------
    # reporting

    def save_loss_curve(self, path: str | os.PathLike) -> Path:
        """Write a PNG of the training loss (raw and smoothed) and the validation metric."""
        from .plot import line_plot_png

        steps = np.asarray(self.history["step"], float)
        loss = np.asarray(self.history["loss"], float)
        if loss.size == 0:
            raise TrainingError("no training history yet: call fit() before save_loss_curve()")
        smooth = np.empty_like(loss)
        acc, alpha = loss[0], 2.0 / (min(50, max(len(loss) // 10, 1)) + 1)
        for i, v in enumerate(loss):  # exponential moving average: no lag artefacts at the ends
            acc = alpha * v + (1 - alpha) * acc
            smooth[i] = acc
        panels = [{"title": f"Training loss ({self.task.name})", "xlabel": "step", "log_y": bool((loss > 0).all()),
                   "series": [("loss", steps, loss, (170, 195, 235)), ("smoothed", steps, smooth, (30, 80, 200))]}]
        if self.history["val"]:
            name, mode = self.primary_metric
            vs = np.asarray(self.history["val_step"], float)
            vv = np.asarray([m.get(name, np.nan) for m in self.history["val"]], float)
            panels.append({"title": f"Validation {name} ({'higher' if mode == 'max' else 'lower'} is better)",
                           "xlabel": "step", "series": [(name, vs, vv, (200, 70, 30))]})
        path = Path(path)
        line_plot_png(path, panels)
        return path

    def example_input(self, size: int = 256) -> np.ndarray:
        """A raw (1, c, y, x) float32 validation (or training) crop whose sides are multiples of the divisor."""
        src = self._val[0] if self._val else None
        if src is None:
            raise TrainingError("no validation image for the package's test input: call fit() with validation "
                                "data, or pass example_input= to export()")
        d = self.size_divisor
        h = min(size, src.shape[1]) // d * d
        w = min(size, src.shape[2]) // d * d
        if h < d or w < d:
            raise TrainingError(f"validation images are smaller than {d} pixels: pass example_input= to export()")
        return np.ascontiguousarray(src[None, :, :h, :w], np.float32)

    def export(self, out: str | os.PathLike, *, name: str | None = None, description: str | None = None,
               authors: Any = None, card: Any = None, metrics: Mapping[str, float] | None = None,
               example_input: np.ndarray | None = None,
               license: str | None = None, validation_data: str | None = None, **overrides: Any) -> Path:
        """Export the trained network as a zoo package, with its measured validation metrics.

        ``name``, ``description`` and ``authors`` may come from the ``card``
        instead; ``license`` defaults to the card's, else CC-BY-4.0.  The
        task's pre/post-processing is declared; ``metrics`` (default:
        :meth:`evaluate` on the validation images now) are merged into the
        card's ``validation`` section.  Other keyword arguments go to
        :func:`bioimgzoo.exporter.export_model`.

        Returns
        -------
        Path
            The written package (``.zip`` or folder, as ``out`` says).
        """
        return export_trained(self, out, name=name, description=description, authors=authors, card=card,
                              metrics=metrics, example_input=example_input, license=license,
                              validation_data=validation_data, **overrides)
