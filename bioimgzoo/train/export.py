"""Hand a trained network to the exporter with its task's processing and measured metrics.

:meth:`Trainer.export <bioimgzoo.train.trainer.Trainer.export>` calls
:func:`export_trained`; :func:`bioimgzoo.train.finetune.finetune` too, with
the parent package named in the card.  This module does not import the
trainer (the trainer imports it): it reads a trainer only through the public
API that :class:`TrainedRun` names.  The card's ``validation`` section is
merged: metrics measured now replace rows of the same name (keeping the
card's descriptions), other rows stay; the ``training`` section gets the run's
settings (steps, patch size, batch size, learning rate, optimiser, loss,
augmentations, time) unless the card states them as text.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from ..errors import TrainingError

__all__ = ["export_trained", "metric_rows", "merge_validation", "TrainedRun"]


class TrainedRun(Protocol):
    """What :func:`export_trained` reads of a trainer (:class:`~bioimgzoo.train.trainer.Trainer` has it all)."""

    module: Any  #: the torch.nn.Module to export
    task: Any  #: the :class:`~bioimgzoo.train.tasks.Task` (processing, loss description)
    step: int  #: optimisation steps done
    best: dict  #: ``{"value", "step", "metrics", "state"}`` of the best validated weights
    train_seconds: float
    in_channels: int

    @property
    def config(self) -> dict: ...  # noqa: E704

    @property
    def has_validation(self) -> bool: ...  # noqa: E704

    @property
    def val_images(self) -> list: ...  # noqa: E704

    @property
    def split(self) -> dict: ...  # noqa: E704

    def evaluate(self) -> dict: ...  # noqa: E704

    def example_input(self) -> np.ndarray: ...  # noqa: E704

_DESCRIPTIONS = {
    "iou": "foreground IoU (probability > 0.5), pooled over the validation pixels",
    "dice": "foreground Dice coefficient, pooled over the validation pixels",
    "instance_f1": "F1 of instances matched at IoU >= 0.5 (instances: connected components of the "
                   "thresholded probability, split by the boundary channel when present)",
    "instance_precision": "instance precision at IoU >= 0.5",
    "instance_recall": "instance recall at IoU >= 0.5",
    "psnr": "PSNR (dB) of the denoised images against the clean images (range of the clean image)",
    "psnr_input": "PSNR (dB) of the noisy inputs against the clean images",
    "psnr_gain": "PSNR improvement (dB) over the noisy input",
    "ssim": "SSIM of the denoised images against the clean images",
    "ssim_input": "SSIM of the noisy inputs against the clean images",
    "val_loss": "self-supervised blind-spot loss on the validation images (normalised units)",
}


def metric_rows(metrics: Mapping[str, float], *, digits: int = 4) -> list[dict]:
    """``{name: value}`` -> card rows ``{name, value, description}`` with rounded values."""
    rows = []
    for k, v in metrics.items():
        value = round(float(v), digits) if isinstance(v, (int, float, np.floating)) else v
        row = {"name": str(k), "value": value}
        if k in _DESCRIPTIONS:
            row["description"] = _DESCRIPTIONS[k]
        rows.append(row)
    return rows


def merge_validation(section: Any, metrics: Mapping[str, float], *, dataset: str | None = None,
                     description: str | None = None) -> dict:
    """A card ``validation`` section with ``metrics`` merged in by name (measured values win)."""
    from ..exporter.card import normalise_metrics

    val = dict(section or {})
    old = normalise_metrics(val.get("metrics"))
    new = {r["name"]: r for r in metric_rows(metrics)}
    rows = []
    for r in old:
        if r["name"] in new:
            merged = {**r, **{k: v for k, v in new.pop(r["name"]).items() if k != "description" or
                              not r.get("description")}}
            rows.append(merged)
        else:
            rows.append(r)
    rows.extend(new.values())
    val["metrics"] = rows
    if dataset:
        val["dataset"] = dataset
    if description:
        val["description"] = description
    return val


def _training_section(trainer: TrainedRun, card_training: Any) -> Any:
    cfg = trainer.config
    details = {
        "task": cfg["task"],
        "training_steps": trainer.step,
        "best_step": int(trainer.best.get("step") or trainer.step),
        "patch_size": list(cfg["patch_size"]),  # pixels (the README shows the unit)
        "training_batch_size": cfg["batch_size"],
        "initial_learning_rate": cfg["lr"],
        "learning_rate_schedule": cfg["learning_rate_schedule"],
        "optimizer": cfg["optimizer"],
        "loss_function": trainer.task.describe().get("loss", ""),
        "augmentation": ", ".join(k for k, on in cfg["augment"].items() if on) or "none",
        "seed": cfg["seed"],
    }
    if cfg.get("weight_decay"):
        details["regularization"] = f"weight decay {cfg['weight_decay']}"
    seconds = getattr(trainer, "train_seconds", None)
    if seconds:  # the spec's field is in hours; the README shows the unit (card.py)
        details["training_duration"] = round(seconds / 3600.0, 6)
    if isinstance(card_training, Mapping):
        return {**details, **dict(card_training)}
    if card_training:
        return card_training  # free text written by the authors: keep it as is
    return details


def _default_channel_names(trainer: TrainedRun, output_id: str = "output") -> dict:
    task = trainer.task
    names: dict[str, list[str]] = {}
    if task.name == "segmentation":
        names[output_id] = ["foreground", "boundary"][:task.out_channels(trainer.in_channels)]
    return names


#: the trainer's task -> the card's ``task`` (it also sets the workflow tag BiaPy needs)
_CARD_TASKS = {"segmentation": "semantic-segmentation", "n2v": "denoising"}


def export_trained(trainer: TrainedRun, out: str | os.PathLike, *, name: str | None = None,
                   description: str | None = None, authors: Any = None,
                   card: Any = None, metrics: Mapping[str, float] | None = None,
                   example_input: np.ndarray | None = None, license: str | None = None,
                   validation_data: str | None = None, training: Any = None, **overrides: Any) -> Path:
    """Export ``trainer.module`` with the task's processing and measured validation metrics.

    Parameters
    ----------
    trainer : Trainer (or anything with the :class:`TrainedRun` API)
        A trainer after :meth:`~bioimgzoo.train.trainer.Trainer.fit`.
    out : path
        The ``.zip`` to write.
    card : path or dict, optional
        Model card (``model_cards/*.yaml``); its validation/training sections are merged.
    metrics : dict, optional
        Validation metrics to publish; default: measured now on the validation images.
    validation_data : str, optional
        One line describing the validation images (default: how they were split off).
    training : dict or str, optional
        Extra training details for the card (e.g. the parent of a fine-tuned model).
    **overrides
        Passed to :func:`bioimgzoo.exporter.export_model` (``id``, ``tags``, ``test``, ...).
    """
    from ..exporter import export_model
    from ..exporter.card import load_card
    from .nets import UNet2d

    if trainer.step == 0:
        raise TrainingError("the network has not been trained: call fit() before export()")
    if metrics is None:
        metrics = trainer.evaluate() if trainer.has_validation else {}
    card_data, base = load_card(card)
    card_data = copy.deepcopy(card_data)
    n_val = len(trainer.val_images)
    if validation_data is None and n_val:
        split = trainer.split.get("mode")
        validation_data = (f"{n_val} held-out image(s) not used for training" if split != "rows"
                           else "the held-out bottom rows of the training image")
    if metrics:
        card_data["validation"] = merge_validation(
            card_data.get("validation"), metrics, dataset=validation_data,
            description=(card_data.get("validation") or {}).get("description")
            or f"Measured by bioimgzoo.train at export, on whole images, after the package's pre/post-processing "
               f"({trainer.task.name} task).")
    train_section = _training_section(trainer, card_data.get("training"))
    if isinstance(training, Mapping):
        train_section = {**dict(training), **train_section} if isinstance(train_section, Mapping) else \
            {"details": train_section, **dict(training)}
    elif training:
        train_section = f"{train_section}\n\n{training}" if isinstance(train_section, str) else \
            {**train_section, "notes": str(training)}
    card_data["training"] = train_section
    if not card_data.get("task") and trainer.task.name in _CARD_TASKS:
        card_data["task"] = _CARD_TASKS[trainer.task.name]

    if example_input is None:
        example_input = trainer.example_input()
    ex = np.asarray(example_input, np.float32)
    if ex.ndim == 2:
        ex = ex[None, None]
    elif ex.ndim == 3:
        ex = ex[None]
    module = trainer.module
    was_device = next(module.parameters()).device
    module.to("cpu")
    opts = dict(overrides)
    if isinstance(module, UNet2d) and "architecture" not in opts:
        opts["architecture"] = "bioimgzoo.train.nets:UNet2d"
        opts.setdefault("architecture_kwargs", module.init_kwargs())
    names = _default_channel_names(trainer, (opts.get("output_ids") or ["output"])[0])
    if names and "channel_names" not in opts:
        opts["channel_names"] = names
    try:
        return export_model(module, ex, Path(out), name=name, description=description, authors=authors,
                            license=license, axes="bcyx", preprocessing=trainer.task.preprocessing(),
                            postprocessing=trainer.task.postprocessing(), card=card_data, **opts)
    finally:
        module.to(was_device)

