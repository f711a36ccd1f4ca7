"""The executor protocol, driven directly: plain arrays, a fake engine with a known receptive field.

No package, no weights: the network is a small numpy convolution (radius
``R``, an asymmetric kernel so a window placed one pixel off is caught),
the tensors are written by hand, and every expected result is computed
here on the whole image.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bioimgzoo.descr.axes import AxisInfo
from bioimgzoo.descr.sizes import AxisSizes, SizeRef
from bioimgzoo.descr.tensors import TensorSpec
from bioimgzoo.errors import WeightsError
from bioimgzoo.runtime.executor import InMemoryExecutor, Network, NumpySink, NumpySource, Sample, whole
from bioimgzoo.runtime.plan import plan_sample
from bioimgzoo.runtime.processing import compile_processing

BCYX = (AxisInfo("batch", "batch"), AxisInfo("channel", "channel", 1), AxisInfo("y", "space"),
        AxisInfo("x", "space"))
R = 3  # receptive radius of the fake network
KERNEL = np.arange(1, (2 * R + 1) ** 2 + 1, dtype=np.float64).reshape(2 * R + 1, 2 * R + 1)
RNG = np.random.default_rng(5)


def conv(x: np.ndarray) -> np.ndarray:
    """'same' correlation with zero padding over the last two axes (exact on small integers)."""
    p = np.pad(x.astype(np.float64), [(0, 0)] * (x.ndim - 2) + [(R, R), (R, R)])
    h, w = x.shape[-2:]
    out = np.zeros(x.shape, np.float64)
    for dy, dx in itertools.product(range(2 * R + 1), range(2 * R + 1)):
        out += KERNEL[dy, dx] * p[..., dy:dy + h, dx:dx + w]
    return out.astype(np.float32)


class FakeEngine:
    """The Engine protocol over a numpy function; records the batch of every call."""

    format = "fake"
    device = "cpu"

    def __init__(self, fn=conv, n_outputs=1):
        self.fn, self.n_outputs = fn, n_outputs
        self.batches: list[tuple[int, ...]] = []  # input shape of each call

    def run(self, inputs):
        self.batches.append(inputs[0].shape)
        return [self.fn(inputs[0]) for _ in range(self.n_outputs)]


def specs(*, step=16, out_scale=1.0, halo=R, fixed=None):
    sizes = AxisSizes(fixed) if fixed else AxisSizes(16, step)
    scale = {"batch": 1.0, "channel": 1.0, "y": 1.0, "x": 1.0}
    inp = TensorSpec("raw", BCYX, {"batch": None, "channel": AxisSizes(1), "y": sizes, "x": sizes}, scale, {},
                     "float32")
    out = TensorSpec("out", BCYX, {"batch": None, "channel": AxisSizes(1), "y": SizeRef("raw", "y"),
                                   "x": SizeRef("raw", "x")},
                     {**scale, "y": out_scale, "x": out_scale}, {"y": halo, "x": halo}, "float32")
    return inp, out


def network(engine, inp, out, preprocessing=()):
    chain = compile_processing(list(preprocessing), tensor_id="raw", tensor_axes=inp.axis_ids)
    return Network(engine, (inp,), (out,), (chain,), batch_limit=64)


def image(h, w):
    return RNG.integers(0, 50, (1, 1, h, w)).astype(np.float32)


def sample(inp, out, x, *, tile=None, halo=None, sink=None, source=None, context=None):
    plan = plan_sample([inp], [out], {"raw": x.shape}, tile=tile, halo=halo)
    return Sample({"raw": source or NumpySource(x)}, {"out": sink or NumpySink()}, plan, context=context)


def run(net, samples, **options):
    return list(InMemoryExecutor(net, **options).run(samples))


# ------------------------------------------------------------------ stitching
@pytest.mark.parametrize("shape,tile", [((100, 90), 32), ((96, 80), 48), ((130, 100), {"y": 32, "x": 48})])
def test_tiled_prediction_equals_the_whole_image(shape, tile):
    inp, out = specs()
    x = image(*shape)
    engine = FakeEngine()
    (done,) = run(network(engine, inp, out), [sample(inp, out, x, tile=tile)])
    assert len(done.plan.tiles) > 1 and sum(b[0] for b in engine.batches) == len(done.plan.tiles)
    np.testing.assert_array_equal(done.outputs["out"].array, conv(x))


def test_a_halo_smaller_than_the_receptive_field_shows_seams():
    # the check above is not vacuous: without context at inner window edges the tiles differ
    inp, out = specs()
    x = image(100, 90)
    (done,) = run(network(FakeEngine(), inp, out), [sample(inp, out, x, tile=32, halo=0)])
    assert not np.array_equal(done.outputs["out"].array, conv(x))


def test_upsampling_output_is_stitched_at_its_own_scale():
    inp, out = specs(out_scale=0.5, halo=2 * R)  # two output pixels per input pixel; halo in output pixels

    def up(a):
        return np.repeat(np.repeat(conv(a), 2, axis=2), 2, axis=3)

    x = image(70, 100)
    (done,) = run(network(FakeEngine(up), inp, out), [sample(inp, out, x, tile=32)])
    assert done.outputs["out"].array.shape == (1, 1, 140, 200)
    np.testing.assert_array_equal(done.outputs["out"].array, up(x))


def test_small_image_is_padded_into_one_window_and_cropped_back():
    inp, out = specs(fixed=32)
    x = image(20, 25)
    engine = FakeEngine(lambda a: a.copy())
    (done,) = run(network(engine, inp, out), [sample(inp, out, x)], pad_mode="constant")
    assert engine.batches == [(1, 1, 32, 32)]
    np.testing.assert_array_equal(done.outputs["out"].array, x)
    assert done.outputs["out"].array.flags.c_contiguous  # a crop is copied, not a view of the padded window


def test_preprocessing_uses_whole_sample_statistics():
    from bioimageio.spec.model import v0_5

    inp, out = specs()
    x = image(100, 90)
    zmuv = v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=[v0_5.AxisId("y"),
                                                                                       v0_5.AxisId("x")]))
    net = network(FakeEngine(lambda a: a.copy()), inp, out, [zmuv])
    (done,) = run(net, [sample(inp, out, x, tile=32)])
    # per-window statistics would give each tile its own mean: the result would not be one normalisation
    mean, std = x.mean(axis=(2, 3), keepdims=True), x.std(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(done.outputs["out"].array, (x - mean) / (std + 1e-6), rtol=1e-5, atol=1e-5)
    assert {m.kind for m in done.stats} == {"mean", "std"}


# ------------------------------------------------------------------- batching
def test_windows_of_many_images_share_engine_batches():
    inp, out = specs()
    xs = [image(32, 32) for _ in range(5)]
    engine = FakeEngine()
    on_window = []
    done = run(network(engine, inp, out), [sample(inp, out, x, context=i) for i, x in enumerate(xs)],
               on_window=on_window.append)
    assert [b[0] for b in engine.batches] == [5] and on_window == [5]
    assert [d.context for d in done] == [0, 1, 2, 3, 4]
    for d, x in zip(done, xs):
        np.testing.assert_array_equal(d.outputs["out"].array, conv(x))


def test_a_new_window_shape_or_a_full_batch_sends_the_batch():
    inp, out = specs()
    xs = [image(32, 32), image(32, 32), image(48, 32), image(32, 32), image(32, 32), image(32, 32)]
    engine = FakeEngine()
    done = run(network(engine, inp, out), [sample(inp, out, x, context=i) for i, x in enumerate(xs)],
               batch_size=2)
    assert engine.batches == [(2, 1, 32, 32), (1, 1, 48, 32), (2, 1, 32, 32), (1, 1, 32, 32)]
    assert [d.context for d in done] == list(range(6))
    for d, x in zip(done, xs):
        np.testing.assert_array_equal(d.outputs["out"].array, conv(x))


def test_fixed_batch_model_runs_one_window_at_a_time():
    inp, out = specs()
    engine = FakeEngine()
    net = Network(engine, (inp,), (out,), network(engine, inp, out).preprocessing, batch_limit=1)
    run(net, [sample(inp, out, image(32, 32)) for _ in range(3)], batch_size=8)
    assert [b[0] for b in engine.batches] == [1, 1, 1]


def test_samples_are_read_lazily_and_yielded_as_they_complete():
    inp, out = specs()
    pulled = []

    def samples():
        for i in range(4):
            pulled.append(i)
            yield sample(inp, out, image(32, 32), context=i)

    it = InMemoryExecutor(network(FakeEngine(), inp, out), batch_size=1).run(samples())
    assert next(it).context == 0 and pulled == [0]  # the first result comes before the second image is read
    assert [d.context for d in it] == [1, 2, 3]


# ------------------------------------------------------ custom sources and sinks
class RecordingSink:
    """An ArraySink that counts how often each element is written and checks the protocol's order."""

    def __init__(self):
        self.allocations = []
        self.regions = []
        self.array = None
        self.count = None

    def allocate(self, shape, dtype):
        assert not self.regions, "allocate comes before any write"
        self.allocations.append((tuple(shape), np.dtype(dtype)))
        self.array = np.full(shape, np.nan, dtype)
        self.count = np.zeros(shape, np.int64)

    def write(self, region, data):
        assert all(s.start is not None and s.stop is not None for s in region)
        assert data.shape == tuple(s.stop - s.start for s in region)
        self.regions.append(region)
        self.array[region] = data
        self.count[region] += 1


