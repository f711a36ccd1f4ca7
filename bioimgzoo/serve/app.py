"""The ASGI application: routes, security at the door, predictions in worker threads.

:func:`create_app` builds a Starlette app around one :class:`Server` (the
state: settings, model registry, jobs, metrics, the worker threads).
Layers, outermost first (each a small ASGI wrapper, no per-request task):

1. :class:`_AccessLog`: one log line per request (``bioimgzoo.serve.access``)
   and the ``bioimgzoo_requests_total`` counter;
2. :class:`_Door`: the bearer token (constant-time comparison; the admin
   token for load/unload), then the body size counted as it streams in:
   413 from ``Content-Length`` before a byte is read, else as soon as the
   count passes the limit (nothing beyond the limit is buffered);
3. the routes, whose errors become the protocol's ``{"error": "..."}`` with
   a status (:func:`_status_of`), never a traceback.

Each prediction takes an admission slot (``--queue``; 429 with
``Retry-After`` when all are taken, 503 while stopping), runs in a worker
thread (``--workers``) inside :meth:`BatchingEngine.in_flight`, and is
answered 504 after ``--timeout`` seconds (the work still finishes and
frees its slot then).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._version import __version__
from ..errors import (BioimgzooError, ConfigError, DownloadError, HubError, InputError, OfflineError, PackageError,
                      PackageNotFoundError, UntrustedCodeError)
from .jobs import JobManager
from .metrics import CONTENT_TYPE_LATEST, ServerMetrics
from .protocol import HEADER_LENGTH, RequestRefused, datatype_of, encode_infer_response, parse_infer_request
from .registry import NAME_PATTERN, VERSION, LoadedModel, ModelRegistry
from .settings import ServeSettings

log = logging.getLogger("bioimgzoo.serve")
access_log = logging.getLogger("bioimgzoo.serve.access")

__all__ = ["create_app", "Server"]

STATIC = Path(__file__).parent / "static"
#: paths anyone may call (load balancers' probes, the page itself; the page's API calls carry the token)
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/", "/favicon.ico")
_ADMIN_SUFFIXES = ("/load", "/unload")


def _status_of(e: BaseException) -> int:
    if isinstance(e, RequestRefused):
        return e.status
    if isinstance(e, UntrustedCodeError):
        return 403
    if isinstance(e, PackageNotFoundError):
        return 404
    if isinstance(e, OfflineError):
        return 503
    if isinstance(e, (DownloadError, HubError)):
        return 502
    if isinstance(e, (InputError, PackageError)):
        return 400
    if isinstance(e, ConfigError):
        return 500
    return 500


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Server:
    """Everything one running server holds (see the module docstring)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.metrics = ServerMetrics()
        self.registry = ModelRegistry(settings, on_execute=self.metrics.executed,
                                      on_load=lambda name, s: self.metrics.load_seconds.labels(name).observe(s))
        self.jobs = JobManager(data_roots=tuple(settings.data_roots), state_dir=settings.state_dir,
                               scheduler=settings.scheduler,
                               use_model=lambda name, weights: self.registry.use(name, weights,
                                                                                  timeout=settings.timeout))
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="bioimgzoo-predict")
        self.draining = False
        self.preloaded = False
        self._admitted = 0
        self._lock = threading.Lock()
        self.answered = 0  # responses completed (the access log's count)
        self.started = 0  # requests that reached the app

    # ------------------------------------------------------------------ life cycle
    def preload(self) -> None:
        """Load the command line's models and ``--preload`` ids (blocking); errors name the model."""
        if self.preloaded:
            return
        for src in list(self.registry.catalogue()):
            if src.origin == "command line":
                self.registry.release(self.registry.acquire(src.name))
        for zid in self.settings.preload:
            self.registry.release(self.registry.acquire(zid))
        self.jobs.start()
        self.preloaded = True

    def begin_draining(self) -> None:
        self.draining = True

    def close(self) -> None:
        self.draining = True
        self.jobs.close()
        self.pool.shutdown(wait=True)
        self.registry.close()
        log.info("stopped: %d request(s) answered of %d received", self.answered, self.started)

    # ------------------------------------------------------------------ admission and workers
    def _admit(self) -> None:
        if self.draining:
            raise RequestRefused(503, "the server is stopping: send the request to another replica or retry shortly",
                                 {"Retry-After": "5"})
        with self._lock:
            if self._admitted >= self.settings.queue:
                raise RequestRefused(429, f"the server is busy ({self._admitted} requests queued or running): retry "
                                     "shortly", {"Retry-After": "1"})
            self._admitted += 1
            self.metrics.in_flight.set(self._admitted)

    @property
    def admitted(self) -> int:
        """Requests admitted and not yet finished (running or waiting for a worker)."""
        return self._admitted

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1
            self.metrics.in_flight.set(self._admitted)

    async def predict(self, name: str, weights: str | None, work: Callable[[LoadedModel], Any]) -> Any:
        """Run ``work(entry)`` on the loaded model ``name`` in a worker thread (admission, timeout, metrics)."""
        self._admit()
        admitted = time.perf_counter()
        timeout = self.settings.timeout

        def job() -> Any:
            try:
                self.metrics.queue_seconds.labels(name).observe(time.perf_counter() - admitted)
                t0 = time.perf_counter()
                with self.registry.use(name, weights, timeout=timeout) as entry:
                    with entry.engine.in_flight():
                        out = work(entry)
                self.metrics.compute_seconds.labels(name).observe(time.perf_counter() - t0)
                return out
            finally:
                self._leave()

        try:
            future = self.pool.submit(job)
        except RuntimeError:  # the pool is shut down: stopping
            self._leave()
            raise RequestRefused(503, "the server is stopping: retry shortly", {"Retry-After": "5"}) from None
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except asyncio.TimeoutError:
            raise RequestRefused(504, f"the prediction took longer than this server's limit of {timeout:g} s: send "
                                 "large images as a job (POST /bioimgzoo/v1/jobs)") from None

    async def blocking(self, fn: Callable[[], Any]) -> Any:
        """Run a short blocking call (a model load for metadata, a hub search) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)


# ---------------------------------------------------------------------- ASGI layers
async def _send_error(send: Callable, status: int, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


class _Door:
    """Token check, then the body counted while it streams in (see the module docstring)."""

    def __init__(self, app: Any, server: Server):
        self.app, self.server = app, server
        s = server.settings
        self.token = s.token.encode() if s.token else None
        self.admin = s.admin_token.encode() if s.admin_token else None
        self.limit = s.max_body_bytes

    def _allowed(self, scope: dict) -> tuple[int, str] | None:
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith("/static/"):
            return None
        given = (_header(scope, b"authorization") or "")
        scheme, _, value = given.partition(" ")
        value_b = value.strip().encode() if scheme.lower() == "bearer" else b""
        if path.startswith("/v2/repository/models/") and path.endswith(_ADMIN_SUFFIXES):
            if self.admin is None:
                return 403, ("loading and unloading models through the API is off: the operator starts the server "
                             "with --admin-token (or BIOIMGZOO_SERVE_ADMIN_TOKEN)")
            if not hmac.compare_digest(value_b, self.admin):
                return 401, "this needs the admin token: send 'Authorization: Bearer ADMIN_TOKEN'"
            return None
        if self.token is None:
            return None
        # compared in constant time; the admin token opens everything too
        ok = hmac.compare_digest(value_b, self.token)
        if self.admin is not None:
            ok = hmac.compare_digest(value_b, self.admin) or ok
        if not ok:
            return 401, ("a valid token is needed: send 'Authorization: Bearer TOKEN'" if value_b else
                         "this server needs a token: send 'Authorization: Bearer TOKEN'")
        return None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refused = self._allowed(scope)
        if refused is not None:
            status, message = refused
            return await _send_error(send, status, message, {"WWW-Authenticate": "Bearer"} if status == 401 else None)
        length = _header(scope, b"content-length")
        limit = self.limit
        if length is not None and length.isdigit() and int(length) > limit:
            # Connection: close, so the server does not go on reading (and dropping) the rest of the body
            return await _send_error(send, 413, _too_large(int(length), limit), {"Connection": "close"})
        encoding = (_header(scope, b"content-encoding") or "identity").lower()
        if encoding != "identity":
            return await _send_error(send, 415, f"Content-Encoding {encoding} is not accepted: send the body "
                                     "uncompressed")
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestRefused(413, _too_large(seen, limit, streaming=True), {"Connection": "close"})
            return message

        await self.app(scope, counted, send)


def _too_large(n: int, limit: int, *, streaming: bool = False) -> str:
    what = f"more than {limit:,}" if streaming else f"{n:,}"
    return (f"the body has {what} bytes; this server takes at most {limit:,} (--max-body-mb): send large images "
            "as a job (POST /bioimgzoo/v1/jobs) with a path under the server's data folders")


_MODEL_PATH = ("/v2/models/", "/bioimgzoo/v1/models/", "/v2/repository/models/")


def _endpoint(path: str, method: str) -> tuple[str, str]:
    """(model, endpoint) labels of a request for the metrics (bounded sets: names only when well formed)."""
    for prefix in _MODEL_PATH:
        if path.startswith(prefix):
            rest = path[len(prefix):].split("/")
            model = rest[0] if NAME_PATTERN.match(rest[0]) else "?"
            tail = rest[-1] if len(rest) > 1 else ("metadata" if prefix == "/v2/models/" else "model")
            tail = tail if tail in ("infer", "predict", "ready", "load", "unload", "metadata") else "metadata"
            return model, tail
    if path.startswith("/bioimgzoo/v1/jobs"):
        return "", "jobs"
    if path.startswith("/v2/health"):
        return "", "health"
    if path in ("/metrics", "/v2", "/v2/repository/index", "/bioimgzoo/v1/models", "/bioimgzoo/v1/hub/search"):
        return "", path.rsplit("/", 1)[-1] or "v2"
    return "", "page" if method == "GET" else "other"


class _AccessLog:
    """One line per request: client, method, path, status, bytes out, milliseconds."""

    def __init__(self, app: Any, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [0]
        sent = [0]
        self.server.started += 1

        async def watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            client = scope.get("client") or ("-", 0)
            model, endpoint = _endpoint(scope["path"], scope["method"])
            self.server.metrics.requests.labels(model, endpoint, str(status[0] or 500)).inc()
            if status[0]:
                self.server.answered += 1
            access_log.info('%s "%s %s" %d %d %.1fms', client[0], scope["method"], scope["path"], status[0] or 500,
                            sent[0], ms)


# ---------------------------------------------------------------------- helpers of the routes
def _server(request: Request) -> Server:
    return request.app.state.server


def _name(request: Request) -> str:
    name = request.path_params["name"]
    if not NAME_PATTERN.match(name):
        raise RequestRefused(400, f"{name!r} is not a model name: names are letters, digits, '.', '_' and '-'")
    version = request.path_params.get("version")
    if version is not None and version != VERSION:
        raise RequestRefused(404, f"model {name!r} has no version {version!r}: it is served as version {VERSION}")
    return name


def _tile(value: Any) -> Any:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
        except ValueError:
            pass
    raise RequestRefused(400, f"tile={value!r} is not valid: give pixels per tiled axis, 512 or 'y=256,x=512'")


def _options(params: dict, *, where: str) -> dict:
    """predict() options from request parameters (axes, tile, channels, nan_policy); weights apart."""
    from ..runtime.channels import parse_channels

    known = {"axes", "tile", "channels", "channel", "nan_policy", "weights", "binary_data_output", "labels",
             "threshold", "output", "format", "filename"}
    unknown = set(params) - known
    if unknown:
        raise RequestRefused(400, f"unknown parameter(s) {', '.join(sorted(unknown))} in {where}: this server takes "
                             "axes, tile, channels, weights and nan_policy")
    opts: dict[str, Any] = {}
    if params.get("axes") is not None:
        opts["axes"] = params["axes"]
    if params.get("tile") is not None:
        opts["tile"] = _tile(params["tile"])
    ch = params.get("channels", params.get("channel"))
    if ch is not None:
        opts["channels"] = parse_channels(ch, option="channels=")
    if params.get("nan_policy") is not None:
        opts["nan_policy"] = params["nan_policy"]
    return opts


def _tensor_shape(spec: Any) -> list[int]:
    from ..descr.sizes import AxisSizes

    shape = []
    for a in spec.axes:
        sz = spec.sizes.get(a.id)
        if a.kind == "channel" and isinstance(sz, AxisSizes) and sz.step == 0:
            shape.append(int(sz.min))
        elif a.kind in ("channel", "index") and a.size is not None:
            shape.append(int(a.size))
        else:
            shape.append(-1)  # batch, and every space axis: a whole image of any size is tiled
    return shape


def _letters(ids: Any) -> str:
    from ..descr.axes import axis_letter

    return "".join(axis_letter(str(a)) for a in ids)


def _tensor_meta(spec: Any) -> dict:
    try:
        datatype = datatype_of(np.dtype(spec.dtype))
    except (TypeError, RequestRefused):
        datatype = "FP32"
    return {"name": spec.id, "datatype": datatype, "shape": _tensor_shape(spec),
            "parameters": {"axes": _letters(spec.axis_ids)}}


def _platform(model: Any) -> str:
    return {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}.get(model.weights_format,
                                                                              f"bioimgzoo_{model.weights_format}")


# ---------------------------------------------------------------------- routes: OIP
async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "bioimgzoo", "version": __version__,
                         "extensions": ["binary_tensor_data", "model_repository", "bioimgzoo_files", "bioimgzoo_jobs"]})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    srv = _server(request)
    ok = srv.preloaded and not srv.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    srv = _server(request)
    name = _name(request)

    def meta() -> dict:
        with srv.registry.use(name, timeout=srv.settings.timeout) as entry:
            m = entry.model
            return {"name": name, "versions": [VERSION], "platform": _platform(m),
                    "inputs": [_tensor_meta(t) for t in m.inputs],
                    "outputs": [_tensor_meta(t) for t in m.outputs],
                    "parameters": {"weights": m.weights_format, "device": str(m.device),
                                   "description": str(getattr(m.descr, "description", ""))[:500]}}

    return JSONResponse(await srv.blocking(meta))


async def model_ready(request: Request) -> Response:
    srv = _server(request)
    name = _name(request)
    srv.registry.source(name)  # 400/404 for what is not servable
    ok = srv.registry.is_loaded(name) and not srv.draining
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)


async def infer(request: Request) -> Response:
    srv = _server(request)
    name = _name(request)
    srv.registry.source(name)
    body = await request.body()
    req = parse_infer_request(body, request.headers.get(HEADER_LENGTH), max_pixels=srv.settings.max_pixels)
    opts = _options(req.parameters, where="the request's parameters")
    weights = req.parameters.get("weights")

    def work(entry: LoadedModel) -> tuple[bytes, dict]:
        model = entry.model
        ids = [t.id for t in model.inputs]
        given = {i.name: i for i in req.inputs}
        unknown = set(given) - set(ids)
        if unknown:
            raise InputError(f"the model has no input {', '.join(sorted(unknown))}; its inputs are {', '.join(ids)}")
        missing = [i for i in ids if i not in given]
        if missing:
            raise InputError(f"input {', '.join(missing)} is missing: the model takes {', '.join(ids)}")
        out_ids = [t.id for t in model.outputs]
        bad = set(req.outputs) - set(out_ids)
        if bad:
            raise InputError(f"the model has no output {', '.join(sorted(bad))}; its outputs are "
                             f"{', '.join(out_ids)}")
        axes = opts.pop("axes", None)
        per_input = {k: v.parameters.get("axes") for k, v in given.items() if v.parameters.get("axes")}
        if per_input:
            axes = {**({k: axes for k in ids} if isinstance(axes, str) else dict(axes or {})), **per_input}
        if axes is None:
            axes = _default_axes(model, given)
        data = {k: given[k].array for k in ids}
        result = model.predict(data[ids[0]] if len(ids) == 1 else data, axes=axes, **opts)
        outs = result if isinstance(result, dict) else {out_ids[0]: result}
        first_axes = axes.get(ids[0]) if isinstance(axes, dict) else axes
        chosen = [o for o in out_ids if o in req.outputs] if req.outputs else out_ids
        tensors = []
        for oid in chosen:
            arr = np.asarray(outs[oid])
            params = {}
            out_axes = _output_letters(model, oid, first_axes, given[ids[0]].array.ndim, arr.ndim)
            if out_axes:
                params["axes"] = out_axes
            tensors.append((oid, arr, params))
        return encode_infer_response(name, VERSION, req, tensors)

    payload, headers = await srv.predict(name, weights, work)
    return Response(payload, headers=headers)


def _default_axes(model: Any, given: dict) -> Any:
    """Without ``axes``: the model's own layout when the tensor has as many dimensions (with or without batch)."""
    out = {}
    for t in model.inputs:
        nd = given[t.id].array.ndim
        ids = list(t.axis_ids)
        no_batch = [a for a in ids if a != "batch"]
        if nd == len(ids):
            out[t.id] = _letters(ids)
        elif nd == len(no_batch):
            out[t.id] = _letters(no_batch)
        else:
            return None  # predict() guesses (e.g. a single channel left out) and names what it expects
    return out if len(out) > 1 else next(iter(out.values()))


