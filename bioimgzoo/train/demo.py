"""The end-to-end demo: synthetic nuclei -> trained U-Net -> checked package -> local zoo -> prediction.

:func:`run_demo` is what ``bioimgzoo demo [--out DIR]`` runs.  On a fresh
machine with 2 CPU cores it takes a few minutes and needs no download:

1. generate synthetic nuclei images with instance masks (training set and
   held-out test images, different seeds);
2. train a small 2D U-Net (foreground + boundary channels) with
   :class:`~bioimgzoo.train.trainer.Trainer`; write the loss curve;
3. measure it on the held-out images (IoU, Dice, instance F1);
4. export it as a zoo package with those metrics in its card;
5. check the package (format, reproduction per weights format, DeepImageJ);
6. publish it into a local zoo folder, serve that folder on 127.0.0.1 and
   load the model back *by id* through the zoo client;
7. predict a 2048 x 2048 image in tiles, and turn the probabilities into
   labelled nuclei;
8. write the package zip, the predictions (TIFF), the check results
   (Markdown and JSON), the loss curve and an overview PNG to ``out_dir``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .._files import atomic_path

__all__ = ["run_demo", "DemoResult", "DEMO_SETTINGS", "N2V_SETTINGS", "serve_folder", "find_card"]

log = logging.getLogger("bioimgzoo.train")

#: The demo's training settings; ``scripts/train_metrics.py`` measures exactly these.
DEMO_SETTINGS: dict[str, Any] = {
    "n_train": 24, "n_test": 8, "image_shape": (256, 256), "seed": 0, "test_seed": 1000, "big_seed": 2000,
    "depth": 3, "base": 16, "boundary": True, "patch_size": 64, "batch_size": 8, "lr": 2e-3,
    "steps": 300, "eval_every": 100, "val_fraction": 0.2, "big_size": 2048, "tile": 512,
}

#: Noise2Void reference settings (not part of the demo; ``scripts/train_metrics.py`` measures them and
#: ``model_cards/n2v-denoiser.yaml`` describes this network)
N2V_SETTINGS: dict[str, Any] = {
    "n_train": 16, "n_test": 4, "image_shape": (256, 256), "seed": 0, "test_seed": 1000, "sigma": 0.15,
    "depth": 2, "base": 16, "batch_norm": False, "patch_size": 64, "batch_size": 8, "lr": 1e-3,
    "mask_fraction": 0.02, "steps": 200, "eval_every": 50, "val_fraction": 0.2,
}

# used when the source checkout's model_cards/nuclei-unet2d.yaml is not available (an installed package)
_MODEL_NAME = "Synthetic nuclei U-Net (bioimgzoo demo)"
_MODEL_DESCRIPTION = ("A small 2D U-Net that segments nuclei in fluorescence-like images: foreground and boundary "
                      "probabilities. Trained by the bioimgzoo demo on synthetic images in a few minutes on a CPU.")


@dataclass
class DemoResult:
    """Where the demo wrote everything and what it measured."""

    out_dir: Path
    package: Path
    prediction: Path
    labels: Path
    image: Path
    check_markdown: Path
    check_json: Path
    overview: Path
    loss_curve: Path
    zoo_dir: Path
    model_id: str
    check_passed: bool
    #: metrics on the held-out test images (written into the package's card)
    heldout_metrics: dict[str, float] = field(default_factory=dict)
    #: metrics of the loaded package on the 2048 x 2048 image
    big_image_metrics: dict[str, float] = field(default_factory=dict)
    #: side of the image predicted in tiles
    big_size: int = 2048
    #: seconds per stage
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Human-readable lines: what was measured and where every file is."""
        m = self.heldout_metrics
        b = self.big_image_metrics
        lines = [
            f"held-out test images: IoU {m.get('iou', float('nan')):.3f}, Dice {m.get('dice', float('nan')):.3f}, "
            f"instance F1@0.5 {m.get('instance_f1', float('nan')):.3f}",
            f"{self.big_size}x{self.big_size} image via the zoo id {self.model_id!r}: "
            f"IoU {b.get('iou', float('nan')):.3f}, "
            f"instance F1@0.5 {b.get('instance_f1', float('nan')):.3f}",
            f"package check: {'passed' if self.check_passed else 'FAILED'}",
            "",
            f"package        {self.package}",
            f"prediction     {self.prediction}  (foreground, boundary probabilities)",
            f"nuclei labels  {self.labels}",
            f"input image    {self.image}",
            f"check results  {self.check_markdown}, {self.check_json}",
            f"overview       {self.overview}",
            f"loss curve     {self.loss_curve}",
            f"local zoo      {self.zoo_dir}  (serve it: python -m http.server 8000 --directory {self.zoo_dir}; "
            f"then BIOIMGZOO_HUB=http://localhost:8000 bioimgzoo predict {self.model_id} ...)",
            "",
            "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def find_card(name: str) -> Path | None:
    """``model_cards/<name>`` of the source checkout, if there is one (None when installed elsewhere)."""
    p = Path(__file__).resolve().parents[2] / "model_cards" / name
    return p if p.is_file() else None


# ------------------------------------------------------------------------------------------------
# local zoo

@contextlib.contextmanager
def serve_folder(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) while in the block; yields the base URL."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class _Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------
# the demo


def _instances(prob: np.ndarray, task) -> np.ndarray:
    """Labelled nuclei from (foreground, boundary) probabilities: the code ``bioimgzoo predict --labels`` runs."""
    from ..runtime.labels import probabilities_to_instances

    boundary = prob[1] if task.boundary and len(prob) > 1 else None
    return probabilities_to_instances(prob[0], boundary, threshold=task.threshold, min_size=task.min_size)


def _segmentation_metrics(prob: np.ndarray, true_labels: np.ndarray, task,
                          instances: np.ndarray) -> dict[str, float]:
    from . import metrics as M

    fg = prob[0] > task.threshold
    tp, fp, fn = M.match_instances(instances, true_labels)
    return {"iou": M.iou(fg, true_labels > 0), "dice": M.dice(fg, true_labels > 0),
            "instance_f1": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)}


