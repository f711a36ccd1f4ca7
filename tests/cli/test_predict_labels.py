"""``bioimgzoo predict --labels`` on the demo's kind of model: nuclei labels good enough to count."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from bioimgzoo.cli import main

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """The demo's network and task (foreground + boundary U-Net), smaller and trained briefly, exported.

    The demo's own settings (depth 3, base 16, 300 steps) take minutes on 2 CPU cores; these reach
    the same kind of model in well under two minutes.
    """
    from bioimgzoo.train.demo import DEMO_SETTINGS
    from bioimgzoo.train.data import synthetic_nuclei
    from bioimgzoo.train.nets import UNet2d
    from bioimgzoo.train.tasks import SegmentationTask
    from bioimgzoo.train.trainer import Trainer

    images, labels = synthetic_nuclei(8, (128, 128), seed=DEMO_SETTINGS["seed"])
    torch.manual_seed(0)
    trainer = Trainer(UNet2d(1, 2, depth=2, base=8), SegmentationTask(boundary=True), patch_size=64,
                      batch_size=8, lr=DEMO_SETTINGS["lr"], seed=0, device="cpu", eval_every=150, progress=False)
    trainer.fit(images, labels, steps=150)
    out = tmp_path_factory.mktemp("demo") / "nuclei.zip"
    trainer.export(out, name="Demo nuclei labels test", description="The demo's network, trained briefly.",
                   authors=["Test Author"], id="demo-labels-test", weights=("onnx",), test=False)
    return out, trainer.task


@pytest.mark.slow
def test_labels_reach_instance_f1_on_the_demo_test_image(demo_model, tmp_path):
    from bioimgzoo.train.data import synthetic_nuclei
    from bioimgzoo.train.demo import DEMO_SETTINGS, _instances
    from bioimgzoo.train.metrics import instance_f1

    package, task = demo_model
    image, truth = synthetic_nuclei(1, DEMO_SETTINGS["image_shape"], seed=DEMO_SETTINGS["test_seed"])
    tifffile.imwrite(tmp_path / "nuclei.tif", image[0])
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(package), str(tmp_path / "nuclei.tif"), "-o", str(out), "--labels"])
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(out / "nuclei_labels.tif") as t:
        assert t.is_imagej and t.series[0].axes == "YX" and t.series[0].dtype == np.uint16
        labels = t.series[0].asarray()
    f1 = instance_f1(labels, truth[0])
    assert f1 >= 0.85, f"instance F1 {f1:.3f}"
    # the demo turns probabilities into nuclei with the very same code
    prob = tifffile.imread(out / "nuclei_output.tif")
    np.testing.assert_array_equal(_instances(prob, task), labels)
    # a higher threshold keeps fewer foreground pixels, never more
    r = CliRunner().invoke(main, ["predict", str(package), str(tmp_path / "nuclei.tif"), "-o", str(tmp_path / "t9"),
                                  "--labels", "--threshold", "0.9"])
    assert r.exit_code == 0, r.output
    assert (tifffile.imread(tmp_path / "t9" / "nuclei_labels.tif") > 0).sum() <= (labels > 0).sum()


def test_labels_refused_for_a_model_without_probabilities(two_channel_pkg, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 16, 16), np.float32), metadata={"axes": "CYX"})
    r = CliRunner().invoke(main, ["predict", str(two_channel_pkg), str(tmp_path / "a.tif"), "-o", str(tmp_path / "o"),
                                  "--labels"])
    assert r.exit_code == 1 and "--labels needs an output of foreground" in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