def _output_letters(model: Any, oid: str, input_axes: Any, in_ndim: int, out_ndim: int) -> str | None:
    from ..descr.axes import parse_axes

    ids = model.output_axes(oid, input_axes=input_axes if isinstance(input_axes, str) else None)
    if len(ids) == out_ndim:
        return _letters(ids)
    if isinstance(input_axes, str):  # axes the model lacks (a z stack through a 2D model) lead the output
        model_axes = set(model.inputs[0].axis_ids)
        folded = [a for a in parse_axes(input_axes, ndim=in_ndim) if a not in model_axes]
        if len(folded) + len(ids) == out_ndim:
            return _letters(folded + list(ids))
    return None


async def repository_index(request: Request) -> Response:
    return JSONResponse(_server(request).registry.index())


async def repository_load(request: Request) -> Response:
    srv = _server(request)
    name = _name(request)
    weights = None
    if await request.body():
        try:
            params = (await request.json()).get("parameters") or {}
        except (ValueError, AttributeError):
            raise RequestRefused(400, "the body must be JSON {\"parameters\": {...}} or empty") from None
        weights = params.get("weights")
        if set(params) - {"weights"}:
            raise RequestRefused(400, "load takes one parameter, weights; trust_code is the operator's decision "
                                 "(--trust-code on the command line) and is never taken from a request")
    await srv.blocking(lambda: srv.registry.release(srv.registry.acquire(name, weights, timeout=srv.settings.timeout)))
    return JSONResponse({})


