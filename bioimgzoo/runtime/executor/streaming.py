"""The streaming executor: images larger than memory, one work unit at a time.

It follows the *same* tile plan (:class:`~..plan.SamplePlan`) as
:class:`~.memory.InMemoryExecutor`, so every output pixel comes from the
same window and the result equals the in-memory one.  What differs is the
order and what is held:

* the output of a sample is cut into **work units**: boxes of whole output
  chunks (``work_unit`` input pixels per tiled axis; the zarr chunks, or
  the v3 shards, are made to fit them).  A unit takes every tile whose
  trusted output part falls in it, reads *one* input box (its region plus
  halo, the union of those tiles' windows), runs the windows through the
  engine in batches, crops each window's trusted part into the unit's
  buffer, postprocesses the buffer (pointwise ops only) and writes it: whole
  chunks, one writer per chunk, no locks needed;
* a tile whose trusted part spans two units is computed once and its output
  kept until the last unit needing it is done (:class:`SharedTiles`).  In
  row-major unit order that is about one row of tiles across the whole
  image, so all but :data:`SHARED_TILE_BYTES` of them (those needed
  latest) wait in ``.npy`` files on disk: memory does not grow with the
  image's width (measured before: +15 MB per doubling of the width through
  the shared fixture);
* reading, computing and writing run in three threads joined by bounded
  queues (:data:`QUEUE_DEPTH` units each), so memory holds a few units
  whatever the image size;
* per-sample statistics of the preprocessing come from a streaming pre-pass
  over the whole input (:mod:`.statistics`), before any window.

A :class:`UnitRecord` (``done`` log beside the output) lists finished work
units; a resumed run skips exactly those, a chunk's presence proves nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ... import config
from ...errors import WeightsError
from ..plan import Region, SamplePlan
from .memory import BATCH_VOXELS, MAX_BATCH, extract_window
from .protocol import ArraySource, Network, Sample
from .record import UnitRecord, own_folder, verify_units
from .statistics import streaming_sample_measures
from .units import WorkUnit, default_work_unit, intersect, plan_work_units, shift, union

log = logging.getLogger("bioimgzoo")

__all__ = ["StreamingExecutor", "compute_unit", "QUEUE_DEPTH", "SHARED_TILE_BYTES", "SharedTiles", "NanForInf",
           "release_freed_memory", "add_sample_statistics"]

#: units waiting between the reader and the engine, and between the engine and the writer
QUEUE_DEPTH = 1
#: bytes of shared tiles' outputs held in memory; the rest wait on disk (see :class:`SharedTiles`)
SHARED_TILE_BYTES = 8 << 20


class NanForInf:
    """A source whose inf values read as NaN (what the statistics of ``nan_policy='warn'`` skip)."""

    def __init__(self, source: ArraySource):
        self.source = source
        self.shape, self.dtype = source.shape, source.dtype
        self.chunks = getattr(source, "chunks", None)

    def read(self, region: Region) -> np.ndarray:
        x = np.asarray(self.source.read(region))
        return np.where(np.isinf(x), np.array(np.nan, x.dtype), x) if x.dtype.kind == "f" else x


# ------------------------------------------------------------------ one unit
class _BoxSource:
    """A box already read, addressed in the whole input's coordinates."""

    def __init__(self, data: np.ndarray, region: Region):
        self.data, self.origin = data, [r.start for r in region]

    def read(self, region: Region) -> np.ndarray:
        return self.data[shift(region, self.origin)]


