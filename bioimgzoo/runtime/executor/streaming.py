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

import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..._files import user_secret
from ...errors import InputError, WeightsError
from ..plan import Region, SamplePlan
from .memory import BATCH_VOXELS, MAX_BATCH, _extract
from .protocol import ArraySource, Network, Sample
from .statistics import streaming_sample_measures

log = logging.getLogger("bioimgzoo")

__all__ = ["StreamingExecutor", "WorkUnit", "plan_work_units", "compute_unit", "UnitRecord", "Progress",
           "array_digest", "verify_units", "RECORD_VERSION",
           "QUEUE_DEPTH", "SHARED_TILE_BYTES", "SharedTiles", "default_work_unit", "NanForInf", "package_key",
           "set_engine_threads", "release_freed_memory", "add_sample_statistics"]

#: units waiting between the reader and the engine, and between the engine and the writer
QUEUE_DEPTH = 1
#: bytes of shared tiles' outputs held in memory; the rest wait on disk (see :class:`SharedTiles`)
SHARED_TILE_BYTES = 8 << 20


def default_work_unit(n_tiled: int) -> int:
    """Input pixels per tiled axis of a work unit: 1024 (2D) / 128 (3D).

    Small units keep memory flat; tiles shared by neighbouring units are
    computed once, in one process and on a cluster alike (there the owner
    of a shared tile saves its output for the neighbour: see
    :mod:`.distributed`), so a cluster gains nothing from larger units.
    """
    return {1: 1 << 20, 2: 1024, 3: 128}.get(n_tiled, 32)


@dataclass(frozen=True)
class WorkUnit:
    """One work unit: the tiles it runs, the input box it reads, the output box it writes."""

    index: int
    tiles: tuple[int, ...]  # indices into plan.tiles
    reads: Mapping[str, Region]  # input id -> box read once (union of the tiles' windows)
    writes: Mapping[str, Region]  # output id -> box of the output (model layout) it writes
    pixels: int  # input pixels of the unit's own box (for throughput)


def plan_work_units(plan: SamplePlan, unit: int | Mapping[str, int], *,
                    output_axes: Mapping[str, Sequence[str]]) -> list[WorkUnit]:
    """Cut a sample's output into work units of ``unit`` input pixels per tiled axis (row-major order).

    ``output_axes``: the axis ids of each output (the plan keeps only shapes).
    """
    if any(w is None for t in plan.tiles for w in t.writes.values()):
        raise InputError("the model's output size depends on the data, so it cannot be streamed in work units: "
                         "predict this image in memory")
    tiled = list(plan.image_len)
    size = {a: int(unit.get(a, plan.image_len[a]) if isinstance(unit, Mapping) else unit) for a in tiled}
    for a in tiled:
        if size[a] < 1:
            raise InputError(f"work unit {size[a]} on axis '{a}' is not valid: pass at least 1 pixel")
        for out, links in plan.out_links.items():
            for _oa, (ia, f, _off) in links.items():
                if ia == a and (size[a] * f).denominator != 1:
                    raise InputError(f"work unit {size[a]} on axis '{a}' does not map onto whole pixels of output "
                                     f"'{out}' (scale {f}): pass a multiple of {f.denominator}")
    bounds = {a: list(range(0, plan.image_len[a], size[a])) + [plan.image_len[a]] for a in tiled}
    import itertools

    units = []
    for combo in itertools.product(*[range(len(bounds[a]) - 1) for a in tiled]):
        box = {a: (bounds[a][k], bounds[a][k + 1]) for a, k in zip(tiled, combo)}
        writes = {oid: _unit_out_region(plan, oid, box, output_axes[oid]) for oid in plan.out_shapes}
        tiles = tuple(i for i, t in enumerate(plan.tiles)
                      if any(_overlap(t.writes[oid].target, writes[oid]) for oid in writes))
        reads = {iid: _union([plan.tiles[i].reads[iid].region for i in tiles]) for iid in plan.window_shapes}
        units.append(WorkUnit(len(units), tiles, reads, writes, math.prod(hi - lo for lo, hi in box.values())))
    return units


def _unit_out_region(plan: SamplePlan, oid: str, box: Mapping[str, tuple[int, int]],
                     axis_ids: Sequence[str]) -> Region:
    full = plan.out_shapes[oid]
    links = plan.out_links[oid]
    region = []
    for aid, n in zip(axis_ids, full):
        link = links.get(aid)
        if link is None or link[0] not in box:
            region.append(slice(0, n))
            continue
        ia, f, _off = link
        lo, hi = box[ia]
        stop = n if hi >= plan.image_len[ia] else int(hi * f)
        region.append(slice(int(lo * f), stop))
    return tuple(region)


