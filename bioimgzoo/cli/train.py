"""``bioimgzoo train segmentation|n2v`` and ``bioimgzoo finetune``."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


def _common_training_options(f):
    options = [
        click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
                     help="The package to write (.zip)."),
        click.option("--steps", type=int, default=None, help="Training steps in total [default: see each command]."),
        click.option("--patch", "patch", type=int, default=64, show_default=True,
                     help="Patch height/width (a multiple of 2**depth)."),
        click.option("--batch-size", type=int, default=8, show_default=True, help="Patches per step."),
        click.option("--lr", type=float, default=None, help="Learning rate [default: see each command]."),
        click.option("--val-fraction", type=float, default=0.2, show_default=True,
                     help="Fraction of the images held out for validation."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
        click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
                     help="Where checkpoints go [default: OUT without .zip, plus .checkpoints]."),
        click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir."),
        click.option("--patience", type=int, default=None, help="Stop after this many validations without gain."),
        click.option("--eval-every", type=int, default=100, show_default=True, help="Steps between validations."),
        click.option("--name", default=None, help="Model name in the package [default: from OUT]."),
        click.option("--description", default=None, help="Model description [default: generated]."),
        click.option("--author", "authors", multiple=True,
                     help="Author name (repeat for several); required here or as authors: in --card."),
        click.option("--maintainer", "maintainers", multiple=True, metavar="NAME:GITHUB_USER",
                     help="Maintainer and GitHub user (repeat) [default: the card's, or authors with github_user]."),
        click.option("--card", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Model card YAML (model_cards/README.md); its validation metrics are updated."),
        click.option("--loss-curve", type=click.Path(dir_okay=False), default=None,
                     help="Also write the loss curve PNG here [default: beside OUT]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _check_out(out: str) -> Path:
    path = Path(out).expanduser()
    if path.suffix.lower() != ".zip":
        raise InputError(f"--out {out}: the package is written as a .zip; give a path ending in .zip")
    return path


def _authors(authors, card) -> list[str] | None:
    """The authors given; None when the card names them.  Never the login name: a package names people."""
    if authors:
        return list(authors)
    if card:
        from ..exporter.card import load_card

        if load_card(card)[0].get("authors"):
            return None
    raise InputError("name the authors: --author 'First Last' (repeat for several), or authors: in --card; "
                     "the package is published under their names")


def _maintainers(maintainers) -> list[dict] | None:
    out = []
    for text in maintainers or ():
        name, sep, user = text.rpartition(":")
        if not sep or not name.strip() or not user.strip():
            raise InputError(f"--maintainer {text!r}: write NAME:GITHUB_USER, e.g. 'Ada Lovelace:ada'")
        out.append({"name": name.strip(), "github_user": user.strip()})
    return out or None


def _default_name(out: Path, what: str) -> str:
    import re

    stem = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", out.stem).strip()
    name = f"{stem} {what}".strip()
    return name[:64]


def _in_channels(images) -> int:
    first = images[0]
    return 1 if first.ndim == 2 else int(first.shape[0])


def _report(fit, trainer, out: Path, curve: Path) -> None:
    name, _ = trainer.primary_metric if fit.primary_metric else ("", "")
    click.echo(f"trained {fit.steps} steps in {fit.seconds:.1f} s"
               + (" (stopped early)" if fit.stopped_early else ""))
    if fit.metrics:
        click.echo("validation (step %d): " % fit.best_step
                   + ", ".join(f"{k} {v:.4g}" for k, v in fit.metrics.items()))
    click.echo(f"wrote {out}")
    click.echo(f"loss curve {curve}")


def _train_and_export(task, images, targets, *, out: str, steps: int | None, patch: int, batch_size: int,
                      lr: float | None, val_fraction: float, seed: int, device: str, checkpoint_dir,
                      resume: bool, patience, eval_every: int, name: str | None, description: str | None,
                      authors, maintainers, card, loss_curve, quiet: bool, depth: int, base: int,
                      defaults: dict) -> None:
    """Train ``task`` on the images and export the package; ``defaults`` fill what the user left out
    (``steps``, ``lr``, ``what``: the kind of model, ``description``: a function of the image count)."""
    out = _check_out(out)
    in_channels = _in_channels(images)
    steps = steps or defaults["steps"]
    lr = lr or defaults["lr"]
    name = name or _default_name(out, defaults["what"])
    description = description or defaults["description"](len(images))
    authors = _authors(authors, card)
    extra = {"maintainers": m} if (m := _maintainers(maintainers)) else {}

    import torch

    from ..train.nets import UNet2d
    from ..train.trainer import Trainer

    torch.manual_seed(seed)
    net = UNet2d(in_channels, task.out_channels(in_channels), depth=depth, base=base)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else out.with_name(out.stem + ".checkpoints")
    trainer = Trainer(net, task, patch_size=patch, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                      seed=seed, device=device, checkpoint_dir=ckpt, eval_every=eval_every,
                      checkpoint_every=eval_every, patience=patience, progress=not quiet)
    fit = trainer.fit(images, targets, steps=steps, resume=resume)
    curve = Path(loss_curve) if loss_curve else out.with_name(out.stem + ".loss.png")
    trainer.save_loss_curve(curve)
    trainer.export(out, name=name, description=description, authors=authors, card=card, **extra)
    _report(fit, trainer, out, curve)


@click.group()
def train() -> None:
    """Train a 2D U-Net on your images and export it as a zoo package."""


@train.command("segmentation")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder of images (TIFF/PNG/npy).")
@click.option("--labels", required=True, type=click.Path(file_okay=False),
              help="Folder of label images (instance labels or binary masks), matched to images by file name.")
@click.option("--boundary/--no-boundary", default=True, show_default=True,
              help="Also predict instance boundaries (separates touching objects).")
@click.option("--depth", type=int, default=3, show_default=True, help="U-Net levels.")
@click.option("--base", type=int, default=16, show_default=True, help="U-Net features at full resolution.")
@_common_training_options
def segmentation(images, labels, boundary, **options):
    """Train foreground (+ boundary) segmentation on IMAGES with LABELS; write the package OUT.

    Default: 300 steps, learning rate 2e-3.
    """
    from ..train.data import load_folder
    from ..train.tasks import SegmentationTask

    _check_out(options["out"])
    imgs, labs, _names = load_folder(images, labels)
    what = f"foreground{' and boundary' if boundary else ''} segmentation"
    _train_and_export(SegmentationTask(boundary=boundary), imgs, labs, **options, defaults={
        "steps": 300, "lr": 2e-3, "what": "segmentation U-Net",
        "description": lambda n: f"A 2D U-Net for {what}, trained with bioimgzoo on {n} image(s)."})


@train.command("n2v")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder of noisy images.")
@click.option("--clean", type=click.Path(file_okay=False), default=None,
              help="Folder of clean images (same file names), for PSNR/SSIM validation only.")
@click.option("--mask-fraction", type=float, default=0.02, show_default=True,
              help="Fraction of the pixels of a patch that are blind spots.")
@click.option("--depth", type=int, default=3, show_default=True, help="U-Net levels.")
@click.option("--base", type=int, default=16, show_default=True, help="U-Net features at full resolution.")
@_common_training_options
def n2v(images, clean, mask_fraction, **options):
    """Train Noise2Void denoising on noisy IMAGES only; write the package OUT.

    Default: 300 steps, learning rate 1e-3.
    """
    from ..train.data import load_folder
    from ..train.tasks import Noise2VoidTask

    _check_out(options["out"])
    imgs, cleans, _names = load_folder(images, clean)
    _train_and_export(Noise2VoidTask(mask_fraction=mask_fraction), imgs, cleans, **options, defaults={
        "steps": 300, "lr": 1e-3, "what": "Noise2Void denoiser",
        "description": lambda n: f"A 2D U-Net denoiser trained self-supervised with Noise2Void by bioimgzoo on "
                                 f"{n} noisy image(s)."})


@click.command()
@click.argument("source")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder of images.")
@click.option("--labels", type=click.Path(file_okay=False), default=None,
              help="Folder of label images: segmentation fine-tuning (without: Noise2Void).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The new package (.zip).")
@click.option("--steps", type=int, default=200, show_default=True, help="Fine-tuning steps.")
@click.option("--patch", type=int, default=64, show_default=True, help="Patch height/width.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Patches per step.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Learning rate.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Held-out fraction.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--weights", default=None, metavar="FORMAT",
              help="Parent weights to start from [default: the first usable].")
@click.option("--trust-code", is_flag=True, help="Allow building the parent's architecture from its own code.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None, help="Checkpoint folder.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir.")
@click.option("--name", default=None, help="Name of the new model [default: '<parent> fine-tuned'].")
@click.option("--description", default=None, help="Description of the new model.")
@click.option("--author", "authors", multiple=True, help="Author name (repeat) [default: the parent's authors].")
@click.option("--maintainer", "maintainers", multiple=True, metavar="NAME:GITHUB_USER",
              help="Maintainer and GitHub user (repeat) [default: the parent's maintainers].")
@click.option("--task", type=click.Choice(["segmentation", "n2v"]), default=None,
              help="What to train [default: the parent's task, from its description; needed when it says none].")
@click.option("--hub", default=None, help="Zoo server or mirror URL for an id SOURCE.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def finetune(source, images, labels, out, steps, patch, batch_size, lr, val_fraction, seed, device, weights,
             trust_code, checkpoint_dir, resume, name, description, authors, maintainers, task, hub, quiet):
    """Fine-tune the zoo model SOURCE (folder, .zip, URL or id) on your images; write a new package OUT.

    The new package keeps the parent's pre/post-processing and names the parent in its card.
    """
    from ..train.data import load_folder
    from ..train.finetune import finetune as _finetune

    out_path = _check_out(out)
    imgs, labs, _ = load_folder(images, labels)
    if resume and not checkpoint_dir:
        checkpoint_dir = str(out_path.with_name(out_path.stem + ".checkpoints"))
    result = _finetune(source, imgs, labs, steps=steps, out=out_path, name=name, description=description,
                       authors=list(authors) or None, weights=weights, trust_code=trust_code, patch_size=patch,
                       batch_size=batch_size, lr=lr, val_fraction=val_fraction, seed=seed, device=device,
                       checkpoint_dir=checkpoint_dir or out_path.with_name(out_path.stem + ".checkpoints"),
                       resume=resume, progress=not quiet, hub=hub, task=task,
                       **({"maintainers": m} if (m := _maintainers(maintainers)) else {}))
    if result.metrics_before:
        click.echo("parent:      " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics_before.items()))
        click.echo("fine-tuned:  " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
    click.echo(f"wrote {result.path} (parent: {result.parent['name']})")


COMMANDS = [train, finetune]