async def repository_unload(request: Request) -> Response:
    srv = _server(request)
    name = _name(request)
    n = await srv.blocking(lambda: srv.registry.unload(name, timeout=srv.settings.timeout))
    if not n:
        raise RequestRefused(400, f"model {name!r} is not loaded")
    return JSONResponse({})


# ---------------------------------------------------------------------- routes: bioimgzoo's own
async def list_models(request: Request) -> Response:
    srv = _server(request)
    loaded = {e.name: e for e in srv.registry.loaded()}
    rows = []
    for row in srv.registry.index():
        e = loaded.get(row["name"])
        item: dict[str, Any] = {"name": row["name"], "version": row["version"], "state": row["state"]}
        if e is not None:
            m = e.model
            item.update(weights=m.weights_format, device=str(m.device), title=str(m.name),
                        load_seconds=round(e.load_seconds, 3), memory_mb=round(e.nbytes / 1e6, 1),
                        origin=e.source.origin,
                        inputs=[{"name": t.id, "axes": _letters(t.axis_ids), "dtype": t.dtype} for t in m.inputs],
                        outputs=[{"name": t.id, "axes": _letters(t.axis_ids)} for t in m.outputs])
        rows.append(item)
    return JSONResponse({"models": rows, "hub": srv.settings.hub})