def _downsample(a: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    from PIL import Image

    if labels:
        return np.asarray(Image.fromarray(a).resize((size, size), Image.NEAREST))
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((size, size), Image.BOX))


class _Laps:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = now - self._t
        self._t = now


def _settings(steps: int | None, big_size: int | None, n_train: int | None) -> dict[str, Any]:
    """:data:`DEMO_SETTINGS` with the caller's overrides."""
    s = dict(DEMO_SETTINGS)
    if steps is not None:
        s["steps"] = int(steps)
        s["eval_every"] = max(1, min(s["eval_every"], int(steps)))
    if big_size is not None:
        s["big_size"] = int(big_size)
    if n_train is not None:
        s["n_train"] = int(n_train)
    return s


def _default_echo(progress: bool) -> Callable[[str], None]:
    """Stage messages: a rich console on stderr with ``progress``, else the log."""
    if progress:
        from rich.console import Console

        console = Console(stderr=True)

        def echo(msg: str) -> None:
            console.print(f"[bold cyan]demo[/] {msg}")
    else:
        def echo(msg: str) -> None:
            log.info(msg)
    return echo


def _train(s: Mapping[str, Any], images, labels, *, device: str, progress: bool, echo: Callable[[str], None]):
    """Step 2: train the demo U-Net (checkpoints in a temporary folder); returns the trainer."""
    import torch

    from .nets import UNet2d
    from .tasks import SegmentationTask
    from .trainer import Trainer

    torch.manual_seed(s["seed"])
    task = SegmentationTask(boundary=s["boundary"])
    net = UNet2d(1, task.out_channels(1), depth=s["depth"], base=s["base"])
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-demo-ckpt-") as ckpt:
        trainer = Trainer(net, task, patch_size=s["patch_size"], batch_size=s["batch_size"], lr=s["lr"],
                          val_fraction=s["val_fraction"], seed=s["seed"], device=device, checkpoint_dir=ckpt,
                          eval_every=s["eval_every"], checkpoint_every=s["eval_every"], progress=progress)
        echo(f"training a 2D U-Net ({sum(p.numel() for p in net.parameters()):,} parameters) for {s['steps']} "
             f"steps on {trainer.device}")
        trainer.fit(images, labels, steps=s["steps"])
    return trainer


