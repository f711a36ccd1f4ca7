"""Fine-tune a zoo package on new images and export the result as a new package.

::

    from bioimgzoo.train import finetune

    result = finetune("nuclei.zip", images, labels, steps=200, out="nuclei-mine.zip",
                      authors=["Me"])
    print(result.metrics_before, "->", result.metrics)

What happens:

1. The package is opened (path, zip, URL or zoo id) and its network loaded
   for training from its PyTorch weights: ``pytorch_state_dict`` when its
   architecture can be built safely (a callable from ``bioimgzoo``, or any
   library / the package's own Python file with ``trust_code=True``), else
   ``torchscript`` (runs no Python code of the package).
2. The task follows the package: segmentation when targets are given
   (boundary channel when the model has two output channels), Noise2Void
   otherwise; training normalises with the *parent's* preprocessing and the
   new package declares the parent's pre/post-processing, since the weights
   were learned for exactly that.
3. The parent is measured on the validation images, trained further with a
   small learning rate, measured again, and exported.  The new package's
   card names the parent (README "Training" section) and, when the parent
   has a zoo id, its rdf carries ``parent: {id, version}``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrainingError, UntrustedCodeError, WeightsError
from .. import trust
from ..descr.weights import canonical_format
from .tasks import Noise2VoidTask, SegmentationTask, Task, get_task

__all__ = ["finetune", "FinetuneResult", "load_trainable"]

log = logging.getLogger("bioimgzoo.train")



@dataclass
class FinetuneResult:
    """What :func:`finetune` produced."""

    #: the new package
    path: Path
    #: validation metrics of the parent before fine-tuning ({} without validation)
    metrics_before: dict[str, float]
    #: validation metrics of the fine-tuned network
    metrics: dict[str, float]
    #: who the parent is: name, id, version, source, weights format and sha256
    parent: dict[str, Any]
    #: the trainer (its module is the fine-tuned network)
    trainer: Any = field(repr=False, default=None)


def load_trainable(package: Any, *, weights: str | None = None, trust_code: bool = False):
    """A trainable ``torch.nn.Module`` from an opened package, plus how it was built.

    Returns
    -------
    module : torch.nn.Module
    info : dict
        ``format`` ("pytorch_state_dict" or "torchscript"), ``sha256`` of the
        weights file, and for state dicts the ``architecture`` the exporter
        can name again (``"module:Callable"`` or ``{"callable", "source"}``)
        with its ``kwargs``.
    """
    import torch

    descr = package.descr
    w = descr.weights
    trainable = ("pytorch_state_dict", "torchscript")
    # the same names and aliases as everywhere ("ts", "pytorch", ...); only torch weights train
    order = [canonical_format(weights, among=trainable, error=TrainingError)] if weights else list(trainable)
    reasons = []
    for fmt in order:
        entry = getattr(w, fmt, None)
        if entry is None:
            reasons.append(f"no {fmt} weights")
            continue
        sha = str(entry.sha256) if getattr(entry, "sha256", None) else None
        if fmt == "torchscript":
            path = package.file(entry)
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as e:  # torch raises RuntimeError and others for corrupt files
                raise WeightsError(f"cannot load the torchscript weights of {package.name} ({type(e).__name__}: "
                                   f"{e}): the file is corrupt or from a newer torch") from e
            module.train()
            return module, {"format": fmt, "sha256": sha}
        arch = entry.architecture
        kwargs = dict(arch.kwargs or {})
        refs = list(trust.code_refs(package.descr, weights_format=fmt))
        refused = [r for r in refs if not trust.is_trusted(r, trust_code=trust_code)]
        if refused:
            message = trust.refusal_message(refused[0], what=package.name)
            if weights:
                raise UntrustedCodeError(message)
            reasons.append(message)
            continue
        try:
            func = trust.load_architecture(arch, package=package, trust_code=trust_code, where=package.name)
        except WeightsError as e:
            if hasattr(arch, "import_from") and not weights:  # a missing library: try torchscript
                reasons.append(str(e))
                continue
            raise
        own = next((r.module for r in refs if r.kind == "architecture file" and r.allow_listed), None)
        # bioimgzoo's own network shipped as its source is named as our class again: the child ships the same
        # verbatim file (loadable without trust_code), not an extract of the parent's copy
        arch_ref: Any = (f"{arch.import_from}:{arch.callable}" if hasattr(arch, "import_from")
                         else f"{own}:{arch.callable}" if own
                         else {"callable": str(arch.callable), "source": str(package.file(arch))})
        try:
            module = func(**kwargs)
            state = torch.load(str(package.file(entry)), map_location="cpu", weights_only=True)
            module.load_state_dict(state, strict=True)
        except Exception as e:  # constructor/load errors of foreign code
            raise WeightsError(f"cannot build the pytorch_state_dict weights of {package.name} "
                               f"({type(e).__name__}: {e})") from e
        module.train()
        return module, {"format": fmt, "sha256": sha, "architecture": arch_ref, "kwargs": kwargs}
    if any("trust_code=True" in r for r in reasons):
        raise UntrustedCodeError(f"{package.name}: " + "; ".join(reasons))
    raise WeightsError(f"{package.name} has no PyTorch weights that can be trained ({'; '.join(reasons)}): "
                       "fine-tuning needs pytorch_state_dict or torchscript weights")


def _io_layout(descr) -> tuple[int, int, int | None, int | None]:
    """(input channels, output channels, size step, size min) of a single-input 2D model."""
    from bioimageio.spec.model import v0_5

    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise TrainingError(f"fine-tuning supports models with one input and one output; {descr.name} has "
                            f"{len(descr.inputs)} and {len(descr.outputs)}")
    inp, out = descr.inputs[0], descr.outputs[0]
    in_ids = [str(a.id) for a in inp.axes]
    if [a for a in in_ids if a not in ("batch", "channel")] != ["y", "x"]:
        raise TrainingError(f"fine-tuning supports 2D images (axes batch, channel, y, x); {descr.name}'s input has "
                            f"axes {in_ids}")

    def n_channels(tensor) -> int:
        for a in tensor.axes:
            if isinstance(a, v0_5.ChannelAxis):
                return len(a.channel_names)
        return 1

    step = smin = None
    for a in inp.axes:
        if str(a.id) in ("y", "x") and isinstance(a.size, v0_5.ParameterizedSize):
            step = max(step or 1, int(a.size.step))
            smin = max(smin or 0, int(a.size.min))
    return n_channels(inp), n_channels(out), step, smin


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", text)
    name = re.sub(r"\s+", " ", name).strip()
    return (name or "fine-tuned model")[:64].strip()


def finetune(source: Any, images: Any, targets: Any = None, *, task: Task | str | None = None, steps: int = 200,
             out: str | os.PathLike, name: str | None = None, description: str | None = None, authors: Any = None,
             weights: str | None = None, trust_code: bool = False, patch_size: int = 64, batch_size: int = 8,
             lr: float = 1e-4, val_fraction: float = 0.2, seed: int = 0, device: Any = "auto",
             checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, eval_every: int = 50,
             patience: int | None = None, progress: bool = True, size_divisor: int | None = None,
             card: Any = None, hub: str | None = None, **export_options: Any) -> FinetuneResult:
    """Train a zoo package's network further on new data and export a new package naming its parent.

    Parameters
    ----------
    source : str or path
        The parent package: folder, rdf.yaml, .zip, URL or zoo id.
    images, targets
        As for :meth:`Trainer.fit <bioimgzoo.train.trainer.Trainer.fit>`.
    task : Task or str, optional
        Default: ``"segmentation"`` with targets, ``"n2v"`` without.
    steps : int
        Total fine-tuning steps.
    out : path
        The new package (``.zip``).
    name, description, authors : optional
        Default: derived from the parent ("<parent> (fine-tuned)"); authors
        default to the parent's.
    weights : {"pytorch_state_dict", "torchscript"}, optional
        Which parent weights to start from (default: the first usable).
    trust_code : bool
        Allow building a state-dict architecture from outside bioimgzoo or from
        the package's Python file.
    lr : float
        Learning rate (default 1e-4: small, to adapt rather than relearn).
    size_divisor : int, optional
        Multiple the network's input sides must be (default: the package's
        size step, else 16).
    hub : str, optional
        Zoo server or mirror URL, for an id ``source``.
    card, **export_options
        Model card and options of :func:`bioimgzoo.exporter.export_model`.
    """
    from ..package import open_package
    from .export import export_trained
    from .trainer import Trainer

    package = open_package(source, **({"hub": hub} if hub else {}))
    descr = package.descr
    in_ch, out_ch, step, smin = _io_layout(descr)
    module, winfo = load_trainable(package, weights=weights, trust_code=trust_code)
    task = _task_for(task, targets, descr, in_ch, out_ch, package_name=package.name)
    divisor = size_divisor or step or getattr(module, "size_divisor", None) or 16
    _check_patch_size(patch_size, smin, step, descr.name)
    trainer = Trainer(module, task, patch_size=patch_size, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                      seed=seed, device=device, checkpoint_dir=checkpoint_dir, eval_every=eval_every,
                      checkpoint_every=eval_every, patience=patience, progress=progress, size_divisor=divisor,
                      in_channels=in_ch)
    trainer.prepare(images, targets)
    metrics_before = trainer.evaluate() if trainer.has_validation else {}
    fit = trainer.fit(images, targets, steps=steps, resume=resume)
    metrics = dict(fit.metrics)

    parent, parent_text = _parent_info(source, descr, winfo)
    name = name or _safe_name(f"{descr.name} fine-tuned")
    description = description or (f"{parent['name']} fine-tuned with bioimgzoo for {fit.steps} steps "
                                  f"({task.name}). Parent: {parent_text}.")[:1000]
    if authors is None:
        authors = [{k: v for k, v in {"name": a.name, "affiliation": a.affiliation, "orcid": str(a.orcid) if
                                       a.orcid else None, "github_user": a.github_user}.items() if v}
                   for a in descr.authors]
    opts = _export_options(export_options, descr, winfo, parent, name)
    training = _training_notes(parent, parent_text, fit.steps, trainer.primary_metric[0], metrics_before, metrics)
    parent_authors = ", ".join(str(a.name) for a in descr.authors)
    if parent_authors:  # the new package's authors did the fine-tuning; the parent's did the model
        training["parent_authors"] = f"{parent_authors} (authors of the parent model, credited here)"
    license_ = opts.pop("license", None) or str(descr.license or "CC-BY-4.0")
    path = export_trained(trainer, out, name=name, description=description, authors=authors, card=card,
                          metrics=metrics or None, license=license_, training=training, **opts)
    return FinetuneResult(path=Path(path), metrics_before=metrics_before, metrics=metrics, parent=parent,
                          trainer=trainer)


#: words in a parent's task or tags -> the fine-tuning task
_TASK_WORDS = {"segmentation": "segmentation", "semantic-segmentation": "segmentation",
               "instance-segmentation": "segmentation", "denoising": "n2v", "n2v": "n2v", "noise2void": "n2v"}


def parent_task(descr) -> str | None:
    """The parent's task (``"segmentation"`` or ``"n2v"``) from its ``config.bioimageio.task`` or its tags, or
    None when they say nothing (or contradict each other)."""
    words = []
    config = getattr(descr, "config", None)
    bio = getattr(config, "bioimageio", None)
    extra = getattr(bio, "model_extra", None) or {}
    task_text = getattr(bio, "task", None) or extra.get("task")
    if task_text:
        words.append(str(task_text).strip().lower())
    words += [str(t).strip().lower() for t in (descr.tags or [])]
    found = {_TASK_WORDS[w] for w in words if w in _TASK_WORDS}
    return found.pop() if len(found) == 1 else None


def _task_for(task: Task | str | None, targets: Any, descr, in_ch: int, out_ch: int, *,
              package_name: Any = None) -> Task:
    """The fine-tuning task (the caller's, else the parent's), fitted to the parent's channels and processing."""
    if task is None:
        inferred = parent_task(descr)
        if inferred is None:
            raise TrainingError(f"the task of {package_name or descr.name} cannot be told from its description "
                                "(no task in config.bioimageio, no segmentation/denoising tag): pass "
                                "task='segmentation' (with labels) or task='n2v' (--task on the command line)")
        if inferred == "segmentation" and targets is None:
            raise TrainingError(f"{descr.name} is a segmentation model: fine-tuning it needs labels (--labels), "
                                "or pass task='n2v' explicitly to retrain it as a denoiser")
        task = SegmentationTask(boundary=out_ch >= 2) if inferred == "segmentation" else Noise2VoidTask()
    task = get_task(task)
    if isinstance(task, SegmentationTask) and out_ch not in (1, 2):
        raise TrainingError(f"{descr.name} has {out_ch} output channels: segmentation fine-tuning needs 1 "
                            "(foreground) or 2 (foreground, boundary)")
    if isinstance(task, SegmentationTask):
        task.boundary = out_ch == 2
    if task.out_channels(in_ch) != out_ch:
        raise TrainingError(f"the {task.name} task needs {task.out_channels(in_ch)} output channel(s), "
                            f"{descr.name} has {out_ch}")
    task.use_processing(descr.inputs[0].preprocessing, descr.outputs[0].postprocessing)
    return task