def compute_unit(network: Network, plan: SamplePlan, unit: WorkUnit, boxes: Mapping[str, np.ndarray], *,
                 stats: Mapping, postprocessing: Sequence[Any] = (), batch_size: int | None = None,
                 pad_mode: str = "reflect", cache: Any = None, keep: Callable[[int], bool] | None = None,
                 on_window: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run one work unit: its tiles' windows through the engine, cropped into the unit's output boxes.

    ``boxes[input_id]`` is the input read over ``unit.reads[input_id]``.
    ``cache`` (tile index -> trusted outputs: a dict or :class:`SharedTiles`)
    lends and keeps outputs of tiles other units share; ``keep(tile)`` says
    whether to keep one.
    Returns the postprocessed output box of each output, by id.
    """
    sources = {iid: _BoxSource(boxes[iid], unit.reads[iid]) for iid in boxes}
    buffers: dict[str, np.ndarray] = {}
    batch = batch_size or max(1, min(network.batch_limit, MAX_BATCH, BATCH_VOXELS // max(
        1, max(int(np.prod(s)) for s in plan.window_shapes.values()))))
    batch = min(batch, network.batch_limit)

    def place(tile_index: int, parts: Mapping[str, tuple[Region, np.ndarray]]) -> None:
        for oid, (target, data) in parts.items():
            region = unit.writes[oid]
            if oid not in buffers:
                buffers[oid] = np.empty(tuple(r.stop - r.start for r in region), data.dtype)
            inter = intersect(target, region)
            if any(r.stop <= r.start for r in inter):
                continue
            buffers[oid][shift(inter, [r.start for r in region])] = data[shift(inter, [t.start for t in target])]

    todo = []
    for ti in unit.tiles:
        if cache is not None and ti in cache:
            place(ti, cache[ti])
        else:
            todo.append(ti)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        feeds = []
        for spec, chain in zip(network.inputs, network.preprocessing):
            ws = []
            for ti in chunk:
                w = extract_window(sources[spec.id], plan.tiles[ti].reads[spec.id], pad_mode)
                if chain.steps:
                    w = chain(w, stats)
                elif w.dtype != spec.dtype:
                    w = w.astype(spec.dtype)
                ws.append(w)
            feeds.append(ws[0] if len(ws) == 1 else np.concatenate(ws, axis=0))
        outs = network.engine.run(feeds)
        if len(outs) < len(network.outputs):
            raise WeightsError(f"the network returned {len(outs)} outputs, the description declares "
                               f"{len(network.outputs)}")
        for i, ti in enumerate(chunk):
            parts = {}
            for spec, arr in zip(network.outputs, outs):
                part = arr[i:i + 1] if spec.has_batch else arr
                write = plan.tiles[ti].writes[spec.id]
                parts[spec.id] = (write.target, part[write.source])
            place(ti, parts)
            if cache is not None and keep is not None and keep(ti):
                cache[ti] = {k: (t, np.array(d)) for k, (t, d) in parts.items()}  # a copy: not the batch
        if on_window:
            on_window(len(chunk))
    result = {}
    for spec, chain in zip(network.outputs, postprocessing or [None] * len(network.outputs)):
        buf = buffers[spec.id]
        result[spec.id] = chain(buf, stats) if chain is not None and chain.steps else buf
    return result


# ------------------------------------------------------------ shared tiles
class SharedTiles:
    """Outputs of tiles that several work units use, from the unit computing them to the last one using them.

    ``users[tile]``: the positions (in the order units are computed) of
    the units using ``tile``.  At most ``budget`` bytes (default
    :data:`SHARED_TILE_BYTES`) stay in memory;
    beyond that the entries needed latest are written to ``folder`` as
    ``.npy`` files (Belady's choice: what is spilled is what would be
    read back last) and read back when their next unit comes.  Used by one
    thread (the engine's).  :meth:`close` removes the files.
    """

    def __init__(self, users: Mapping[int, Sequence[int]], *, budget: int | None = None,
                 folder: str | Path | None = None):
        self._users = {ti: sorted(pos) for ti, pos in users.items()}
        self._budget = int(SHARED_TILE_BYTES if budget is None else budget)
        self._folder_arg = folder
        self._folder: Path | None = None
        self._held: dict[int, dict] = {}  # tile -> {output id: (target region, data)}
        self._bytes = 0
        self._spilled: dict[int, dict[str, tuple[Region, Path]]] = {}
        self.spilled = 0  # entries written to disk so far (for tests and benchmarks)
        self._now = 0  # position of the unit running

    def keep(self, tile: int) -> bool:
        """Whether ``tile``'s output is needed by a unit after the one computing it."""
        return len(self._users.get(tile, ())) > 1

    def __contains__(self, tile: int) -> bool:
        return tile in self._held or tile in self._spilled

    def __getitem__(self, tile: int) -> dict:
        if tile in self._held:
            return self._held[tile]
        return {oid: (target, np.load(path)) for oid, (target, path) in self._spilled[tile].items()}

    def __setitem__(self, tile: int, parts: dict) -> None:
        self._held[tile] = parts
        self._bytes += sum(d.nbytes for _t, d in parts.values())
        while self._bytes > self._budget and self._held:
            self._spill(max(self._held, key=self._next_use))

    def _next_use(self, tile: int) -> int:
        later = [p for p in self._users.get(tile, ())[:2] if p > self._now]  # positions <= now: running
        return later[0] if later else -1

    def _spill(self, tile: int) -> None:
        if self._folder is None:
            import tempfile

            if self._folder_arg is not None:
                self._folder = Path(self._folder_arg)
                if self._folder.is_symlink():  # planted in the store: removed, never followed
                    self._folder.unlink()
                elif self._folder.exists():  # an interrupted run's: its tiles belong to other positions
                    import shutil

                    shutil.rmtree(self._folder)
                self._folder.mkdir(parents=True)
            else:
                self._folder = Path(tempfile.mkdtemp(prefix="bioimgzoo-shared-"))
        parts = self._held.pop(tile)
        saved = {}
        for k, (oid, (target, data)) in enumerate(parts.items()):
            path = self._folder / f"{tile}-{k}.npy"
            np.save(path, data)
            saved[oid] = (target, path)
            self._bytes -= data.nbytes
        self._spilled[tile] = saved
        self.spilled += 1

    def unit_done(self, tiles: Iterable[int]) -> None:
        """The unit now running (the first position of each of its ``tiles``) is done: drop what nobody needs."""
        self._now += 1
        for ti in tiles:
            pos = self._users.get(ti)
            if pos:
                pos.pop(0)
            if pos:
                continue
            self._users.pop(ti, None)
            parts = self._held.pop(ti, None)
            if parts is not None:
                self._bytes -= sum(d.nbytes for _t, d in parts.values())
            for _target, path in self._spilled.pop(ti, {}).values():
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._held.clear()
        self._spilled.clear()
        self._bytes = 0
        if self._folder is not None:
            import shutil

            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


_LIBC: list = []


def _libc() -> Any:
    if not _LIBC:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            _LIBC.append(libc if hasattr(libc, "malloc_trim") else None)
        except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): their allocators return memory
            _LIBC.append(None)
    return _LIBC[0]


def release_freed_memory() -> None:
    """Hand memory freed by the last work unit back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Why: a unit's buffers (MBs each) are freed by other threads than the
    ones that allocated them, and glibc keeps freed blocks in per-thread
    arenas.  Costs well under a millisecond per unit.
    """
    libc = _libc()
    if libc is not None and config.malloc_trim():
        libc.malloc_trim(0)


# ----------------------------------------------------------------- executor
_END = object()


def add_sample_statistics(network: Network, sample: Sample) -> None:
    """Add the per-sample statistics ``network``'s preprocessing needs and ``sample.stats`` lacks.

    Streamed over the whole inputs (:mod:`.statistics`); values the
    sample's ``nonfinite`` inputs hold as inf are skipped like NaN.
    """
    measures = {m for c in network.preprocessing for m in c.required_measures
                if m.scope == "sample" and m not in sample.stats}
    if measures:
        sources = {k: (NanForInf(s) if k in sample.nonfinite else s) for k, s in sample.inputs.items()}
        sample.stats = {**sample.stats, **streaming_sample_measures(
            measures, sources, {t.id: t.axis_ids for t in network.inputs}, ignore_nan=bool(sample.nonfinite))}


class StreamingExecutor:
    """Runs samples whose inputs and outputs live on disk, work unit by work unit.

    Parameters
    ----------
    network : Network
    work_unit : int or dict, optional
        Input pixels per tiled axis of a work unit (default
        :func:`default_work_unit`); the sinks' chunks must tile it.
    postprocessing : sequence of Chain, optional
        Per output, applied to each unit before it is written (pointwise:
        statistics come from the sample's ``stats``).
    batch_size, pad_mode :
        As for :class:`~.memory.InMemoryExecutor`.
    record : UnitRecord, optional
        Finished units to skip (those it lists that the sinks still hold:
        :func:`verify_units`), and where to log the ones finished now; the
        sinks' ``write`` then returns the :func:`array_digest` of what it
        stored, and ``stored_digest(region)`` reads it back.
    on_unit : callable, optional
        ``on_unit(sample_index, unit, computed)`` after each unit is written
        (``computed`` False for a unit skipped as already done).
    """

    def __init__(self, network: Network, *, work_unit: int | Mapping[str, int] | None = None,
                 postprocessing: Sequence[Any] = (), batch_size: int | None = None, pad_mode: str = "reflect",
                 record: UnitRecord | None = None, on_unit: Callable[..., None] | None = None,
                 on_window: Callable[[int], None] | None = None):
        self.network = network
        self.work_unit = work_unit
        self.postprocessing = tuple(postprocessing)
        self.batch_size = batch_size
        self.pad_mode = pad_mode
        self.record = record
        self.on_unit = on_unit
        self.on_window = on_window
        self.units_computed = 0

    def add_statistics(self, sample: Sample) -> None:
        """The sample's per-sample statistics, from a streaming pass over its whole inputs."""
        add_sample_statistics(self.network, sample)

    def units(self, sample: Sample) -> list[WorkUnit]:
        unit = self.work_unit or default_work_unit(len(sample.plan.image_len))
        return plan_work_units(sample.plan, unit, output_axes={o.id: o.axis_ids for o in self.network.outputs})

    def run(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        """Predict each sample into its sinks; yields it when its last unit is written."""
        for sample in samples:
            self.add_statistics(sample)
            self._run_sample(sample)
            yield sample

    def _pending(self, sample: Sample) -> tuple[list[WorkUnit], dict[int, list[int]]]:
        """The units still to compute (each reading only the tiles it is first to need), and each tile's users."""
        units, plan, number = self.units(sample), sample.plan, sample.index
        if self.record is not None:  # resuming: what the record claims counts only when the store still holds it
            verify_units(self.record, number, units, sample.outputs)
        todo = [u for u in units if not (self.record and self.record.is_done(number, u.index))]
        for u in units:
            if u not in todo and self.on_unit:
                self.on_unit(number, u, False)
        # which pending units use each tile: a shared tile's output is kept until its last one
        users: dict[int, list[int]] = {}
        for pos, u in enumerate(todo):
            for ti in u.tiles:
                users.setdefault(ti, []).append(pos)
        # each tile is computed by the first pending unit that needs it: that unit reads its window
        seen: set[int] = set()
        own = []
        for u in todo:
            mine = [ti for ti in u.tiles if ti not in seen]
            seen.update(mine)
            reads = {iid: union([plan.tiles[ti].reads[iid].region for ti in mine]) for iid in u.reads} if mine else {}
            own.append(replace(u, reads=reads))
        return own, users

    def _run_sample(self, sample: Sample) -> None:
        todo, users = self._pending(sample)
        cache = SharedTiles(users, folder=own_folder(self.record.folder) / "shared" if self.record is not None
                            else None)
        pipe = _Pipeline(self, sample)
        try:
            pipe.start(todo)
            for u, boxes in pipe.inputs():
                outs = compute_unit(self.network, sample.plan, u, boxes, stats=sample.stats,
                                    postprocessing=self.postprocessing, batch_size=self.batch_size,
                                    pad_mode=self.pad_mode, cache=cache, keep=cache.keep, on_window=self.on_window)
                cache.unit_done(u.tiles)
                del boxes
                if not pipe.output(u, outs):
                    break
        except BaseException as e:
            pipe.fail(e)
        finally:
            pipe.finish()
            cache.close()
        pipe.raise_failure()


class _Pipeline:
    """The reader and writer threads of one sample, joined to the engine's thread by bounded queues."""

    def __init__(self, executor: StreamingExecutor, sample: Sample):
        self.ex, self.sample = executor, sample
        self.read_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.write_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.failure: list[BaseException] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def fail(self, e: BaseException) -> None:
        self.failure.append(e)
        self.stop.set()

    def _put(self, q: queue.Queue, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _reader(self, todo: Sequence[WorkUnit]) -> None:
        try:
            for u in todo:
                boxes = {iid: np.asarray(self.sample.inputs[iid].read(u.reads[iid])) for iid in u.reads}
                if not self._put(self.read_q, (u, boxes)):
                    return
        except BaseException as e:  # handed to the engine's thread
            self.fail(e)
        self._put(self.read_q, _END)

    def _writer(self) -> None:
        ex, sample = self.ex, self.sample
        try:
            while True:
                item = self.write_q.get()
                if item is _END:
                    return
                u, outs = item
                digests = {oid: sample.outputs[oid].write(u.writes[oid], data) for oid, data in outs.items()}
                if ex.record is not None:
                    ex.record.mark(sample.index, u.index, digests)
                ex.units_computed += 1
                release_freed_memory()
                if ex.on_unit:
                    ex.on_unit(sample.index, u, True)
        except BaseException as e:
            self.fail(e)
            while self.write_q.get() is not _END:  # drain, so the engine thread never blocks
                pass

    def start(self, todo: Sequence[WorkUnit]) -> None:
        self.threads = [threading.Thread(target=self._reader, args=(todo,), daemon=True, name="bioimgzoo-read"),
                        threading.Thread(target=self._writer, daemon=True, name="bioimgzoo-write")]
        for t in self.threads:
            t.start()

    def inputs(self) -> Iterator[tuple[WorkUnit, dict]]:
        """Units with their input boxes, as the reader delivers them, until it ends or something failed."""
        while True:
            try:
                item = self.read_q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is _END:
                return
            yield item

    def output(self, u: WorkUnit, outs: dict) -> bool:
        return self._put(self.write_q, (u, outs))

    def finish(self) -> None:
        self.write_q.put(_END)
        for t in self.threads:
            t.join()

    def raise_failure(self) -> None:
        if self.failure:
            raise self.failure[0]