def _overlap(a: Region, b: Region) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b))


def _intersect(a: Region, b: Region) -> Region:
    return tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))


def _shift(region: Region, origin: Sequence[int]) -> Region:
    return tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, origin))


def _union(regions: Sequence[Region]) -> Region:
    return tuple(slice(min(r[i].start for r in regions), max(r[i].stop for r in regions))
                 for i in range(len(regions[0])))


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
        return self.data[_shift(region, self.origin)]


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
            inter = _intersect(target, region)
            if any(r.stop <= r.start for r in inter):
                continue
            buffers[oid][_shift(inter, [r.start for r in region])] = data[_shift(inter, [t.start for t in target])]

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
                w = _extract(sources[spec.id], plan.tiles[ti].reads[spec.id], pad_mode)
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


# ------------------------------------------------------------------- record
#: version of the ``done`` log's layout (in its first line)
RECORD_VERSION = 2


def array_digest(data: np.ndarray) -> str:
    """sha256 of an array's type, shape and values (C order): what a record says was written."""
    data = np.ascontiguousarray(data)
    h = hashlib.sha256(f"{data.dtype.str} {data.shape}\n".encode())
    h.update(memoryview(data).cast("B"))
    return h.hexdigest()


def _own_folder(path: Path) -> Path:
    """``path`` as a real folder of the run (created): never through a symbolic link planted in the store."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{path} is a symbolic link or a file, not a folder bioimgzoo made: the store was changed by "
                         "hand; pass --overwrite to start again")
    path.mkdir(parents=True, exist_ok=True)
    return path


class UnitRecord:
    """The finished work units of one output, in an append-only log (``<out>/.bioimgzoo/done``).

    The log starts with the run's settings (``signature``); resuming with
    other settings is refused.  A unit is logged after all its chunks are
    written and flushed to disk, with a digest of what was written (each
    output's :func:`array_digest`, keyed by this user's secret and bound to
    the settings and the unit): a resumed run skips a unit only when the
    store still holds exactly that (:meth:`verified`), and computes it again
    otherwise.  A cluster's parts are logged the same way (:meth:`mark_part`).
    Lines that do not parse (a torn last line, a hand edit) count for nothing.
    """

    def __init__(self, folder: str | Path, signature: Mapping[str, Any], *, resume: bool):
        self.folder = Path(folder)
        self.path = self.folder / "done"
        self.signature = json.loads(json.dumps({**dict(signature), "record": RECORD_VERSION}, sort_keys=True,
                                               default=str))
        self._bound = json.dumps(self.signature, sort_keys=True).encode()
        self._key = user_secret()
        #: (kind, sample, unit[, output]) -> keyed digest, as logged
        self.logged: dict[tuple, str] = {}
        #: (sample, unit) finished: written in this run, or logged before and verified against the store
        self.done: set[tuple[int, int]] = set()
        self.unreadable = 0
        self._lock = threading.Lock()
        _own_folder(self.folder)
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise InputError(f"{self.path} is not a file written by bioimgzoo (a link or a folder): the store was changed by "
                             "hand; pass --overwrite to start again")
        if resume and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
            try:
                head = json.loads(lines[0]) if lines else None
            except ValueError:
                head = None
            if head != self.signature:
                raise InputError(f"cannot resume: {self.path.parent.parent} was started with other settings "
                                 f"(model, input, tile, work unit or options differ, or an older bioimgzoo); pass "
                                 "--overwrite to start again")
            for line in lines[1:]:
                entry = self._parse(line)
                if entry is None:
                    self.unreadable += 1
                else:
                    self.logged[entry[0]] = entry[1]
            if self.unreadable:
                log.warning("%d line(s) of %s do not parse and count for nothing: their units are computed again",
                            self.unreadable, self.path)
        else:
            if resume:
                log.warning("nothing to resume in %s: starting from the beginning", self.folder.parent)
            self.path.write_text(json.dumps(self.signature, sort_keys=True) + "\n")
        self._file = open(self.path, "a")

    @staticmethod
    def _parse(line: str) -> tuple[tuple, str] | None:
        parts = line.split()
        try:
            if len(parts) == 4 and parts[0] == "unit":
                key: tuple = ("unit", int(parts[1]), int(parts[2]))
            elif len(parts) == 5 and parts[0] == "part":
                key = ("part", int(parts[1]), int(parts[2]), parts[3])
            else:
                return None
        except ValueError:
            return None
        digest = parts[-1]
        return (key, digest) if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None

    def _digest(self, key: tuple, digests: Mapping[str, str]) -> str:
        h = hashlib.blake2b(key=self._key, digest_size=32)
        h.update(self._bound)
        h.update(repr(key).encode())
        for oid in sorted(digests):
            h.update(f"\n{oid} {digests[oid]}".encode())
        return h.hexdigest()

    def _append(self, key: tuple, digests: Mapping[str, str]) -> None:
        digest = self._digest(key, digests)
        with self._lock:
            self._file.write(" ".join(map(str, key)) + f" {digest}\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.logged[key] = digest

    def mark(self, sample: int, unit: int, digests: Mapping[str, str]) -> None:
        """Unit ``unit`` of ``sample`` is written: ``digests`` by output id (:func:`array_digest` of each)."""
        self._append(("unit", sample, unit), digests)
        self.done.add((sample, unit))

    def mark_part(self, sample: int, unit: int, output: str, digest: str) -> None:
        """A cluster part (one output of a unit's own tiles) is saved, with its :func:`array_digest`."""
        self._append(("part", sample, unit, output), {output: digest})

    def claims(self, sample: int, unit: int) -> bool:
        """The log says the unit is finished (not yet checked against the store)."""
        return ("unit", sample, unit) in self.logged

    def verified(self, sample: int, unit: int, digests: Mapping[str, str] | None) -> bool:
        """The unit is logged and the store holds what was logged (``digests``: read back now; None: unreadable)."""
        key = ("unit", sample, unit)
        return digests is not None and key in self.logged and self.logged[key] == self._digest(key, digests)

    def part_verified(self, sample: int, unit: int, output: str, digest: str | None) -> bool:
        key = ("part", sample, unit, output)
        return digest is not None and key in self.logged and self.logged[key] == self._digest(key, {output: digest})

    def is_done(self, sample: int, unit: int) -> bool:
        """Written in this run, or verified against the store (:func:`verify_units`)."""
        return (sample, unit) in self.done

    def confirm(self, sample: int, unit: int) -> None:
        """The unit counts as finished: it verified against the store."""
        self.done.add((sample, unit))

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        """The run is complete: drop the log and whatever else the run kept beside it (a cluster's parts)."""
        self.close()
        self.path.unlink(missing_ok=True)
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def verify_units(record: UnitRecord, number: int, units: Sequence[WorkUnit], outputs: Mapping[str, Any]) -> list:
    """The units of sample ``number`` the record claims and the store still holds; logs how many did not verify.

    ``outputs``: the sample's sinks by output id; each must read back what it
    holds (``stored_digest(region)``), else nothing is skipped.
    """
    done, bad = [], 0
    for u in units:
        if not record.claims(number, u.index):
            continue
        try:
            digests = {oid: sink.stored_digest(u.writes[oid]) for oid, sink in outputs.items()}
        except Exception as e:  # noqa: BLE001 -- a chunk that does not decode is a unit to compute again
            log.debug("unit %s of sample %s does not read back: %s", u.index, number, e)
            digests = None
        if record.verified(number, u.index, digests):
            record.confirm(number, u.index)
            done.append(u)
        else:
            bad += 1
    if bad:
        log.warning("%d work unit(s) the record of %s lists as finished do not hold what was written (changed, "
                    "forged or torn): computed again", bad, record.folder.parent)
    return done


def package_key(model: Any) -> str:
    """sha256 of the package's description and chosen weights: what a worker's model is cached by."""
    h = hashlib.sha256()
    try:
        h.update(model.package.source.read_rdf()[0])
    except Exception:  # a source that cannot re-read its rdf: its name is still a key
        h.update(repr(model.package.source).encode())
    h.update(model.weights_format.encode())
    entry = getattr(model.descr.weights, model.weights_format, None)
    h.update(str(getattr(entry, "sha256", "") or "").encode())
    return h.hexdigest()



def set_engine_threads(model: Any, threads: int) -> None:
    """Run ``model``'s engine on ``threads`` CPU threads (onnxruntime intra-op / torch), explicitly.

    onnxruntime's threads also stop spin-waiting between ops: beside the
    reader and writer threads of the streaming executor (or other workers)
    spinning threads take the cores the others need (measured: 2048² through
    the shared fixture on 2 cores, 11.6 s spinning, 9.4 s not).
    """
    threads = max(1, int(threads))
    if getattr(model.engine, "_bioimgzoo_threads", None) == threads:
        return
    if model.weights_format == "onnx":
        import onnxruntime as ort

        session = model.engine.session
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = model.package.file(getattr(model.descr.weights, "onnx"))
        model.engine.session = ort.InferenceSession(str(path), sess_options=opts, providers=session.get_providers())
    else:
        import torch

        torch.set_num_threads(threads)
    model.engine._bioimgzoo_threads = threads


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
    if libc is not None and not os.environ.get("BIOIMGZOO_NO_MALLOC_TRIM"):
        libc.malloc_trim(0)


# ----------------------------------------------------------------- progress
class Progress:
    """A progress bar over work units with megapixels/s and an ETA (rich, on stderr)."""

    def __init__(self, total_units: int, total_pixels: int, *, enabled: bool = True, label: str = "Predicting"):
        self.total_pixels = total_pixels
        self.pixels = 0
        self.units = 0
        self._start = time.perf_counter()
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total_units, rate="")

    def advance(self, pixels: int) -> None:
        self.units += 1
        self.pixels += pixels
        if self._bar is not None:
            self._bar.update(self._task, advance=1, rate=f"{self.rate:.2f} MP/s")

    @property
    def rate(self) -> float:
        """Megapixels (input) per second so far."""
        return self.pixels / 1e6 / max(1e-9, time.perf_counter() - self._start)

    @property
    def eta(self) -> float:
        """Seconds left at the rate so far."""
        return (self.total_pixels - self.pixels) / 1e6 / max(1e-9, self.rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


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
        for index, sample in enumerate(samples):
            number = sample.context[1] if isinstance(sample.context, tuple) and len(sample.context) > 1 and \
                isinstance(sample.context[1], int) else index
            self.add_statistics(sample)
            self._run_sample(number, sample)
            yield sample

    def _run_sample(self, number: int, sample: Sample) -> None:
        units = self.units(sample)
        plan = sample.plan
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
        own: dict[int, WorkUnit] = {}
        for u in todo:
            mine = [ti for ti in u.tiles if ti not in seen]
            seen.update(mine)
            reads = {iid: _union([plan.tiles[ti].reads[iid].region for ti in mine]) for iid in u.reads} if mine else {}
            own[u.index] = replace(u, reads=reads)
        todo = [own[u.index] for u in todo]
        cache = SharedTiles(users, folder=_own_folder(self.record.folder) / "shared" if self.record is not None
                            else None)
        read_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        write_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        failure: list[BaseException] = []
        stop = threading.Event()

        def put(q: queue.Queue, item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                for u in todo:
                    boxes = {iid: np.asarray(sample.inputs[iid].read(u.reads[iid])) for iid in u.reads}
                    if not put(read_q, (u, boxes)):
                        return
            except BaseException as e:  # handed to the main thread
                failure.append(e)
                stop.set()
            put(read_q, _END)

        def writer() -> None:
            try:
                while True:
                    item = write_q.get()
                    if item is _END:
                        return
                    u, outs = item
                    digests = {oid: sample.outputs[oid].write(u.writes[oid], data) for oid, data in outs.items()}
                    if self.record is not None:
                        self.record.mark(number, u.index, digests)
                    self.units_computed += 1
                    release_freed_memory()
                    if self.on_unit:
                        self.on_unit(number, u, True)
            except BaseException as e:
                failure.append(e)
                stop.set()
                while write_q.get() is not _END:  # drain, so the engine thread never blocks
                    pass

        threads = [threading.Thread(target=reader, daemon=True, name="bioimgzoo-read"),
                   threading.Thread(target=writer, daemon=True, name="bioimgzoo-write")]
        for t in threads:
            t.start()
        try:
            while True:
                try:
                    item = read_q.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        break
                    continue
                if item is _END:
                    break
                u, boxes = item
                outs = compute_unit(self.network, plan, u, boxes, stats=sample.stats,
                                    postprocessing=self.postprocessing, batch_size=self.batch_size,
                                    pad_mode=self.pad_mode, cache=cache, keep=cache.keep,
                                    on_window=self.on_window)
                cache.unit_done(u.tiles)
                del boxes
                if not put(write_q, (u, outs)):
                    break
        except BaseException as e:
            failure.append(e)
            stop.set()
        finally:
            write_q.put(_END)
            for t in threads:
                t.join()
            cache.close()
        if failure:
            raise failure[0]
