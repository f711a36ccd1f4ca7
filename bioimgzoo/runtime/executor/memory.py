"""The in-memory executor: windows cut from array sources, batched through the engine, stitched into sinks.

For one predict call :class:`InMemoryExecutor` takes samples one at a time
(lazily, so images are read only as they are needed) and for each:

1. computes the per-sample statistics of the preprocessing over the
   *whole* raw inputs (as bioimageio.core does), never per window;
2. cuts one window per tile of its plan (:class:`~..plan.SamplePlan`),
   padding where the window reaches past the image (``pad_mode``), runs the
   preprocessing on it and queues it;
3. runs queued windows of equal shape, from one sample or many, through the
   engine in batches: a batch is sent when it is full or when the next
   window's shape differs;
4. writes each window's trusted output part into the sample's sinks.

Samples come back in the order they went in, each as soon as all of its
windows are written.  Postprocessing (which needs the whole stitched
output) is the caller's.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ...errors import InputError, WeightsError
from .. import processing
from ..plan import Read, TileIO
from .protocol import ArraySource, Network, Sample, whole

log = logging.getLogger("bioimgzoo")

__all__ = ["InMemoryExecutor", "BATCH_VOXELS", "MAX_BATCH", "extract_window"]

#: default number of voxels per engine batch (windows x window voxels)
BATCH_VOXELS = 1 << 20
#: most windows per engine batch when the batch size is chosen automatically
MAX_BATCH = 64


@dataclass(eq=False)
class _Running:
    """A sample whose windows are queued or running."""

    sample: Sample
    remaining: int  # windows not yet written


class InMemoryExecutor:
    """Streams samples through windows, engine batches and stitching (one predict call).

    Parameters
    ----------
    network : Network
        Engine, tensors and preprocessing.
    batch_size : int, optional
        Windows per engine call (lowered to the network's batch limit);
        default: as many as hold about :data:`BATCH_VOXELS` voxels, at most
        :data:`MAX_BATCH`.
    pad_mode : str
        numpy.pad mode for windows reaching past the image; ``reflect``
        and ``symmetric`` fall back to what numpy can do when the image is
        shorter than the padding.
    on_window : callable, optional
        Called after every engine call with the number of windows it ran.
    """

    def __init__(self, network: Network, *, batch_size: int | None = None, pad_mode: str = "reflect",
                 on_window: Callable[[int], None] | None = None):
        self.network = network
        if batch_size is not None:
            if batch_size < 1:
                raise InputError(f"batch_size must be at least 1, got {batch_size}")
            if network.batch_limit == 1 and batch_size > 1:
                log.info("this model takes one sample at a time: batch_size %d lowered to 1", batch_size)
            batch_size = min(int(batch_size), network.batch_limit)
        self.batch_size = batch_size
        self.pad_mode = pad_mode
        self.on_window = on_window
        self._sample_measures = {m for c in network.preprocessing for m in c.required_measures
                                 if m.scope == "sample"}
        self._axes = {t.id: t.axis_ids for t in network.inputs}
        # (running sample, tile, preprocessed windows by input id), all of one window shape
        self._queue: list[tuple[_Running, TileIO, dict[str, np.ndarray]]] = []
        self._queue_key: tuple | None = None

    def run(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        """Predict ``samples`` (see :class:`~.protocol.Executor`); yields them, in order, when complete."""
        pending: deque[_Running] = deque()
        for sample in samples:
            self._add_sample_statistics(sample)
            running = _Running(sample, len(sample.plan.tiles))
            pending.append(running)
            self._enqueue(running)
            # a batch is sent only when the next sample could not join it: yield what is complete
            while pending and pending[0].remaining == 0:
                yield pending.popleft().sample
        self._flush()
        while pending:
            running = pending.popleft()
            assert running.remaining == 0
            yield running.sample

    def _add_sample_statistics(self, sample: Sample) -> None:
        if not self._sample_measures:
            return
        raw = {k: src.read(whole(src.shape)) for k, src in sample.inputs.items()}
        bad = sample.nonfinite
        # with non-finite values kept (nan_policy "warn") the statistics skip them (inf too, as NaN)
        sample.stats = {**sample.stats, **processing.compute_sample_measures(
            self._sample_measures, processing.nan_for_nonfinite(raw, bad) if bad else raw, self._axes,
            ignore_nan=bool(bad))}

    def _batch_for(self, running: _Running) -> int:
        if self.batch_size is not None:
            return self.batch_size
        voxels = max(1, max(int(np.prod(s)) for s in running.sample.plan.window_shapes.values()))
        return max(1, min(self.network.batch_limit, MAX_BATCH, BATCH_VOXELS // voxels))

    def _enqueue(self, running: _Running) -> None:
        net = self.network
        sample = running.sample
        key = sample.plan.key
        batch = self._batch_for(running)
        for tile in sample.plan.tiles:
            windows = {}
            for spec, chain in zip(net.inputs, net.preprocessing):
                w = extract_window(sample.inputs[spec.id], tile.reads[spec.id], self.pad_mode)
                if chain.steps:
                    w = chain(w, sample.stats)  # the network takes what preprocessing makes
                elif w.dtype != spec.dtype:
                    w = w.astype(spec.dtype)  # no preprocessing: the declared type is the network's
                windows[spec.id] = w
            if self._queue and (self._queue_key != key or len(self._queue) >= batch):
                self._flush()
            self._queue_key = key
            self._queue.append((running, tile, windows))
            if len(self._queue) >= batch:
                self._flush()

    def _flush(self) -> None:
        if not self._queue:
            return
        net = self.network
        queue, self._queue = self._queue, []
        if len(queue) == 1:
            feeds = [queue[0][2][t.id] for t in net.inputs]
        else:
            feeds = [np.concatenate([q[2][t.id] for q in queue], axis=0) for t in net.inputs]
        outs = net.engine.run(feeds)
        if len(outs) < len(net.outputs):
            raise WeightsError(f"the network returned {len(outs)} outputs, the description declares "
                               f"{len(net.outputs)}")
        for i, (running, tile, _windows) in enumerate(queue):
            sample = running.sample
            first = running.remaining == len(sample.plan.tiles)
            for spec, arr in zip(net.outputs, outs):
                part = arr[i:i + 1] if spec.has_batch else arr
                sink = sample.outputs[spec.id]
                write = tile.writes[spec.id]
                if write is None:  # data-dependent size: the plan has one window, taken as it is
                    sink.allocate(part.shape, part.dtype)
                    sink.write(whole(part.shape), part)
                    continue
                if first:
                    sink.allocate(sample.plan.out_shapes[spec.id], part.dtype)
                sink.write(write.target, part[write.source])
            running.remaining -= 1
        if self.on_window:
            self.on_window(len(queue))


def extract_window(source: ArraySource, read: Read, pad_mode: str) -> np.ndarray:
    """The window of ``source`` for one tile, padded where it reaches past the image."""
    out = source.read(read.region)
    if read.pad is None:
        return out
    pads = read.pad
    mode = pad_mode
    if mode in ("reflect", "symmetric") and any(p[1] >= s for p, s in zip(pads, out.shape) if p[1]):
        # numpy cannot reflect past the far edge of a short axis: mirror with the edge, else repeat it
        mode = "symmetric" if all(p[1] <= s for p, s in zip(pads, out.shape) if p[1]) else "edge"
    return np.pad(out, pads, mode=mode)