def _export(trainer, s: Mapping[str, Any], package: Path, heldout: Mapping[str, float]) -> Path:
    """Step 4: the package, with the held-out metrics in its card (the project's card when there is one)."""
    card = find_card("nuclei-unet2d.yaml")
    # name, id, authors, tags and texts come from the project's model card when there is one
    identity: dict[str, Any] = {} if card else {
        "name": _MODEL_NAME, "description": _MODEL_DESCRIPTION, "authors": [{"name": "bioimgzoo demo"}],
        "id": "bioimgzoo-demo-nuclei",
        "tags": ["segmentation", "nuclei", "fluorescence-light-microscopy", "unet2d", "bioimgzoo-demo"]}
    return trainer.export(package, card=str(card) if card else None, metrics=heldout,
                          validation_data=f"{s['n_test']} synthetic held-out images {s['image_shape'][0]}x"
                                          f"{s['image_shape'][1]} (seed {s['test_seed']}), not seen in training",
                          **identity)


def _check(package: Path, out: Path):
    """Step 5: check the package; write check.md and check.json.  Returns (report, md path, json path)."""
    from ..validation import check_package

    report = check_package(package)
    check_md, check_json = out / "check.md", out / "check.json"
    with atomic_path(check_md) as tmp:
        tmp.write_text(report.to_markdown(), "utf-8")
    with atomic_path(check_json) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=1, default=str), "utf-8")
    return report, check_md, check_json


def _publish_and_predict(package: Path, zoo_dir: Path, big_image: np.ndarray, s: Mapping[str, Any], *,
                         device: str, echo: Callable[[str], None], lap: _Laps) -> tuple[str, np.ndarray]:
    """Steps 6-7: publish into the local zoo, load back by id over HTTP, predict in tiles.

    Returns the zoo id and the (channel, y, x) probabilities.
    """
    from ..hub import publish
    from ..runtime.model import Model

    model_id = publish(package, zoo_dir, comment="published by the bioimgzoo demo")
    echo(f"published as {model_id!r} in the local zoo {zoo_dir}; loading it back by id")
    with serve_folder(zoo_dir) as url:
        model = Model.load(model_id, hub=url, device=None if device == "auto" else device)
        lap("publish_load")
        echo(f"predicting a {s['big_size']}x{s['big_size']} image in {s['tile']}x{s['tile']} tiles")
        prob = np.asarray(model.predict(big_image, axes="yx", tile=s["tile"]), np.float32)
    if prob.ndim == 4:  # a batch axis kept by the runtime
        prob = prob[0]
    return model_id, prob


def _write_overview(path: Path, big_image: np.ndarray, big_labels: np.ndarray, prob: np.ndarray,
                    instances: np.ndarray, big_size: int) -> Path:
    """The whole image (downsampled) above, a crop at full resolution (enlarged) below."""
    from .plot import image_grid_png, label_colors, to_uint8

    view, crop = 512, min(256, big_size)
    c0 = (big_size - crop) // 2
    win = (slice(c0, c0 + crop), slice(c0, c0 + crop))
    n_pred, n_true = len(np.unique(instances)) - 1, len(np.unique(big_labels)) - 1
    image_grid_png(path, [
        [to_uint8(_downsample(big_image, view)),
         (np.clip(_downsample(prob[0], view), 0, 1) * 255).astype(np.uint8),
         label_colors(_downsample(instances.astype(np.int32), view, labels=True)),
         label_colors(_downsample(big_labels.astype(np.int32), view, labels=True))],
        [to_uint8(big_image[win]), (np.clip(prob[0][win], 0, 1) * 255).astype(np.uint8),
         label_colors(instances[win]), label_colors(big_labels[win])],
    ], [[f"input {big_size}x{big_size}", "prediction: foreground probability",
         f"predicted nuclei ({n_pred})", f"labels: true nuclei ({n_true})"],
        [f"centre {crop}x{crop} (input)", "foreground probability", "predicted nuclei", "true nuclei"]], size=view)
    return path