def _check_patch_size(patch_size: int, smin: int | None, step: int | None, model_name: Any) -> None:
    if smin is not None and (patch_size < smin or (patch_size - smin) % (step or 1)):
        raise TrainingError(f"patch_size {patch_size} is not an input size {model_name} accepts (min {smin}, step "
                            f"{step}): use {max(smin, smin + -(-(patch_size - smin) // step) * step)}")


def _parent_info(source: Any, descr, winfo: dict) -> tuple[dict[str, Any], str]:
    """Who the parent is (name, id, version, source, weights) and one line naming it."""
    src_text = str(source)
    if not re.match(r"^https?://", src_text) and Path(src_text).expanduser().exists():
        src_text = Path(src_text).name  # a local path says nothing to others (and may say too much)
    parent = {
        "name": str(descr.name),
        "id": str(descr.id) if getattr(descr, "id", None) else None,
        "version": str(descr.version) if getattr(descr, "version", None) else None,
        "source": src_text,
        "weights": winfo["format"],
        "weights_sha256": winfo.get("sha256"),
    }
    parent_text = f"{parent['name']}" + (f" (zoo id {parent['id']}" + (f", version {parent['version']}"
                                                                         if parent["version"] else "") + ")"
                                         if parent["id"] else f" ({parent['source']})")
    return parent, parent_text


