"""Batching across requests: windows of concurrent predictions merged into one engine call, results split back."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.serve.batcher import BatchingEngine, batch_limit


class Recorder:
    """An engine that records the batch sizes it was called with (output: input * 2, row-wise)."""

    format, device = "fake", "cpu"

    def __init__(self, fail_on=None):
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.session = "original"

    def run(self, inputs):
        x = inputs[0]
        self.sizes.append(x.shape[0])
        if self.fail_on is not None and np.any(x == self.fail_on):
            raise ValueError("poisoned window")
        return [x * 2]


def run_threads(n, fn):
    results, errors = [None] * n, [None] * n

    def go(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            errors[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller never got its result"
    return results, errors


@pytest.mark.parametrize("weights", ["onnx", "torchscript"])
def test_concurrent_predictions_are_merged_and_equal_in_process(tiny, weights):
    """Each request keeps its own statistics (zero mean, unit variance per image): results equal, bit for bit."""
    model = bioimgzoo.load(tiny, weights=weights)
    images = [np.random.default_rng(i).random((96, 80), dtype=np.float32) * (i + 1) * 50 for i in range(12)]
    expected = [model.predict(im, axes="yx") for im in images]
    engine = BatchingEngine(model.engine, row_limit=batch_limit(model), max_calls=12, max_delay=0.2)
    model.engine = engine
    gate = threading.Barrier(12)

    def one(i):
        with engine.in_flight():
            gate.wait()
            return model.predict(images[i], axes="yx")

    results, errors = run_threads(12, one)
    assert errors == [None] * 12
    assert engine.calls == 12 and engine.executions < 12  # merged
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)  # batched == unbatched exactly (ONNX and torch on CPU)
    engine.close()


def test_a_lone_call_never_waits_for_the_delay():
    rec = Recorder()
    engine = BatchingEngine(rec, row_limit=None, max_calls=8, max_delay=3600)  # an hour: a wait would hang the test
    with engine.in_flight():
        out = engine.run([np.ones((2, 3), np.float32)])
    np.testing.assert_array_equal(out[0], np.full((2, 3), 2, np.float32))
    # unregistered callers count as alone too
    _, errors = run_threads(1, lambda i: engine.run([np.ones((1, 3), np.float32)]))
    assert errors == [None]
    engine.close()


def test_calls_of_other_shapes_are_never_merged_and_rows_go_back_to_their_caller():
    rec = Recorder()
    engine = BatchingEngine(rec, row_limit=None, max_calls=16, max_delay=0.5)
    shapes = [(1, 4), (2, 4), (1, 5), (3, 4), (1, 5), (2, 4)]
    gate = threading.Barrier(len(shapes))

    def one(i):
        x = np.full(shapes[i], i, np.float32)
        with engine.in_flight():
            gate.wait()
            return engine.run([x])

    results, errors = run_threads(len(shapes), one)
    assert errors == [None] * len(shapes)
    for i, (r, shape) in enumerate(zip(results, shapes)):
        np.testing.assert_array_equal(r[0], np.full(shape, 2 * i, np.float32))
    assert sum(rec.sizes) == sum(s[0] for s in shapes) and len(rec.sizes) < len(shapes)
    engine.close()


def test_a_failing_merged_call_gives_each_caller_its_own_result_or_error():
    rec = Recorder(fail_on=3.0)
    engine = BatchingEngine(rec, row_limit=None, max_calls=8, max_delay=0.5)
    gate = threading.Barrier(4)

    def one(i):
        with engine.in_flight():
            gate.wait()
            return engine.run([np.full((1, 2), float(i), np.float32)])

    results, errors = run_threads(4, one)
    assert isinstance(errors[3], ValueError) and "poisoned" in str(errors[3])
    for i in range(3):
        assert errors[i] is None
        np.testing.assert_array_equal(results[i][0], np.full((1, 2), 2.0 * i, np.float32))
    engine.close()


def test_batch_limits_max_calls_one_and_fixed_batch_models(tiny, zoo_fixture):
    rec = Recorder()
    off = BatchingEngine(rec, row_limit=None, max_calls=1, max_delay=0.5)
    gate = threading.Barrier(4)

    def one(i):
        with off.in_flight():
            gate.wait()
            return off.run([np.ones((1, 2), np.float32)])

    run_threads(4, one)
    assert rec.sizes == [1, 1, 1, 1]  # --max-batch 1: never merged
    off.close()
    assert batch_limit(bioimgzoo.load(tiny)) is None
    assert batch_limit(bioimgzoo.load(zoo_fixture)) == 1  # the fixture declares batch size 1: never merged


def test_attributes_reach_the_wrapped_engine():
    rec = Recorder()
    engine = BatchingEngine(rec, row_limit=None)
    assert engine.session == "original" and engine.format == "fake"
    engine.session = "replaced"  # e.g. OnnxEngine.set_threads swapping an onnxruntime session
    assert rec.session == "replaced"
    engine.threads = 2
    assert rec.threads == 2
    engine.close()
    with pytest.raises(RuntimeError, match="unloaded"):
        engine.run([np.ones((1, 2), np.float32)])