async def predict_file(request: Request) -> Response:
    from .files import choose_format, predict_upload, read_upload

    srv = _server(request)
    name = _name(request)
    srv.registry.source(name)
    q = request.query_params
    fmt = choose_format(request.headers.get("accept"), q.get("format"))
    params = {k: v for k, v in q.items() if k not in ("format",)}
    opts = _options(params, where="the query")
    labels = q.get("labels", "0").lower() in ("1", "true", "yes", "on")
    try:
        threshold = float(q.get("threshold", 0.5))
    except ValueError:
        threshold = -1.0
    if not 0.0 < threshold < 1.0:
        raise RequestRefused(400, f"threshold={q.get('threshold')!r} is not valid: give a probability between 0 and 1")
    ctype = request.headers.get("content-type", "")
    filename = None
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("file") or next((v for v in form.values() if hasattr(v, "read")), None)
        if upload is None or not hasattr(upload, "read"):
            raise RequestRefused(400, "the form has no file: send the image in a field named 'file'")
        data = await upload.read()
        filename, ctype = upload.filename, upload.content_type or ""
        await form.close()
    else:
        data = await request.body()
        filename = q.get("filename")
    if not data:
        raise RequestRefused(400, "the body is empty: send a TIFF, PNG, JPEG or .npy image")

    def work(entry: LoadedModel) -> tuple[bytes, str, dict]:
        with tempfile.TemporaryDirectory(prefix="bioimgzoo-serve-") as tmp:
            up = read_upload(data, ctype, Path(tmp), filename=filename, max_pixels=srv.settings.max_pixels)
            return predict_upload(entry.model, up, fmt=fmt, output=q.get("output"), labels=labels,
                                  threshold=threshold, options=dict(opts))

    body, media, headers = await srv.predict(name, q.get("weights"), work)
    return Response(body, media_type=media, headers=headers)