def run_demo(out_dir: str | Path = "bioimgzoo-demo", *, steps: int | None = None, progress: bool = True,
             device: str = "auto", big_size: int | None = None, n_train: int | None = None,
             echo: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole demo and write its results to ``out_dir`` (see the module docstring).

    Parameters
    ----------
    out_dir : path
        Output folder (created).  Its ``zoo/`` subfolder is the local zoo.
    steps : int, optional
        Training steps (default :data:`DEMO_SETTINGS` ``["steps"]``).  Tests pass a few.
    progress : bool
        Progress bar during training and stage messages.
    device : str
        Training/prediction device ("auto": CUDA when available).
    big_size : int, optional
        Side of the image predicted in tiles (default 2048).
    n_train : int, optional
        Number of training images (default 24).
    echo : callable, optional
        Where stage messages go (default: a rich console when ``progress``).
    """
    from ..io import write_image
    from .data import synthetic_nuclei

    s = _settings(steps, big_size, n_train)
    echo = echo or _default_echo(progress)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    lap = _Laps()

    # 1. data
    echo(f"generating {s['n_train']} synthetic nuclei images {s['image_shape']} (+{s['n_test']} held out)")
    images, labels = synthetic_nuclei(s["n_train"], s["image_shape"], seed=s["seed"])
    test_images, test_labels = synthetic_nuclei(s["n_test"], s["image_shape"], seed=s["test_seed"])
    lap("data")
    # 2. training
    trainer = _train(s, images, labels, device=device, progress=progress, echo=echo)
    task = trainer.task
    loss_curve = trainer.save_loss_curve(out / "loss_curve.png")
    lap("train")
    # 3. held-out metrics
    heldout = trainer.evaluate(test_images, test_labels)
    echo(f"held-out images: IoU {heldout['iou']:.3f}, instance F1 {heldout['instance_f1']:.3f}")
    lap("evaluate")
    # 4. export
    package = out / "nuclei-unet2d.zip"
    echo(f"exporting the package to {package}")
    _export(trainer, s, package, heldout)
    lap("export")
    # 5. check
    echo("checking the package (format, reproduction, DeepImageJ rules)")
    report, check_md, check_json = _check(package, out)
    lap("check")
    # 6.-7. local zoo, load back by id, tiled prediction
    zoo_dir = out / "zoo"
    big_image, big_labels = synthetic_nuclei(1, (s["big_size"], s["big_size"]), seed=s["big_seed"])
    big_image, big_labels = big_image[0], big_labels[0]
    model_id, prob = _publish_and_predict(package, zoo_dir, big_image, s, device=device, echo=echo, lap=lap)
    instances = _instances(prob, task)
    big_metrics = _segmentation_metrics(prob, big_labels, task, instances)
    lap("predict")
    # 8. files
    image_tif = write_image(out / "image.tif", big_image.astype(np.float32), axes="yx")
    pred_tif = write_image(out / "prediction.tif", prob, axes="cyx")
    labels_tif = write_image(out / "labels.tif", instances.astype(np.int32), axes="yx")
    overview = _write_overview(out / "overview.png", big_image, big_labels, prob, instances, s["big_size"])
    lap("write")

    result = DemoResult(out_dir=out, package=package, prediction=pred_tif, labels=labels_tif, image=image_tif,
                        check_markdown=check_md, check_json=check_json, overview=overview, loss_curve=loss_curve,
                        zoo_dir=zoo_dir, model_id=model_id, check_passed=bool(report.passed),
                        heldout_metrics=heldout, big_image_metrics=big_metrics, big_size=s["big_size"],
                        timings=lap.timings)
    with atomic_path(out / "demo.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1, default=str), "utf-8")
    return result
