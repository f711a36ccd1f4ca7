"""Executors: run a tile plan through an engine, from array sources into array sinks.

The seam between a model and how its windows are read, batched and
stitched.  :class:`~bioimgzoo.runtime.model.Model` maps images onto its
inputs, plans each sample (:func:`~bioimgzoo.runtime.plan.plan_sample`),
hands :class:`Sample` objects to an executor and postprocesses what comes
back; everything between is the executor's.  An out-of-core executor
(zarr/Dask sources and sinks, windows scheduled in parallel) implements
the same protocol without touching ``Model``.

Protocol (:mod:`.protocol`)
---------------------------
``Region``
    ``tuple[slice, ...]``, one ``slice(start, stop)`` per axis.
``ArraySource``
    ``shape``, ``dtype``, ``read(region) -> ndarray``: one input of one
    sample in the model's axis order (batch 1).
``ArraySink``
    ``allocate(shape, dtype)`` once, then ``write(region, ndarray)``: one
    output of one sample; the regions written partition the output, each
    element written exactly once.
``Network``
    ``engine`` (:class:`~bioimgzoo.runtime.engines.Engine`), ``inputs`` and
    ``outputs`` (:class:`~bioimgzoo.descr.tensors.TensorSpec`),
    ``preprocessing`` (one :class:`~bioimgzoo.runtime.processing.Chain` per
    input), ``batch_limit``.
``Sample``
    ``inputs`` (id -> source), ``outputs`` (id -> sink), ``plan``
    (:class:`~bioimgzoo.runtime.plan.SamplePlan`: per tile, the region to
    read from each input with its padding, and the region of each output to
    write), ``stats`` (statistics known so far), ``nonfinite`` (inputs whose
    NaN/inf the statistics skip), ``context`` (the caller's).
``Executor``
    ``run(samples: Iterable[Sample]) -> Iterator[Sample]``: consumes samples
    lazily, computes each one's per-sample preprocessing statistics over its
    whole inputs, preprocesses every window, batches windows through the
    engine, writes each window's trusted part to the sinks, and yields the
    samples in input order as each completes.

Implementations, all behind ``run(samples)``: :class:`InMemoryExecutor`
(:mod:`.memory`) with :class:`NumpySource` / :class:`NumpySink` (:mod:`.arrays`);
:class:`StreamingExecutor` (:mod:`.streaming`: work units of whole output
chunks, bounded read/compute/write queues, statistics from a streaming
pre-pass, :mod:`.statistics`); ``DistributedExecutor`` (:mod:`.distributed`,
imported on use: the same work units as dask.distributed tasks).  Shared by
the streaming two: :mod:`.units` (region geometry, work units of a plan) and
:mod:`.record` (the log of finished units a resumed run verifies).
"""

from .arrays import NumpySink, NumpySource
from .memory import InMemoryExecutor
from .protocol import ArraySink, ArraySource, Executor, Network, Sample, whole
from .streaming import StreamingExecutor

__all__ = ["ArraySource", "ArraySink", "Network", "Sample", "Executor", "whole", "InMemoryExecutor",
           "NumpySource", "NumpySink", "StreamingExecutor"]