def _export_options(export_options: dict, descr, winfo: dict, parent: dict, name: str) -> dict:
    """The exporter's options: the caller's, plus the parent's citations, architecture, id, rdf link, tensor
    ids, channel names, maintainers and tags (a child that renames its tensors breaks the macros and
    workflows written for the parent)."""
    opts = dict(export_options)
    opts.setdefault("input_ids", [str(descr.inputs[0].id)])
    opts.setdefault("output_ids", [str(descr.outputs[0].id)])
    channel_names = {}
    for t in (descr.inputs[0], descr.outputs[0]):
        for a in t.axes:
            if getattr(a, "channel_names", None):
                channel_names[str(t.id)] = [str(c) for c in a.channel_names]
    if channel_names:
        opts.setdefault("channel_names", channel_names)
    maintainers = [{"name": str(m.name), "github_user": str(m.github_user)} for m in (descr.maintainers or [])
                   if m.github_user and m.name]
    if maintainers:
        opts.setdefault("maintainers", maintainers)
    kept_tags = [str(t) for t in (descr.tags or []) if str(t) not in ("deepimagej",)]
    if kept_tags:
        opts["tags"] = list(dict.fromkeys(kept_tags + list(opts.get("tags") or [])))
    task_text = getattr(getattr(descr.config, "bioimageio", None), "task", None) if descr.config else None
    if task_text:
        opts.setdefault("task", str(task_text))
    opts.setdefault("cite", [{"text": c.text, **({"doi": str(c.doi)} if c.doi else {"url": str(c.url)})}
                             for c in descr.cite if c.doi or c.url] or None)
    if opts["cite"] is None:
        opts.pop("cite")
    if "architecture" in winfo and "architecture" not in opts:
        opts["architecture"] = winfo["architecture"]
        opts.setdefault("architecture_kwargs", winfo["kwargs"])
    elif winfo["format"] == "torchscript" and "weights" not in opts:
        opts["weights"] = ("torchscript", "onnx")  # no Python architecture to name for a state dict
    if parent["id"] and "id" not in opts:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "fine-tuned"
        if slug == parent["id"]:
            opts["id"] = f"{slug}-fine-tuned"
    if parent["id"] and "parent" not in opts:  # the rdf's own `parent` field links the zoo model
        opts["parent"] = {"id": parent["id"], **({"version": parent["version"]} if parent["version"] else {})}
    return opts


def _training_notes(parent: dict, parent_text: str, steps: int, primary: str,
                    metrics_before: dict[str, float], metrics: dict[str, float]) -> dict[str, str]:
    """The card's training section additions: the parent and the metric before/after."""
    training = {
        "parent": parent_text,
        "parent_source": parent["source"],
        "parent_weights": f"{parent['weights']}" + (f" (sha256 {parent['weights_sha256']})"
                                                    if parent["weights_sha256"] else ""),
        "fine_tuning": f"{steps} steps from the parent's weights",
    }
    if metrics_before:
        training["parent_validation"] = (f"{primary} {metrics_before[primary]:.4g} before fine-tuning, "
                                         f"{metrics[primary]:.4g} after")
    return training
