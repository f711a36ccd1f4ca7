"""Work units on a dask.distributed cluster: an existing scheduler, or a LocalCluster on this machine.

* The model is loaded **once per worker** by a :class:`ModelPlugin` (a
  ``WorkerPlugin`` registered under the package's sha256 key): the task
  graph carries the package's path and the key, never the model.  Workers
  must be able to read the package folder and the input and output stores
  (a shared file system).
* Each tile runs exactly once, as in one process: a tile whose trusted
  output spans two work units belongs to the first of them (the unit its
  output starts in).  So a unit runs in two tasks:

  1. *compute*: read the input of the tiles it owns (region plus halo),
     run them, and save their trusted output (the unit's *owned box*, which
     overlaps its neighbours' chunks) as one ``.npy`` file beside the output
     (``<out>/.bioimgzoo/parts``), renamed into place when complete;
  2. *assemble*: once the owners of every part of the unit's box are
     computed, copy those parts into the unit's box and write its whole
     chunks (or shard): still one writer per chunk, no locks.  The client
     logs the unit as finished when this task completes.

  The parts are deleted when the run ends; the client logs each part with
  the digest of what it holds, and a resumed run reuses only the parts on
  disk that still hold what was logged.  At most ``window`` tasks are in flight (about two per worker
  thread), so the scheduler never holds the whole image's graph.
* A worker that dies loses its running tasks; the scheduler runs them
  again on another worker (dask's ``allowed-failures``).  A unit that keeps
  failing stops the run with one message; the store then has no NGFF
  metadata and ``--resume`` continues from the units logged as finished.
* Threads: ``worker threads x engine threads = cores`` (onnxruntime's
  intra-op threads and torch's threads are set explicitly on each worker).
* GPU models: each task asks for the ``GPU`` resource; start the workers
  with ``--resources GPU=1`` (a LocalCluster here gets it when the model
  runs on cuda).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ...errors import InputError
from .protocol import Sample
from ..plan import Region, SamplePlan
from ..engines import set_threads
from .record import UnitRecord, array_digest, own_folder, package_key, verify_units
from .streaming import add_sample_statistics, compute_unit, release_freed_memory
from .units import WorkUnit, default_work_unit, intersect, plan_work_units, shift, union

log = logging.getLogger("bioimgzoo")

__all__ = ["ModelPlugin", "DistributedExecutor", "connect", "predict_files", "probe_scheduler", "owned_units"]

#: models loaded on this worker process, by package key
_WORKER_MODELS: dict[str, Any] = {}


try:  # a real WorkerPlugin subclass when distributed is installed (it is a dependency)
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object


class ModelPlugin(_WorkerPlugin):
    """Loads the model once on each worker, keyed by the package's sha256 (:func:`~.record.package_key`)."""

    def __init__(self, package: str, *, key: str, weights: str, device: str, engine_threads: int | None,
                 loader: Callable[..., Any], trust_code: bool = False):
        self.package, self.key, self.weights, self.device = package, key, weights, device
        self.loader = loader  # Model.load, pickled by reference (never a loaded model)
        self.engine_threads, self.trust_code = engine_threads, trust_code
        self.host_threads: dict[str, int] = {}  # worker threads per host, filled in by DistributedExecutor
        self.name = f"bioimgzoo-model-{key[:16]}"

    def setup(self, worker: Any = None) -> None:
        if self.key in _WORKER_MODELS:
            return
        model = self.loader(self.package, weights=self.weights, device=self.device, trust_code=self.trust_code)
        threads = self.engine_threads
        if threads is None:  # the cores of this host shared by every worker thread on it
            host = str(getattr(worker, "address", "")).rsplit(":", 1)[0]
            on_host = self.host_threads.get(host) or getattr(getattr(worker, "state", None), "nthreads", 1) or 1
            threads = max(1, (os.cpu_count() or 1) // on_host)
        set_threads(model.engine, threads)
        _WORKER_MODELS[self.key] = model


def owned_units(plan: SamplePlan, units: Sequence[WorkUnit]) -> list[WorkUnit] | None:
    """Each unit with only the tiles it owns (those no earlier unit lists) and, as ``writes``, their output box.

    Row-major units list a tile first in the unit its trusted output starts
    in, so the owned boxes partition every output.  None when they do not
    (a plan that is not a grid of tiles): then each unit runs all its tiles.
    """
    seen: set[int] = set()
    owned = []
    for u in units:
        mine = tuple(t for t in u.tiles if t not in seen)
        seen.update(mine)
        if not mine:
            owned.append(replace(u, tiles=(), reads={}, writes={}))
            continue
        reads = {iid: union([plan.tiles[t].reads[iid].region for t in mine]) for iid in u.reads}
        writes = {}
        for oid in u.writes:
            targets = [plan.tiles[t].writes[oid].target for t in mine]
            box = union(targets)
            if sum(_size(r) for r in targets) != _size(box):
                return None
            writes[oid] = box
        owned.append(replace(u, tiles=mine, reads=reads, writes=writes))
    return owned


def _size(region: Region) -> int:
    n = 1
    for r in region:
        n *= max(0, r.stop - r.start)
    return n


def _part_path(parts: str, number: int, index: int, oid: str) -> Path:
    return Path(parts) / f"{number}-{index}-{oid}.npy"


def _worker_model(key: str) -> Any:
    """The model the worker plugin loaded for package ``key``."""
    model = _WORKER_MODELS.get(key)
    if model is None:
        raise RuntimeError(f"the model {key[:16]} is not loaded on this worker (its plugin did not run)")
    return model


def _compute_on_worker(key: str, job: Mapping[str, Any], unit: WorkUnit) -> dict[str, np.ndarray]:
    """A unit's outputs on a worker: its input boxes read and run through the tiles ``unit`` lists."""
    model = _worker_model(key)
    sample: Sample = job["sample"]
    boxes = {iid: np.asarray(sample.inputs[iid].read(unit.reads[iid])) for iid in unit.reads}
    return compute_unit(model.network(), sample.plan, unit, boxes, stats=sample.stats,
                        postprocessing=model.postprocessing if job.get("postprocess", True) else (),
                        batch_size=job["batch_size"], pad_mode=job["pad_mode"])


def _compute_owned(key: str, job: Mapping[str, Any], unit: WorkUnit, number: int, parts: str) -> dict[str, str]:
    """Compute phase on a worker: the unit's own tiles, saved as one part file per output.

    Returns each part's :func:`~.record.array_digest` (the client logs it: a resumed run reuses a part only
    when the file still holds that)."""
    outs = _compute_on_worker(key, job, unit)
    digests = {}
    for oid, data in outs.items():
        final = _part_path(parts, number, unit.index, oid)
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.npy")
        data = np.ascontiguousarray(data)
        np.save(tmp, data)
        os.replace(tmp, final)
        digests[oid] = array_digest(data)
    del outs
    release_freed_memory()
    return digests


def _assemble_unit(job: Mapping[str, Any], unit: WorkUnit, sources: Sequence[WorkUnit], number: int,
                   parts: str) -> dict[str, str]:
    """Assemble phase on a worker: the unit's box from its owners' parts, written as whole chunks.

    Returns the digest of what each output's sink stored (the client logs it)."""
    sample: Sample = job["sample"]
    digests = {}
    for oid, region in unit.writes.items():
        buf = None
        for src in sources:
            inter = intersect(src.writes[oid], region)
            if any(r.stop <= r.start for r in inter):
                continue
            part = np.load(_part_path(parts, number, src.index, oid), mmap_mode="r")
            if buf is None:
                buf = np.empty(tuple(r.stop - r.start for r in region), part.dtype)
            buf[shift(inter, [r.start for r in region])] = part[shift(inter, [r.start for r in src.writes[oid]])]
        digests[oid] = sample.outputs[oid].write(region, buf)
    return digests


def _run_unit(key: str, job: Mapping[str, Any], unit: WorkUnit) -> dict[str, str]:
    """One work unit on a worker, all its tiles (shared ones too): read, compute, write whole chunks."""
    sample: Sample = job["sample"]
    outs = _compute_on_worker(key, job, unit)
    return {oid: sample.outputs[oid].write(unit.writes[oid], data) for oid, data in outs.items()}


def connect(scheduler: Any = None, workers: int | None = None, threads: int | None = None, *,
            gpu: bool = False) -> tuple[Any, Any, int]:
    """A client: ``scheduler`` (address or Client), else a LocalCluster of ``workers`` processes.

    Returns ``(client, cluster_or_None, engine_threads_or_None)``.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - a dependency
        raise InputError("dask.distributed is not installed: pip install 'dask[distributed]'") from e
    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, None, None  # a Client the caller made
    if scheduler is not None:
        return _bounded_client(scheduler), None, None
    n = int(workers or 1)
    if n < 1:
        raise InputError(f"--workers {workers} is not valid: pass at least 1")
    per_worker = int(threads or 1)
    cores = os.cpu_count() or 1
    engine_threads = max(1, cores // (n * per_worker))
    cluster = LocalCluster(n_workers=n, threads_per_worker=per_worker, processes=True, dashboard_address=None,
                           resources={"GPU": 1} if gpu else None, silence_logs=logging.ERROR)
    return Client(cluster), cluster, engine_threads


#: the largest handshake a dask scheduler sends (a few hundred bytes in practice)
_MAX_HANDSHAKE = 1 << 20


def _recv(sock: Any, n: int, deadline: float, address: str) -> bytes:
    import socket
    import time

    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise InputError(f"{address} closed the connection before saying anything: it is not a dask scheduler "
                             "(check the address and port; a scheduler listens on 8786 by default)")
        buf += chunk
    return buf


def probe_scheduler(address: str, timeout: float) -> None:
    """Check, within ``timeout`` seconds, that a ``tcp://`` address answers as a dask scheduler does.

    A dask server speaks first: its handshake, one length-prefixed message
    (8-byte size, frame lengths, msgpack naming ``compression`` and
    ``python``).  A closed port, a silent socket, an HTTP server (the
    dashboard on 8787) or anything else ends in one :class:`InputError`
    instead of a wait without end.  Other schemes (``tls://``, ``inproc://``)
    are left to the bounded connection itself.
    """
    import socket
    import struct
    import time

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
    except ValueError as e:
        raise InputError(f"--scheduler {address!r} is not an address: give tcp://host:port (e.g. "
                         "tcp://head-node:8786)") from e
    if scheme != "tcp":
        return
    try:
        host, port = parse_host_port(loc, default_port=8786)
    except ValueError as e:
        raise InputError(f"--scheduler {address!r}: {e}; give tcp://host:port") from e
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise InputError(f"cannot reach the dask scheduler at {address} ({e.strerror or type(e).__name__}): check the "
                         "address and that the scheduler runs (dask scheduler, or dask-scheduler)") from e
    try:
        with sock:
            (size,) = struct.unpack("Q", _recv(sock, 8, deadline, address))
            if not 16 <= size <= _MAX_HANDSHAKE:
                raise ValueError(f"a message of {size} bytes")
            body = _recv(sock, size, deadline, address)
            from distributed.protocol.utils import unpack_frames

            frames, missing = unpack_frames(body, partial=True)
            if missing or not any(b"compression" in bytes(f) and b"python" in bytes(f) for f in frames):
                raise ValueError("no handshake")
    except socket.timeout:
        raise InputError(f"{address} accepted the connection but said nothing within {timeout:g} s: a dask "
                         "scheduler greets at once, so this is not one (an HTTP server, such as the dashboard on 8787, "
                         "waits for a request) or it hangs; check the address and port (BIOIMGZOO_TIMEOUT sets the "
                         "wait)") from None
    except (ValueError, struct.error):
        raise InputError(f"{address} answers, but not as a dask scheduler (an HTTP server, such as the dashboard on "
                         "8787?): check the address and port; the scheduler listens on 8786 by default") from None
    except OSError as e:
        raise InputError(f"the connection to {address} failed ({e.strerror or type(e).__name__}): check that the "
                         "scheduler runs") from e


def _bounded_client(address: str) -> Any:
    """A Client of the scheduler at ``address``, or one InputError within a bounded time (never a hang)."""
    import threading

    from distributed import Client

    from ... import config

    timeout = config.http_timeout()
    probe_scheduler(address, timeout)
    made: dict = {}

    def make() -> None:
        try:
            made["client"] = Client(address, timeout=timeout)
        except BaseException as e:  # handed to the caller's thread
            made["error"] = e

    thread = threading.Thread(target=make, daemon=True, name="bioimgzoo-connect")
    thread.start()
    thread.join(2 * timeout + 5)
    if thread.is_alive():  # the thread is left behind (a daemon): the run stops here
        raise InputError(f"connecting to the dask scheduler at {address} did not complete within {2 * timeout + 5:g} "
                         "s: check that it runs and answers (BIOIMGZOO_TIMEOUT sets the wait)")
    if "error" in made:
        e = made["error"]
        raise InputError(f"cannot connect to the dask scheduler at {address}: {str(e)[:300] or type(e).__name__}; "
                         "check the address (tcp://host:8786) and that the scheduler runs") from e
    return made["client"]


def _connect_with_model(model: Any, scheduler: Any, workers: int | None, threads: int | None) -> tuple:
    """``(client, cluster, key, gpu)``: a cluster whose workers each load ``model`` once (a worker plugin).

    ``cluster`` is the LocalCluster started here (None for an existing scheduler): the caller closes it.
    """
    source = getattr(model.package.source, "root", None) or getattr(model.package.source, "path", None)
    if source is None:
        raise InputError("a cluster needs the model as a local package folder or .zip the workers can read: "
                         "pull it first (bioimgzoo pull) and pass its path")
    gpu = str(model.device).startswith("cuda")
    client, cluster, engine_threads = connect(scheduler, workers, threads, gpu=gpu)
    key = package_key(model)
    try:
        plugin = ModelPlugin(str(source), key=key, weights=model.weights_format, device=model.device,
                             engine_threads=engine_threads, loader=type(model).load)
        for address, n in client.nthreads().items():
            host = address.rsplit(":", 1)[0]
            plugin.host_threads[host] = plugin.host_threads.get(host, 0) + int(n)
        client.register_plugin(plugin)
    except BaseException:
        if cluster is not None:
            client.close()
            cluster.close()
        raise
    return client, cluster, key, gpu


class DistributedExecutor:
    """Runs samples work unit by work unit on a dask.distributed cluster (the executor protocol).

    The same units and tile ownership as :class:`~.streaming.StreamingExecutor`, as tasks
    (see the module docstring); results land in the samples' sinks (an output store the workers
    can reach), so ``run`` yields each sample once all samples' units are written.

    Parameters
    ----------
    model : Model
        Loaded again on each worker from its package (a :class:`ModelPlugin`).
    out : path
        The output store (parts of shared tiles wait under ``<out>/.bioimgzoo/parts``).
    record : UnitRecord, optional
        Units to skip when they verify, and where finished units (and parts) are logged.
    scheduler, workers, threads :
        An existing scheduler's address (or Client), else a LocalCluster (:func:`connect`).
    work_unit, batch_size, pad_mode :
        As for the streaming executor.
    on_unit : callable, optional
        ``on_unit(sample_index, unit, computed)`` after each unit.
    postprocess : bool
        False: write the network's outputs before postprocessing (``raw_output``).
    """

    def __init__(self, model: Any, *, out: Any, record: UnitRecord | None = None, work_unit: Any = None,
                 batch_size: int | None = None, pad_mode: str = "reflect", scheduler: Any = None,
                 workers: int | None = None, threads: int | None = None,
                 on_unit: Callable[..., None] | None = None, window: int | None = None, postprocess: bool = True):
        if out is None:
            raise InputError("a cluster (--scheduler / --workers) writes its results to an output store: pass "
                             "out=PATH (CLI: -o out.ome.zarr)")
        self.model, self.out, self.record, self.work_unit = model, out, record, work_unit
        self.batch_size, self.pad_mode, self.postprocess = batch_size, pad_mode, postprocess
        self.scheduler, self.workers, self.threads = scheduler, workers, threads
        self.on_unit, self.window = on_unit, window
        self.units_computed = 0

    def run(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        samples = list(samples)
        if not samples:
            return
        units = plan_work_units(samples[0].plan, self.work_unit or default_work_unit(len(samples[0].plan.image_len)),
                                output_axes={o.id: o.axis_ids for o in self.model.network().outputs})
        client, cluster, key, gpu = _connect_with_model(self.model, self.scheduler, self.workers, self.threads)
        try:
            run = _ClusterRun(self, client, key, gpu, samples, units)
            run.drain()
        finally:
            if cluster is not None:
                client.close()
                cluster.close()
        yield from samples


class _ClusterRun:
    """One run's tasks: what is left, what waits for which part, what is in flight."""

    def __init__(self, executor: DistributedExecutor, client: Any, key: str, gpu: bool,
                 samples: Sequence[Sample], units: Sequence[WorkUnit]):
        self.ex, self.client, self.key = executor, client, key
        self.resources = {"GPU": 1} if gpu else None
        self.window = executor.window or 2 * (sum(client.nthreads().values()) or 1)
        self.run_id = uuid.uuid4().hex[:8]
        self.parts = str(Path(executor.out) / ".bioimgzoo" / "parts")
        self.payloads = [self._payload(s) for s in samples]
        # the sample goes to every worker once; scattered anew when lost with a worker (retries)
        self.jobs = [client.scatter(p, broadcast=True) for p in self.payloads]
        self.ready: deque = deque()  # assemble (or, without owned boxes, whole-unit) tasks that can start
        self.computes: deque = deque()  # compute tasks still to submit, row-major
        self.missing: dict[tuple[int, int], int] = {}  # assemble task -> parts it still waits for
        self.waiting_on: dict[tuple[int, int], list] = {}  # part -> assemble tasks that wait for it
        self.meta: dict[str, tuple] = {}
        # each tile once: a unit's own tiles in a compute task, its chunks in an assemble task
        self.owned = owned_units(samples[0].plan, units)
        self._plan_tasks(samples, units)

    def _payload(self, sample: Sample) -> dict:
        # per-sample statistics on the client (a streaming pass) before the sample is sent
        add_sample_statistics(self.ex.model.network(), sample)
        return {"sample": sample, "batch_size": self.ex.batch_size, "pad_mode": self.ex.pad_mode,
                "postprocess": self.ex.postprocess}

    def _plan_tasks(self, samples: Sequence[Sample], units: Sequence[WorkUnit]) -> None:
        record, on_unit = self.ex.record, self.ex.on_unit
        todo = []
        for number, sample in enumerate(samples):
            if record is not None:  # resuming: a logged unit counts only when the store still holds it
                verify_units(record, number, units, sample.outputs)
            for u in units:
                if record is not None and record.is_done(number, u.index):
                    if on_unit:
                        on_unit(number, u, False)
                else:
                    todo.append((number, None, u))
        if self.owned is None:
            self.ready.extend(todo)
            return
        own_folder(Path(self.parts))
        owner_of = {t: v for v in self.owned for t in v.tiles}
        needed: dict[tuple[int, int], bool] = {}
        for number, _job, u in todo:
            sources = sorted({owner_of[t].index for t in u.tiles})
            todo_parts = []
            for v in sources:
                if (number, v) not in needed:
                    # a part on disk is reused only when the record lists it with what it holds now
                    have = all(_part_holds(record, self.parts, number, v, oid) for oid in self.owned[v].writes)
                    needed[(number, v)] = have
                    if not have:
                        self.computes.append((number, None, self.owned[v]))
                if not needed[(number, v)]:
                    todo_parts.append(v)
            item = (number, None, u, [self.owned[v] for v in sources])
            if todo_parts:
                self.missing[(number, u.index)] = len(todo_parts)
                for v in todo_parts:
                    self.waiting_on.setdefault((number, v), []).append(item)
            else:
                self.ready.append(item)

    def _submit(self, running: Any, kind: str, item: tuple, attempt: int) -> None:
        again = f"-retry{attempt}" if attempt else ""  # a new key: the lost task's key may still be known
        item = (item[0], self.jobs[item[0]]) + tuple(item[2:])  # the sample as scattered last
        number, job, u = item[:3]
        if kind == "unit" and self.owned is None:
            fut = self.client.submit(_run_unit, self.key, job, u, pure=False, resources=self.resources,
                                     key=f"bioimgzoo-unit-{self.run_id}-{number}-{u.index}{again}")
        elif kind == "unit":
            fut = self.client.submit(_assemble_unit, job, u, item[3], number, self.parts, pure=False, priority=1,
                                     key=f"bioimgzoo-assemble-{self.run_id}-{number}-{u.index}{again}")
        else:
            fut = self.client.submit(_compute_owned, self.key, job, u, number, self.parts, pure=False,
                                     resources=self.resources,
                                     key=f"bioimgzoo-compute-{self.run_id}-{number}-{u.index}{again}")
        self.meta[fut.key] = (kind, number, u, item, attempt)
        running.add(fut)

    def _submit_next(self, running: Any) -> bool:
        if self.ready:  # assembling first: it frees parts' readers and finishes units
            self._submit(running, "unit", self.ready.popleft(), 0)
        elif self.computes:
            self._submit(running, "part", self.computes.popleft(), 0)
        else:
            return False
        return True

    def drain(self) -> None:
        """Submit and collect every task, at most ``window`` in flight; a lost one is run again."""
        from distributed import as_completed

        running = as_completed()
        in_flight = 0
        while in_flight < self.window and self._submit_next(running):
            in_flight += 1
        for fut in running:
            in_flight -= 1
            kind, number, u, item, attempt = self.meta.pop(fut.key)
            try:
                digests = fut.result()
            except Exception as e:
                if not (_worker_lost(e) and attempt < _MAX_ATTEMPTS - 1):
                    for other in list(running.futures):
                        other.cancel()
                    raise InputError(f"work unit {u.index} of sample {number + 1} failed on the cluster: "
                                     f"{type(e).__name__}: {e}. The output is incomplete (no OME-Zarr metadata "
                                     "written); fix the cause and rerun with --resume") from e
                # a worker died under it: units are idempotent (parts renamed into place, whole chunks
                # rewritten), so run it again
                log.warning("work unit %s of sample %s was lost with its worker (%s): running it again",
                            u.index, number + 1, type(e).__name__)
                if self.jobs[number].status != "finished":
                    # the scattered sample went with the worker(s) that held it ("lost dependencies"): a
                    # retry needing it would be cancelled again; scatter it anew
                    self.jobs[number] = self.client.scatter(self.payloads[number], broadcast=True)
                self._submit(running, kind, item, attempt + 1)
                in_flight += 1
                continue
            self._done(kind, number, u, digests)
            while in_flight < self.window and self._submit_next(running):
                in_flight += 1
        if self.owned is not None:
            shutil.rmtree(self.parts, ignore_errors=True)

    def _done(self, kind: str, number: int, u: WorkUnit, digests: Mapping[str, str]) -> None:
        record = self.ex.record
        if kind == "part":
            if record is not None:
                for oid, digest in digests.items():
                    record.mark_part(number, u.index, oid, digest)
            for item in self.waiting_on.pop((number, u.index), []):
                k = (item[0], item[2].index)
                self.missing[k] -= 1
                if self.missing[k] == 0:
                    self.ready.append(item)
            return
        if record is not None:
            record.mark(number, u.index, digests)
        self.ex.units_computed += 1
        if self.ex.on_unit:
            self.ex.on_unit(number, u, True)


def _part_holds(record: UnitRecord | None, parts: str, number: int, unit: int, oid: str) -> bool:
    """A part file is there (no link) and holds what the record logged for it."""
    path = _part_path(parts, number, unit, oid)
    if record is None or path.is_symlink() or not path.is_file():
        return False
    try:
        digest = array_digest(np.load(path, mmap_mode="r", allow_pickle=False))
    except Exception:  # noqa: BLE001 -- a part that does not load is computed again
        return False
    return record.part_verified(number, unit, oid, digest)


#: tries of one work unit whose worker was lost (dask's own retries of a task on a dead worker come first)
_MAX_ATTEMPTS = 3


def _worker_lost(error: BaseException) -> bool:
    """The task failed because its worker died or the scheduler cancelled it with it, not by its own code."""
    from concurrent.futures import CancelledError  # distributed's FutureCancelledError is one

    from distributed.scheduler import KilledWorker

    return isinstance(error, (CancelledError, KilledWorker))


# ------------------------------------------------------- many small images
def _predict_file(key: str, path: str, dest: str, options: Mapping[str, Any]) -> str:
    """One image file on a worker: read, predict in memory, write atomically.  Returns ``dest``."""
    from ...io import read_image, write_image

    model = _worker_model(key)
    array, file_axes = read_image(path)
    axes = options.get("axes") or file_axes
    result = model.predict(array, axes=axes, tile=options.get("tile"), halo=options.get("halo"),
                           batch_size=options.get("batch_size"), nan_policy=options.get("nan_policy", "warn"))
    outs = result if isinstance(result, dict) else {model.outputs[0].id: result}
    written = []
    for oid, arr in outs.items():
        target = dest.replace("{output}", oid)
        write_image(target, np.asarray(arr), axes=model.output_axes(oid, input_axes=axes))
        written.append(target)
    return ";".join(written)


def predict_files(model: Any, files: Sequence[str], destinations: Sequence[str], *, scheduler: Any = None,
                  workers: int | None = None, threads: int | None = None, window: int | None = None,
                  on_done: Callable[[str, str], None] | None = None, **options: Any) -> list[str]:
    """Predict many image files on a cluster, each written (``{output}`` in its destination) as it finishes.

    The model is loaded once per worker (:class:`ModelPlugin`); at most
    ``window`` files are in flight.  Returns the files written, in input order.
    """
    from distributed import as_completed

    client, cluster, key, gpu = _connect_with_model(model, scheduler, workers, threads)
    results: dict[int, str] = {}
    try:
        window = window or 2 * (sum(client.nthreads().values()) or 1)
        pending = iter(range(len(files)))
        running = as_completed()
        index_of: dict[str, tuple[int, int]] = {}  # task key -> (file index, attempt)
        run_id = uuid.uuid4().hex[:8]

        def submit(i: int, attempt: int) -> None:
            again = f"-retry{attempt}" if attempt else ""  # a new key: the lost task's key may still be known
            fut = client.submit(_predict_file, key, str(files[i]), str(destinations[i]), options, pure=False,
                                resources={"GPU": 1} if gpu else None, key=f"bioimgzoo-file-{run_id}-{i}{again}")
            index_of[fut.key] = (i, attempt)
            running.add(fut)

        def submit_next() -> None:
            i = next(pending, None)
            if i is not None:
                submit(i, 0)

        for _ in range(window):
            submit_next()
        for fut in running:
            i, attempt = index_of.pop(fut.key)
            try:
                results[i] = fut.result()
            except Exception as e:
                if _worker_lost(e) and attempt < _MAX_ATTEMPTS - 1:
                    # its worker died: a file is written to a temp name and renamed, so running it again is safe
                    log.warning("%s was lost with its worker (%s): running it again", files[i], type(e).__name__)
                    submit(i, attempt + 1)
                    continue
                for other in list(running.futures):
                    other.cancel()
                raise InputError(f"{files[i]} failed on the cluster: {type(e).__name__}: {e}") from e
            if on_done:
                on_done(str(files[i]), results[i])
            submit_next()
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return [results[i] for i in range(len(files))]