async def submit_job(request: Request) -> Response:
    srv = _server(request)
    try:
        body = await request.json()
    except ValueError:
        raise RequestRefused(400, "a job is a JSON object {model, input, output}") from None
    job = await srv.blocking(lambda: srv.jobs.submit(body, check_model=srv.registry.source))
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/bioimgzoo/v1/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    return JSONResponse({"jobs": [j.public() for j in _server(request).jobs.list()]})


async def get_job(request: Request) -> Response:
    return JSONResponse(_server(request).jobs.get(request.path_params["job"]).public())


async def cancel_job(request: Request) -> Response:
    job = _server(request).jobs.cancel(request.path_params["job"])
    return JSONResponse(job.public(), status_code=202 if job.state == "running" else 200)


async def hub_search(request: Request) -> Response:
    srv = _server(request)
    if not srv.settings.hub:
        raise RequestRefused(403, "this server serves no zoo models (--no-hub): pick one of its own models")
    q = request.query_params.get("q", "")
    try:
        limit = max(1, min(50, int(request.query_params.get("limit", 20))))
    except ValueError:
        limit = 20
    from ..hub import search

    hits = await srv.blocking(lambda: search(q or None, limit=limit))
    return JSONResponse({"hits": [{"id": h.id, "name": h.name, "description": h.description[:300], "tags": h.tags[:8],
                                   "weights": h.weight_formats, "downloads": h.downloads} for h in hits]})


