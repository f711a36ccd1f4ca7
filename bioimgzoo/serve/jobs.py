"""Big images as jobs: streamed from disk to an OME-Zarr output, resumable, one at a time in the background.

A job is ``{model, input, output}`` plus prediction options (``axes``,
``tile``, ``nan_policy``, ``weights``): ``input`` a zarr / OME-Zarr / TIFF
path and ``output`` an ``.zarr`` path, both under the folders the operator
named with ``--data-root`` (checked after resolving links; the output must
not exist unless ``overwrite``).  A worker thread runs the jobs in order
through the runtime's streaming executor --
``model.predict(input, out=output, resume=True, scheduler=...)``, on the
dask.distributed cluster the server was given with ``--scheduler`` --
which logs every finished work unit beside the output.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``.
Each job is recorded in ``<state_dir>/jobs/<id>.json`` (written atomically
at every change of state and every few seconds while running), so a
server that stops (SIGTERM, a crash) finds its queued and running jobs
again at start and resumes them: the work units already written are not
computed again.  ``DELETE`` cancels a job at its next work unit (the
output keeps what was written; a new job with ``overwrite`` starts over).

Progress: ``units_done``, ``pixels_done`` of ``pixels_total`` (input
pixels), ``mp_per_s`` (megapixels per second of this run, units
computed only) and ``eta_s``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .._files import atomic_path
from ..errors import BioimgzooError, InputError
from .protocol import RequestRefused

log = logging.getLogger("bioimgzoo.serve")

__all__ = ["Job", "JobManager", "STATES"]

STATES = ("queued", "running", "done", "failed", "cancelled")
_FINAL = ("done", "failed", "cancelled")
_OPTIONS = ("axes", "tile", "nan_policy", "weights", "work_unit")
_SAVE_EVERY = 2.0  # seconds between records of a running job's progress


@dataclass
class Job:
    id: str
    model: str
    input: str
    output: str
    options: dict = field(default_factory=dict)
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    units_done: int = 0
    pixels_done: int = 0
    pixels_total: int = 0
    pixels_computed: int = 0  # by this run (a resumed run skips what an earlier one wrote)
    mp_per_s: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    runs: int = 0  # times the job was started (more than 1: resumed after a restart)

    def public(self) -> dict:
        d = asdict(self)
        d["progress"] = round(self.pixels_done / self.pixels_total, 4) if self.pixels_total else 0.0
        return d


class _Stop(Exception):
    """Raised from the progress callback to stop a job at a work-unit boundary."""

    def __init__(self, state: str):
        self.state = state


class JobManager:
    """Jobs: submitted, run one at a time by a worker thread, recorded on disk for resumption."""

    def __init__(self, *, data_roots: tuple[Path, ...], state_dir: Path | None, scheduler: str | None,
                 use_model: Callable[..., Any], on_change: Callable[[], None] | None = None):
        self.data_roots = data_roots
        self.folder = (state_dir / "jobs") if state_dir is not None else None
        self.scheduler = scheduler
        self.use_model = use_model  # registry.use(name, weights) context manager
        self.on_change = on_change
        self._jobs: dict[str, Job] = {}
        self._stop_requests: dict[str, str] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._client: Any = None  # one dask Client for every job (connecting per job would leak clients)
        if self.folder is not None:
            self._recover()

    # ------------------------------------------------------------------ records
    def _recover(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for p in sorted(self.folder.glob("*.json")):
            try:
                job = Job(**json.loads(p.read_text()))
            except (ValueError, TypeError) as e:
                log.warning("job record %s is unreadable (%s): skipped", p.name, e)
                continue
            if job.state in ("queued", "running"):
                job.state = "queued"  # picked up again; its output's record says which units are done
            self._jobs[job.id] = job
        if any(j.state == "queued" for j in self._jobs.values()):
            log.info("resuming %d job(s)", sum(j.state == "queued" for j in self._jobs.values()))

    def _save(self, job: Job) -> None:
        if self.folder is None:
            return
        with atomic_path(self.folder / f"{job.id}.json") as tmp:
            tmp.write_text(json.dumps(asdict(job)))

    # ------------------------------------------------------------------ API
    def _inside_roots(self, value: Any, what: str) -> Path:
        if not self.data_roots:
            raise RequestRefused(403, "jobs are off on this server: the operator starts it with --data-root FOLDER "
                                 "to name the folders jobs may read and write")
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise RequestRefused(400, f"'{what}' must be a path under the server's data folders")
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = self.data_roots[0] / p
        real = p.resolve()
        if not any(real == r or r in real.parents for r in self.data_roots):
            raise RequestRefused(403, f"{what} {value} is outside the folders this server may read and write "
                                 f"({', '.join(map(str, self.data_roots))})")
        return real

    def submit(self, body: Mapping[str, Any], *, check_model: Callable[[str], Any]) -> Job:
        """A new job from a request body, or a refusal naming what is wrong (nothing is written then)."""
        if not isinstance(body, Mapping):
            raise RequestRefused(400, "a job is a JSON object {model, input, output}")
        model = body.get("model")
        if not isinstance(model, str):
            raise RequestRefused(400, "the job has no 'model' (a served model name or zoo id)")
        check_model(model)
        src = self._inside_roots(body.get("input"), "input")
        out = self._inside_roots(body.get("output"), "output")
        if not src.exists():
            raise RequestRefused(404, f"input {body.get('input')} does not exist")
        if not out.name.lower().endswith(".zarr"):
            raise RequestRefused(400, f"output {body.get('output')} must be an OME-Zarr path ending in .zarr")
        if out == src or src in out.parents or out in src.parents:
            raise RequestRefused(400, "the output must be apart from the input")
        if not out.parent.is_dir():
            raise RequestRefused(400, f"the output's folder {out.parent} does not exist")
        overwrite = bool(body.get("overwrite", False))
        if out.exists() and not overwrite:
            raise RequestRefused(409, f"output {body.get('output')} exists: choose another path or send "
                                 "\"overwrite\": true")
        unknown = set(body) - {"model", "input", "output", "overwrite", *_OPTIONS}
        if unknown:
            raise RequestRefused(400, f"unknown job field(s) {', '.join(sorted(unknown))}: a job takes model, input, "
                                 f"output, overwrite, {', '.join(_OPTIONS)}")
        from ..io.zarr import open_image

        image = open_image(src)  # an InputError (400) for what is no image; reads metadata only
        options = {k: body[k] for k in _OPTIONS if body.get(k) is not None}
        options["overwrite"] = overwrite
        total = 1
        letters = image.axes or body.get("axes") or ""
        for i, n in enumerate(image.shape):
            if not (len(letters) == len(image.shape) and letters[i] == "c"):
                total *= int(n)
        job = Job(secrets.token_hex(8), model, str(src), str(out), options, pixels_total=total)
        with self._cond:
            if self._closing:
                raise RequestRefused(503, "the server is stopping: submit the job again after it restarts",
                                     {"Retry-After": "10"})
            self._jobs[job.id] = job
            self._save(job)
            self._cond.notify_all()
        self._changed()
        return job

    def get(self, job_id: str) -> Job:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            raise RequestRefused(404, f"no job {job_id!r} (GET /bioimgzoo/v1/jobs lists them)")
        return job

    def list(self) -> list[Job]:
        with self._cond:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job.state == "queued":
                job.state, job.finished = "cancelled", time.time()
                self._save(job)
            elif job.state == "running":
                self._stop_requests[job.id] = "cancelled"
        self._changed()
        return job

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {s: sum(j.state == s for j in self._jobs.values()) for s in STATES}

    # ------------------------------------------------------------------ worker
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="bioimgzoo-jobs", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking jobs; a running one stops at its next work unit and stays queued (resumed at start)."""
        with self._cond:
            self._closing = True
            for j in self._jobs.values():
                if j.state == "running":
                    self._stop_requests[j.id] = "queued"
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _scheduler(self) -> Any:
        if self._client is None:
            from distributed import Client

            try:
                self._client = Client(self.scheduler, timeout="20s")
            except Exception as e:  # noqa: BLE001 -- distributed raises OSError, TimeoutError, ...
                raise InputError(f"cannot reach the dask scheduler at {self.scheduler}: {e}; check --scheduler "
                                 "(tcp://host:8786) and that the scheduler runs") from e
        return self._client

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not any(j.state == "queued" for j in self._jobs.values()):
                    self._cond.wait()
                if self._closing:
                    return
                job = min((j for j in self._jobs.values() if j.state == "queued"), key=lambda j: j.created)
                job.state, job.started, job.error = "running", time.time(), None
                job.runs += 1
                job.units_done, job.pixels_done, job.pixels_computed, job.mp_per_s, job.eta_s = 0, 0, 0, 0.0, None
                self._save(job)
            self._changed()
            self._run(job)
            self._changed()

    def _run(self, job: Job) -> None:
        opts = dict(job.options)
        t0 = time.perf_counter()
        last_save = [time.monotonic()]

        def on_unit(sample: int, unit: Any, was_computed: bool) -> None:
            job.units_done += 1
            job.pixels_done += int(unit.pixels)
            if was_computed:
                job.pixels_computed += int(unit.pixels)
            rate = job.pixels_computed / 1e6 / max(1e-9, time.perf_counter() - t0)
            job.mp_per_s = round(rate, 3)
            left = max(0, job.pixels_total - job.pixels_done)
            job.eta_s = round(left / 1e6 / rate, 1) if rate > 0 else None
            if time.monotonic() - last_save[0] > _SAVE_EVERY:
                last_save[0] = time.monotonic()
                self._save(job)
            stop = self._stop_requests.get(job.id)
            if stop is not None:
                raise _Stop(stop)

        try:
            with self.use_model(job.model, opts.get("weights")) as entry:
                kwargs = {k: opts[k] for k in ("axes", "tile", "nan_policy", "work_unit") if k in opts}
                if self.scheduler:
                    kwargs["scheduler"] = self._scheduler()
                with entry.engine.in_flight():
                    # a first run replaces an output only when asked; a later run resumes its own
                    first = job.runs == 1
                    entry.model.predict(job.input, out=job.output, resume=not first,
                                        overwrite=first and bool(opts.get("overwrite")), on_unit=on_unit, **kwargs)
            state, error = "done", None
        except _Stop as s:
            state, error = s.state, None
        except BioimgzooError as e:
            state, error = "failed", str(e)
        except Exception as e:  # noqa: BLE001 -- a job's failure is its state, the worker goes on
            log.exception("job %s failed", job.id)
            state, error = "failed", f"{type(e).__name__}: {e}"
        with self._cond:
            self._stop_requests.pop(job.id, None)
            job.state, job.error = state, error
            job.finished = time.time() if state in _FINAL else None
            if state == "done":
                job.pixels_done, job.eta_s = job.pixels_total, 0.0
            self._save(job)
        log.info("job %s: %s%s", job.id, state, f" ({error})" if error else "")

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