class CopyingSource:
    """An ArraySource that is not numpy-backed from the executor's point of view: every read is a copy."""

    def __init__(self, array):
        self._a = array
        self.reads = []

    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    def read(self, region):
        assert all(0 <= s.start <= s.stop <= n for s, n in zip(region, self._a.shape))
        self.reads.append(region)
        return self._a[region].copy()


def test_custom_sink_gets_each_output_element_exactly_once():
    inp, out = specs()
    x = image(100, 90)
    sink = RecordingSink()
    (done,) = run(network(FakeEngine(), inp, out), [sample(inp, out, x, tile=32, sink=sink)])
    assert sink.allocations == [((1, 1, 100, 90), np.dtype("float32"))]
    assert len(sink.regions) == len(done.plan.tiles) > 1
    assert (sink.count == 1).all()
    np.testing.assert_array_equal(sink.array, conv(x))


def test_custom_source_is_read_one_window_at_a_time():
    inp, out = specs()
    x = image(100, 90)
    source = CopyingSource(x)
    (done,) = run(network(FakeEngine(), inp, out), [sample(inp, out, x, tile=32, source=source)])
    assert len(source.reads) == len(done.plan.tiles)  # no whole-image read: no sample statistics needed
    assert all(r[2].stop - r[2].start == 32 and r[3].stop - r[3].start == 32 for r in source.reads)
    np.testing.assert_array_equal(done.outputs["out"].array, conv(x))


def test_sample_statistics_read_the_whole_source_once():
    from bioimageio.spec.model import v0_5

    inp, out = specs()
    x = image(64, 64)
    source = CopyingSource(x)
    net = network(FakeEngine(lambda a: a.copy()), inp, out, [v0_5.ZeroMeanUnitVarianceDescr(
        kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=[v0_5.AxisId("y"), v0_5.AxisId("x")]))])
    (done,) = run(net, [sample(inp, out, x, tile=32, source=source)])
    assert source.reads[0] == whole(x.shape) and source.reads.count(whole(x.shape)) == 1


def test_numpy_sink_keeps_a_whole_window_without_copying():
    sink = NumpySink()
    data = np.arange(6.0).reshape(1, 2, 3)
    sink.allocate(data.shape, data.dtype)
    sink.write(whole(data.shape), data)
    assert sink.array is data


# --------------------------------------------------------------------- errors
def test_too_few_network_outputs_is_a_weights_error():
    inp, out = specs()
    net = Network(FakeEngine(n_outputs=0), (inp,), (out,), network(FakeEngine(), inp, out).preprocessing, 64)
    with pytest.raises(WeightsError, match="returned 0 outputs, the description declares 1"):
        run(net, [sample(inp, out, image(32, 32))])
