#!/usr/bin/env python
"""Measure the shipped training recipes and write the numbers into the model cards.

1. Segmentation: trains the demo's U-Net with exactly the demo's settings
   (``bioimgzoo.train.demo.DEMO_SETTINGS``) on synthetic nuclei, then measures
   IoU, Dice and instance F1 on held-out synthetic images (another seed).
   Target: IoU >= 0.8.
2. Noise2Void: trains on synthetic noisy images only
   (``bioimgzoo.train.demo.N2V_SETTINGS``), then measures PSNR/SSIM of the
   denoised held-out images against their clean versions and of the noisy
   inputs.  Target: PSNR gain >= +3 dB.

Both run with ``torch.set_num_threads(2)`` (the 2-core budget of the demo)
unless ``--threads`` says otherwise, and report wall-clock and CPU time.
The metrics are merged into the ``validation`` section of
``model_cards/nuclei-unet2d.yaml`` and ``model_cards/n2v-denoiser.yaml``
(only that block is rewritten; for the Noise2Void card also the
normalisation statistics in its ``export`` section, which the card says the
training run fills in).  ``--no-write`` only prints.  ``--runs DIR`` also
writes, per model, the exported package, the checkpoint and the example
input the card's ``export`` section points to (``DIR/<id>/...``).

Usage::

    python scripts/train_metrics.py                 # both, write the cards
    python scripts/train_metrics.py --only seg --no-write
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CARDS = REPO / "model_cards"


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def measure_segmentation(*, steps: int | None = None, progress: bool = True) -> tuple[dict, object]:
    import torch

    from bioimgzoo.train.data import synthetic_nuclei
    from bioimgzoo.train.demo import DEMO_SETTINGS
    from bioimgzoo.train.nets import UNet2d
    from bioimgzoo.train.tasks import SegmentationTask
    from bioimgzoo.train.trainer import Trainer

    s = dict(DEMO_SETTINGS)
    if steps:
        s["steps"] = steps
    images, labels = synthetic_nuclei(s["n_train"], s["image_shape"], seed=s["seed"])
    test_images, test_labels = synthetic_nuclei(s["n_test"], s["image_shape"], seed=s["test_seed"])
    torch.manual_seed(s["seed"])
    task = SegmentationTask(boundary=s["boundary"])
    net = UNet2d(1, task.out_channels(1), depth=s["depth"], base=s["base"])
    trainer = Trainer(net, task, patch_size=s["patch_size"], batch_size=s["batch_size"], lr=s["lr"],
                      val_fraction=s["val_fraction"], seed=s["seed"], device="cpu", eval_every=s["eval_every"],
                      progress=progress)
    fit, wall, cpu = _timed(lambda: trainer.fit(images, labels, steps=s["steps"]))
    heldout = trainer.evaluate(test_images, test_labels)
    return {
        "task": "segmentation", "steps": fit.steps, "best_step": fit.best_step,
        "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "step_s": round(trainer.train_seconds, 1),
        "validation": {k: round(v, 4) for k, v in fit.metrics.items()},
        "heldout": {k: round(v, 4) for k, v in heldout.items()},
        "dataset": f"{s['n_test']} synthetic held-out images {s['image_shape'][0]}x{s['image_shape'][1]} "
                   f"(synthetic_nuclei, seed {s['test_seed']}), not seen in training",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
    }, trainer


def measure_n2v(*, steps: int | None = None, progress: bool = True) -> tuple[dict, object]:
    import torch

    from bioimgzoo.train.data import synthetic_noisy_pairs
    from bioimgzoo.train.demo import N2V_SETTINGS
    from bioimgzoo.train.nets import UNet2d
    from bioimgzoo.train.tasks import Noise2VoidTask
    from bioimgzoo.train.trainer import Trainer

    s = dict(N2V_SETTINGS)
    if steps:
        s["steps"] = steps
    noisy, clean = synthetic_noisy_pairs(s["n_train"], s["image_shape"], seed=s["seed"], sigma=s["sigma"])
    test_noisy, test_clean = synthetic_noisy_pairs(s["n_test"], s["image_shape"], seed=s["test_seed"],
                                                   sigma=s["sigma"])
    torch.manual_seed(s["seed"])
    net = UNet2d(1, 1, depth=s["depth"], base=s["base"], batch_norm=s["batch_norm"])
    trainer = Trainer(net, Noise2VoidTask(mask_fraction=s["mask_fraction"]), patch_size=s["patch_size"],
                      batch_size=s["batch_size"], lr=s["lr"], val_fraction=s["val_fraction"], seed=s["seed"],
                      device="cpu", eval_every=s["eval_every"], progress=progress)
    # the clean images only measure; training sees the noisy images alone
    fit, wall, cpu = _timed(lambda: trainer.fit(noisy, clean, steps=s["steps"]))
    heldout = trainer.evaluate(test_noisy, test_clean)
    return {
        "task": "n2v", "steps": fit.steps, "best_step": fit.best_step,
        "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "step_s": round(trainer.train_seconds, 1),
        "validation": {k: round(v, 4) for k, v in fit.metrics.items()},
        "heldout": {k: round(v, 4) for k, v in heldout.items()},
        "mean": trainer.task.mean, "std": trainer.task.std,
        "dataset": f"{s['n_test']} synthetic held-out noisy/clean pairs {s['image_shape'][0]}x{s['image_shape'][1]} "
                   f"(synthetic_noisy_pairs, Gaussian noise sigma {s['sigma']}, seed {s['test_seed']})",
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
    }, trainer


# ------------------------------------------------------------------------------------------------
# card writing: replace one top-level block, keep everything else (comments included) as it is


def _top_level_block(lines: list[str], key: str) -> tuple[int, int] | None:
    start = next((i for i, ln in enumerate(lines) if re.match(rf"^{re.escape(key)}\s*:", ln)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t-"):
        end += 1
    return start, end


def update_card_validation(card: Path, metrics: dict, *, dataset: str, description: str | None = None) -> None:
    import yaml

    from bioimgzoo._files import atomic_path
    from bioimgzoo.train.export import merge_validation

    text = card.read_text("utf-8")
    data = yaml.safe_load(text) or {}
    merged = merge_validation(data.get("validation"), metrics, dataset=dataset, description=description)
    class _Indented(yaml.SafeDumper):  # "- item" indented under its key, like the hand-written cards
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    block = yaml.dump({"validation": merged}, Dumper=_Indented, sort_keys=False, allow_unicode=True,
                      width=100).splitlines()
    lines = text.splitlines()
    span = _top_level_block(lines, "validation")
    lines = lines[:span[0]] + block + lines[span[1]:] if span else lines + block
    new = "\n".join(lines) + "\n"
    assert yaml.safe_load(new)["validation"] == merged
    with atomic_path(card) as tmp:
        tmp.write_text(new, "utf-8")


def update_n2v_card_statistics(card: Path, mean: float, std: float) -> None:
    """Fill the training statistics into the card's export pre/postprocessing (as the card asks)."""
    from bioimgzoo._files import atomic_path

    text = card.read_text("utf-8")
    eps = 1e-6
    text = re.sub(r"(kwargs:\s*\{\s*mean:\s*)[^,}]+(,\s*std:\s*)[^}]+\}", rf"\g<1>{mean:.6g}\g<2>{std:.6g}}}", text)
    text = re.sub(r"(kwargs:\s*\{\s*gain:\s*)[^,}]+(,\s*offset:\s*)[^}]+\}",
                  rf"\g<1>{std + eps:.6g}\g<2>{mean:.6g}}}", text)
    with atomic_path(card) as tmp:
        tmp.write_text(text, "utf-8")