async def metrics(request: Request) -> Response:
    srv = _server(request)
    srv.metrics.models_loaded.set(len(srv.registry.loaded()))
    for state, n in srv.jobs.counts().items():
        srv.metrics.jobs.labels(state).set(n)
    return Response(srv.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


# ---------------------------------------------------------------------- the app
async def _refused(request: Request, e: Exception) -> Response:
    status = _status_of(e)
    if status >= 500 and not isinstance(e, RequestRefused):
        log.error("%s %s failed: %s", request.method, request.url.path, e)
    return _error(status, str(e), getattr(e, "headers", None))


async def _http_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, HTTPException)
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
    return _error(e.status_code, message, getattr(e, "headers", None))


async def _crash(request: Request, e: Exception) -> Response:
    log.exception("%s %s: unexpected error", request.method, request.url.path)
    return _error(500, f"internal error ({type(e).__name__}); the server log has the details")


def create_app(settings: ServeSettings, *, server: Server | None = None) -> Any:
    """The ASGI app serving ``settings`` (checked here); its :class:`Server` is ``app.state.server``."""
    srv = server or Server(settings.checked())
    m = "/v2/models/{name}"
    mv = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/", page),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route(m, model_metadata), Route(mv, model_metadata),
        Route(m + "/ready", model_ready), Route(mv + "/ready", model_ready),
        Route(m + "/infer", infer, methods=["POST"]), Route(mv + "/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        Route("/bioimgzoo/v1/models", list_models),
        Route("/bioimgzoo/v1/models/{name}/predict", predict_file, methods=["POST"]),
        Route("/bioimgzoo/v1/jobs", submit_job, methods=["POST"]),
        Route("/bioimgzoo/v1/jobs", list_jobs, methods=["GET"]),
        Route("/bioimgzoo/v1/jobs/{job}", get_job, methods=["GET"]),
        Route("/bioimgzoo/v1/jobs/{job}", cancel_job, methods=["DELETE"]),
        Route("/bioimgzoo/v1/hub/search", hub_search),
        Route("/metrics", metrics),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await asyncio.get_running_loop().run_in_executor(None, srv.preload)
        yield
        srv.begin_draining()
        await asyncio.get_running_loop().run_in_executor(None, srv.close)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={BioimgzooError: _refused, HTTPException: _http_error, Exception: _crash})
    app.state.server = srv
    outer = _AccessLog(_Door(app, srv), srv)
    outer.state = app.state  # type: ignore[attr-defined]  (tests reach the server as app.state.server)
    return outer
