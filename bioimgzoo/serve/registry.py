"""Which models may be served, and the warm ones: an LRU bounded by count and memory.

Where a model may come from (never from a path or URL a request names):

* the MODEL arguments of ``bioimgzoo serve`` (``NAME=SOURCE`` or ``SOURCE``;
  the name defaults to the folder or file name, or the zoo id); only these
  get ``trust_code``, and only when the operator passed ``--trust-code``;
* the packages in folders the operator allow-listed (``--allow-folder``):
  each subfolder holding an ``rdf.yaml`` / ``bioimageio.yaml``, and each
  ``.zip``, by its folder or file name; scanned on every look-up, so a
  package dropped in is served without a restart;
* zoo ids (``affable-shark``) from the configured hub or mirror
  (``BIOIMGZOO_HUB``), unless ``--no-hub``; opened through the zoo client
  only, so a name is never read as a local path.

A request's model name must match :data:`NAME_PATTERN` (no ``/``, no
leading dot), checked before anything else.

Loaded models (:class:`LoadedModel`) are kept by name and weight format,
most recently used last.  Loading another evicts the least recently used
*idle* ones while more than ``max_models`` are loaded or their memory is
over ``max_memory``; a model in use is never evicted: the load waits for
one to become idle (up to the request's timeout), then answers 503.  A
model's memory is the resident memory its load added (loads run one at a
time), at least the size of its weights file.  Unloading drops the last
reference, stops its batcher and, for torch on CUDA, empties torch's
cache; only a process exit is known to give back all of the device memory
of every engine (see the README's serving section).
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import PackageNotFoundError
from ..package import RDF_NAMES
from .batcher import BatchingEngine, batch_limit
from .protocol import RequestRefused
from .settings import ServeSettings

log = logging.getLogger("bioimgzoo.serve")

__all__ = ["ModelRegistry", "ModelSource", "LoadedModel", "NAME_PATTERN", "WEIGHT_FORMATS"]

#: what a model name in a request may look like
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
WEIGHT_FORMATS = ("onnx", "torchscript", "pytorch_state_dict")
#: the one version each model is served as
VERSION = "1"


@dataclass(frozen=True)
class ModelSource:
    name: str
    #: a local path (command line, allow-listed folder) or a zoo id
    source: str
    trust_code: bool
    origin: str  # "command line" | "allow-listed folder" | "zoo"


@dataclass(eq=False)
class LoadedModel:
    name: str
    weights: str | None  # the format asked for (None: the model's default)
    model: Any
    engine: BatchingEngine
    source: ModelSource
    load_seconds: float
    nbytes: int
    users: int = 0
    last_used: float = 0.0


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip(".-_")
    return s[:128] or "model"


def _name_of_path(path: Path) -> str:
    p = path.resolve()
    if p.is_file() and p.name in RDF_NAMES:
        p = p.parent
    return _slug(p.stem if p.suffix.lower() == ".zip" else p.name)


def _is_package(path: Path) -> bool:
    if path.is_dir():
        return any((path / n).is_file() for n in RDF_NAMES)
    return path.is_file() and path.suffix.lower() == ".zip"


class ModelRegistry:
    """The servable models and the loaded ones (thread-safe; loads block: call from worker threads)."""

    def __init__(self, settings: ServeSettings, *, on_execute: Callable[[str, int, int, float], None] | None = None,
                 on_load: Callable[[str, float], None] | None = None):
        self.settings = settings
        self.on_execute = on_execute
        self.on_load = on_load
        self._named: dict[str, ModelSource] = {}
        for arg in settings.models:
            src = self._parse_model_arg(arg)
            if src.name in self._named:
                raise RequestRefused(500, f"two models are named {src.name!r}: name them NAME=SOURCE")
            self._named[src.name] = src
        self._loaded: OrderedDict[tuple[str, str | None], LoadedModel] = OrderedDict()
        self._loading: set[tuple[str, str | None]] = set()
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()  # one load at a time: memory is measured per load
        self.reloads = 0  # loads of a model that was loaded before (evicted, unloaded)
        self._seen: set[tuple[str, str | None]] = set()

    # ------------------------------------------------------------------ sources
    def _parse_model_arg(self, arg: str) -> ModelSource:
        trust = bool(self.settings.trust_code)
        name, _, rest = arg.partition("=")
        if rest and NAME_PATTERN.match(name) and not Path(arg).exists():
            source = rest
        else:
            name, source = "", arg
        path = Path(source).expanduser()
        if path.exists():
            return ModelSource(name or _name_of_path(path), str(path.resolve()), trust, "command line")
        if not NAME_PATTERN.match(name or source.replace("/", "-")):
            raise PackageNotFoundError(f"{source} is neither a file or folder nor a zoo id: check the path")
        return ModelSource(name or _slug(source.split("/")[-1] if source.startswith("bioimage-io/") else source),
                           source, trust, "command line")

    def _folder_sources(self) -> dict[str, ModelSource]:
        found: dict[str, ModelSource] = {}
        for folder in self.settings.allow_folders:
            candidates = [folder] if _is_package(folder) else sorted(folder.iterdir()) if folder.is_dir() else []
            for p in candidates:
                try:
                    if not _is_package(p):
                        continue
                    real = p.resolve()
                    if real != folder and folder not in real.parents:  # a link out of the allow-listed folder
                        continue
                except OSError:
                    continue
                name = _name_of_path(p)
                found.setdefault(name, ModelSource(name, str(real), False, "allow-listed folder"))
        return found

    def catalogue(self) -> list[ModelSource]:
        """Every model servable by name now: command line, then allow-listed folders (zoo ids are not listed)."""
        out = dict(self._named)
        for name, src in self._folder_sources().items():
            out.setdefault(name, src)
        return list(out.values())

    def source(self, name: str) -> ModelSource:
        """Where the model ``name`` comes from, or a refusal (404, or 400 for a name that is not a name)."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise RequestRefused(400, f"{name!r} is not a model name: names are letters, digits, '.', '_' and '-' "
                                 "(a served name or a zoo id such as affable-shark)")
        if name in self._named:
            return self._named[name]
        found = self._folder_sources().get(name)
        if found is not None:
            return found
        if self.settings.hub:
            return ModelSource(name, name, False, "zoo")
        raise RequestRefused(404, f"no model {name!r} is served here (GET /bioimgzoo/v1/models lists them); "
                             "models are loaded only from the command line, allow-listed folders"
                             + (" and zoo ids" if self.settings.hub else ""))

    # ------------------------------------------------------------------ loaded models
    def loaded(self) -> list[LoadedModel]:
        with self._cond:
            return list(self._loaded.values())

    def is_loaded(self, name: str) -> bool:
        with self._cond:
            return any(k[0] == name for k in self._loaded)

    @contextmanager
    def use(self, name: str, weights: str | None = None, *, timeout: float | None = None) -> Iterator[LoadedModel]:
        """The loaded model ``name`` (loading it, evicting idle ones), held in use for the block."""
        entry = self.acquire(name, weights, timeout=timeout)
        try:
            yield entry
        finally:
            self.release(entry)

    def acquire(self, name: str, weights: str | None = None, *, timeout: float | None = None) -> LoadedModel:
        if weights is not None and weights not in WEIGHT_FORMATS:
            raise RequestRefused(400, f"weights {weights!r} is not a weight format: use one of "
                                 f"{', '.join(WEIGHT_FORMATS)}")
        src = self.source(name)
        key = (name, weights)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                entry = self._loaded.get(key)
                if entry is not None:
                    entry.users += 1
                    entry.last_used = time.monotonic()
                    self._loaded.move_to_end(key)
                    return entry
                if key not in self._loading:
                    self._loading.add(key)
                    break
                self._wait(deadline, f"model {name!r} is still loading")
        try:
            entry = self._load(src, weights, deadline)
        finally:
            with self._cond:
                self._loading.discard(key)
                self._cond.notify_all()
        with self._cond:
            entry.users += 1
            entry.last_used = time.monotonic()
            self._loaded[key] = entry
            self._cond.notify_all()
        return entry

    def release(self, entry: LoadedModel) -> None:
        with self._cond:
            entry.users -= 1
            entry.last_used = time.monotonic()
            self._cond.notify_all()

    def _wait(self, deadline: float | None, why: str) -> None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise RequestRefused(503, f"{why}; try again shortly", {"Retry-After": "5"})
        self._cond.wait(left if left is not None else 1.0)

    def _load(self, src: ModelSource, weights: str | None, deadline: float | None) -> LoadedModel:
        weights_asked = weights
        with self._load_lock:
            self._make_room(deadline, extra=1)
            import psutil

            from .. import load
            from ..package import open_package

            rss0 = psutil.Process().memory_info().rss
            t0 = time.perf_counter()
            if src.origin == "zoo":
                from ..hub import source_for_id

                # the id goes to the zoo client only: never read as a local path
                package = open_package(source_for_id(src.source))
            else:
                package = open_package(src.source)
            if weights is None and src.origin == "command line":
                weights = self.settings.weights
            model = load(package, weights=weights, device=self.settings.device, trust_code=src.trust_code)
            if str(model.device) == "cpu" and model.weights_format == "onnx":
                from ..runtime.engines import set_threads

                # onnxruntime's threads stop spin-waiting between runs: beside the request threads (and
                # other models' engines) spinning threads take the cores the others need
                set_threads(model.engine, os.cpu_count() or 1)
            seconds = time.perf_counter() - t0
            nbytes = max(psutil.Process().memory_info().rss - rss0, _weights_bytes(model))
            engine = BatchingEngine(model.engine, row_limit=batch_limit(model), max_calls=self.settings.max_batch,
                                    max_bytes=self.settings.max_batch_bytes, max_delay=self.settings.batch_delay,
                                    on_execute=self._executed(src.name))
            model.engine = engine  # a public attribute: every predict call of this model goes through the batcher
            key = (src.name, weights_asked)
            if key in self._seen:
                self.reloads += 1
            self._seen.add(key)
            log.info("loaded %s (%s weights on %s) in %.2f s, %.0f MB", src.name, model.weights_format,
                     model.device, seconds, nbytes / 1e6)
            if self.on_load is not None:
                self.on_load(src.name, seconds)
            entry = LoadedModel(src.name, weights_asked, model, engine, src, seconds, nbytes)
            self._make_room(deadline, extra=0, adding=nbytes)
            return entry

    def _executed(self, name: str) -> Callable[[int, int, float], None] | None:
        if self.on_execute is None:
            return None
        cb = self.on_execute
        return lambda calls, rows, seconds: cb(name, calls, rows, seconds)

    def _over(self, extra: int, adding: int) -> bool:
        s = self.settings
        if len(self._loaded) + extra > s.max_models:
            return True
        if s.max_memory_bytes is not None and len(self._loaded) and \
                sum(e.nbytes for e in self._loaded.values()) + adding > s.max_memory_bytes:
            return True
        return False

    def _make_room(self, deadline: float | None, *, extra: int, adding: int = 0) -> None:
        """Evict idle models, least recently used first, until one more fits; wait while all are in use."""
        with self._cond:
            while self._over(extra, adding):
                idle = [k for k, e in self._loaded.items() if e.users == 0]
                if idle:
                    self._drop(idle[0], why="least recently used")
                    continue
                self._wait(deadline, f"all {len(self._loaded)} loaded models are in use (--max-models "
                           f"{self.settings.max_models})")

    def _drop(self, key: tuple[str, str | None], *, why: str) -> None:
        entry = self._loaded.pop(key)
        log.info("unloaded %s (%s)", entry.name, why)
        entry.engine.close()
        device = str(getattr(entry.model, "device", "cpu"))
        del entry
        gc.collect()
        if device.startswith("cuda") and "torch" in sys.modules:
            try:
                sys.modules["torch"].cuda.empty_cache()
            except Exception:  # noqa: BLE001 -- best effort; the process exit is the sure way
                pass

    def unload(self, name: str, *, timeout: float | None = None) -> int:
        """Unload every loaded format of ``name`` once idle; returns how many were unloaded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            keys = [k for k in self._loaded if k[0] == name]
            for k in keys:
                while k in self._loaded and self._loaded[k].users > 0:
                    self._wait(deadline, f"model {name!r} is in use")
                if k in self._loaded:
                    self._drop(k, why="asked")
            return len(keys)

    def close(self) -> None:
        with self._cond:
            for k in list(self._loaded):
                self._drop(k, why="server stopping")

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every servable or loaded model with its state."""
        with self._cond:
            loaded = {k[0] for k in self._loaded}
            loading = {k[0] for k in self._loading}
        rows = []
        names = [s.name for s in self.catalogue()]
        names += sorted((loaded | loading) - set(names))
        for n in names:
            state = "READY" if n in loaded else "LOADING" if n in loading else "UNAVAILABLE"
            row = {"name": n, "version": VERSION, "state": state}
            if state == "UNAVAILABLE":
                row["reason"] = "not loaded (loads on its first request)"
            rows.append(row)
        return rows


def _weights_bytes(model: Any) -> int:
    try:
        entry = getattr(model.descr.weights, model.weights_format)
        return os.path.getsize(model.package.file(entry))
    except Exception:  # noqa: BLE001 -- an estimate only
        return 0