def _export_run(trainer, runs: Path, card: Path, model_id: str, metrics: dict, dataset: str) -> Path:
    import shutil

    folder = runs / model_id
    (folder / "ckpt").mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(folder / "ckpt" / "last.pt")
    np.save(folder / "example_input.npy", trainer.example_input())
    trainer.save_loss_curve(folder / "loss_curve.png")
    out = trainer.export(folder / f"{model_id}.zip", card=str(card), metrics=metrics, validation_data=dataset)
    shutil.copyfile(card, folder / card.name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["seg", "n2v"], help="Measure one recipe only.")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the demo's budget).")
    ap.add_argument("--seg-steps", type=int, default=None, help="Override the demo's segmentation steps.")
    ap.add_argument("--n2v-steps", type=int, default=None, help="Override the Noise2Void steps.")
    ap.add_argument("--no-write", action="store_true", help="Print only; leave the model cards alone.")
    ap.add_argument("--runs", type=Path, default=None, help="Also export packages/checkpoints under this folder.")
    ap.add_argument("--json", type=Path, default=None, help="Write all results as JSON here.")
    ap.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {}
    ok = True

    if args.only in (None, "seg"):
        r, trainer = measure_segmentation(steps=args.seg_steps, progress=not args.quiet)
        results["segmentation"] = r
        h = r["heldout"]
        passed = h["iou"] >= 0.8
        ok &= passed
        print(f"segmentation: held-out IoU {h['iou']:.4f} (target >= 0.8: {'OK' if passed else 'MISSED'}), "
              f"Dice {h['dice']:.4f}, instance F1@0.5 {h['instance_f1']:.4f}; {r['steps']} steps in "
              f"{r['train_wall_s']} s wall / {r['train_cpu_s']} s CPU ({args.threads} threads)")
        card = CARDS / "nuclei-unet2d.yaml"
        keep = {k: h[k] for k in ("iou", "dice", "instance_f1")}
        if not args.no_write:
            if card.is_file():
                update_card_validation(card, keep, dataset=r["dataset"])
                print(f"  wrote the metrics into {card}")
            else:
                print(f"  {card} does not exist: metrics not written")
        if args.runs and card.is_file():
            print(f"  exported {_export_run(trainer, args.runs, card, 'nuclei-unet2d', keep, r['dataset'])}")

    if args.only in (None, "n2v"):
        r, trainer = measure_n2v(steps=args.n2v_steps, progress=not args.quiet)
        results["n2v"] = r
        h = r["heldout"]
        passed = h["psnr_gain"] >= 3.0
        ok &= passed
        print(f"n2v: held-out PSNR {h['psnr_input']:.2f} dB -> {h['psnr']:.2f} dB, gain {h['psnr_gain']:+.2f} dB "
              f"(target >= +3 dB: {'OK' if passed else 'MISSED'}); SSIM {h['ssim_input']:.3f} -> {h['ssim']:.3f}; "
              f"{r['steps']} steps in {r['train_wall_s']} s wall / {r['train_cpu_s']} s CPU ({args.threads} threads)")
        card = CARDS / "n2v-denoiser.yaml"
        keep = {k: h[k] for k in ("psnr", "psnr_input", "psnr_gain", "ssim", "ssim_input")}
        if not args.no_write:
            if card.is_file():
                update_card_validation(card, keep, dataset=r["dataset"])
                update_n2v_card_statistics(card, float(r["mean"]), float(r["std"]))
                print(f"  wrote the metrics (and normalisation statistics) into {card}")
            else:
                print(f"  {card} does not exist: metrics not written")
        if args.runs and card.is_file():
            print(f"  exported {_export_run(trainer, args.runs, card, 'n2v-denoiser', keep, r['dataset'])}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str), "utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
