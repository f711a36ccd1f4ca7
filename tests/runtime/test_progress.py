"""Progress over tiles: totals known as each image is planned, windows counted as they run."""

from __future__ import annotations

import numpy as np

import bioimgzoo


def test_on_plan_totals_equal_the_windows_run(zoo_fixture):
    model = bioimgzoo.load(zoo_fixture, weights="onnx")
    planned, ran = [], []
    images = [np.random.rand(1000, 900).astype("float32"), np.random.rand(512, 512).astype("float32")]
    outs = list(model.iter_predict(images, axes="yx", on_plan=planned.append, on_window=ran.append))
    assert len(outs) == 2
    # 1000x900 through 512 windows with halo 32 needs 3 x 2 windows; 512x512 one
    assert planned == [6, 1]
    assert sum(ran) == 7


def test_predict_with_progress_gives_the_same_result(zoo_fixture):
    model = bioimgzoo.load(zoo_fixture, weights="onnx")
    image = np.random.rand(700, 600).astype("float32")
    np.testing.assert_array_equal(model.predict(image, axes="yx", progress=True),
                                  model.predict(image, axes="yx"))
