"""Fixtures of the training tests: tiny data, tiny networks, one tiny exported package per session."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bioimgzoo.train.data import synthetic_noisy_pairs, synthetic_nuclei  # noqa: E402
from bioimgzoo.train.nets import UNet2d  # noqa: E402
from bioimgzoo.train.tasks import Noise2VoidTask, SegmentationTask  # noqa: E402
from bioimgzoo.train.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="session")
def nuclei():
    """Six 96x96 synthetic nuclei images with instance labels."""
    return synthetic_nuclei(6, (96, 96), seed=3)


@pytest.fixture(scope="session")
def noisy_pairs():
    """Five 64x64 noisy/clean pairs."""
    return synthetic_noisy_pairs(5, (64, 64), seed=4, sigma=0.2)


def tiny_unet(out_channels: int = 1, *, seed: int = 0) -> UNet2d:
    torch.manual_seed(seed)
    return UNet2d(1, out_channels, depth=2, base=4)


def tiny_trainer(task, *, out_channels: int | None = None, seed: int = 0, **kwargs) -> Trainer:
    out = out_channels if out_channels is not None else task.out_channels(1)
    opts = dict(patch_size=32, batch_size=4, lr=5e-3, seed=seed, device="cpu", eval_every=5, progress=False)
    opts.update(kwargs)
    return Trainer(tiny_unet(out, seed=seed), task, **opts)


@pytest.fixture(scope="session")
def trained_segmenter(nuclei):
    """A tiny boundary U-Net trained for 20 steps (shared: training is the slow part)."""
    images, labels = nuclei
    trainer = tiny_trainer(SegmentationTask(boundary=True))
    trainer.fit(images, labels, steps=20)
    return trainer


@pytest.fixture(scope="session")
def exported_package(trained_segmenter, tmp_path_factory):
    """The trained tiny segmenter exported as a zip (id tiny-nuclei-test)."""
    out = tmp_path_factory.mktemp("pkg") / "tiny.zip"
    trained_segmenter.export(out, name="Tiny nuclei test U-Net", description="A tiny test model.",
                             authors=["Test Author"], id="tiny-nuclei-test")
    return out


__all__ = ["tiny_unet", "tiny_trainer", "np", "Noise2VoidTask", "SegmentationTask"]
