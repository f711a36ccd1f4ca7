"""Batching across requests: an engine that gathers the windows of concurrent predictions into one call.

Each request runs its own :meth:`~bioimgzoo.runtime.model.Model.predict`
(its own executor: statistics, windows, stitching and postprocessing stay
per request, so every response equals an in-process prediction).  What
they share is the model's engine, and :class:`BatchingEngine` is put in its
place (``model.engine`` is a public attribute, read by every predict call):
an executor's call to ``engine.run(windows)`` queues its windows and waits;
one worker thread per model takes the queue, concatenates the calls whose
windows have the same shape and type along the batch axis, runs the real
engine once and hands each caller its rows back.

When a batch is sent
--------------------
* at once when every prediction in flight on this model (counted by
  :meth:`BatchingEngine.in_flight`) is waiting in the queue: a lone
  request never waits;
* when it is full: ``max_calls`` calls, ``max_bytes`` of input, or the
  model's batch size;
* else ``max_delay`` seconds after its first call arrived (the server's default is 0: a batch is
  what queued while the engine ran the previous one).

Only one engine call runs at a time per model (the next batch gathers
while it runs); ``max_calls=1`` turns batching off and keeps just that.
A model whose tensors lack a batch axis, or takes a fixed batch size, is
never merged.  If a merged call fails or gives outputs without one row per
window, every call of it is run again on its own (and that model is no
longer merged), so a caller only ever sees its own result or error.

Attributes other than this wrapper's own are read from and written to the
wrapped engine (e.g. ``session``), so code that reconfigures
``model.engine`` (threads) reaches the real one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger("bioimgzoo.serve")

__all__ = ["BatchingEngine", "batch_limit"]

#: default most input bytes merged into one engine call
MAX_BATCH_BYTES = 64 << 20

_OWN = frozenset({"inner", "max_calls", "max_bytes", "max_delay", "row_limit", "mergeable", "on_execute",
                  "_cond", "_queue", "_active", "_closed", "_worker", "_stats_lock", "calls", "executions"})


def batch_limit(model: Any) -> int | None:
    """Rows one engine call may take for ``model``: None (any), 1 (fixed), or 0 when tensors lack a batch axis."""
    specs = list(model.inputs) + list(model.outputs)
    if not all(t.has_batch for t in specs):
        return 0
    limits = {t.batch_limit() for t in model.inputs}
    return None if limits == {None} else 1


class _Call:
    __slots__ = ("inputs", "rows", "key", "nbytes", "arrived", "done", "result", "error")

    def __init__(self, inputs: list[np.ndarray]):
        self.inputs = inputs
        rows = {int(a.shape[0]) if a.ndim else -1 for a in inputs}
        self.rows = rows.pop() if len(rows) == 1 else -1  # -1: cannot be merged
        self.key = tuple((a.shape[1:], a.dtype.str) for a in inputs)
        self.nbytes = sum(a.nbytes for a in inputs)
        self.arrived = time.perf_counter()
        self.done = threading.Event()
        self.result: list[np.ndarray] | None = None
        self.error: BaseException | None = None


class BatchingEngine:
    """Wraps an :class:`~bioimgzoo.runtime.engines.Engine`; see the module docstring.

    Parameters
    ----------
    inner : Engine
        The model's engine.
    row_limit : int or None
        Most rows (windows) per engine call; None for any, 0 or 1: never
        merge (see :func:`batch_limit`).
    max_calls : int
        Most callers' calls merged into one engine call (1: no batching).
    max_bytes : int
        Most input bytes merged into one engine call.
    max_delay : float
        Seconds a batch waits for more calls when predictions in flight are
        not all waiting.
    on_execute : callable, optional
        ``on_execute(n_calls, n_rows, seconds)`` after every engine call.
    """

    def __init__(self, inner: Any, *, row_limit: int | None, max_calls: int = 8, max_bytes: int = MAX_BATCH_BYTES,
                 max_delay: float = 0.005, on_execute: Callable[[int, int, float], None] | None = None):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "row_limit", row_limit)
        object.__setattr__(self, "mergeable", max_calls > 1 and (row_limit is None or row_limit > 1))
        object.__setattr__(self, "max_calls", max(1, int(max_calls)))
        object.__setattr__(self, "max_bytes", max(1, int(max_bytes)))
        object.__setattr__(self, "max_delay", max(0.0, float(max_delay)))
        object.__setattr__(self, "on_execute", on_execute)
        object.__setattr__(self, "_cond", threading.Condition())
        object.__setattr__(self, "_queue", deque())
        object.__setattr__(self, "_active", 0)
        object.__setattr__(self, "_closed", False)
        object.__setattr__(self, "_worker", None)
        object.__setattr__(self, "calls", 0)  # callers' engine calls served
        object.__setattr__(self, "executions", 0)  # real engine calls made

    # the Engine protocol -------------------------------------------------------------
    @property
    def format(self) -> str:
        return self.inner.format

    @property
    def device(self) -> str:
        return self.inner.device

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Queue ``inputs`` (one caller's windows), wait for their batch, return their rows of the outputs."""
        call = _Call([np.asarray(a) for a in inputs])
        with self._cond:
            if self._closed:
                raise RuntimeError("the model was unloaded while a prediction was running")
            if self._worker is None:
                worker = threading.Thread(target=self._work, name="bioimgzoo-batcher", daemon=True)
                object.__setattr__(self, "_worker", worker)
                worker.start()
            self._queue.append(call)
            self._cond.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    # callers in flight -----------------------------------------------------------------
    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count one prediction as in flight (its calls may come): a batch waits only for these."""
        with self._cond:
            object.__setattr__(self, "_active", self._active + 1)
        try:
            yield
        finally:
            with self._cond:
                object.__setattr__(self, "_active", self._active - 1)
                self._cond.notify_all()  # one fewer to wait for

    def close(self) -> None:
        """Stop the worker once the queue is empty; later calls raise."""
        with self._cond:
            object.__setattr__(self, "_closed", True)
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=60)

    # the worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._gather()
            self._execute(batch)

    def _gather(self) -> list[_Call]:
        """The next batch (called with the lock held): waits until it is full, everyone waits, or time is up."""
        first = self._queue[0]
        deadline = first.arrived + self.max_delay
        while True:
            batch = self._select(first)
            full = (len(batch) >= self.max_calls or sum(c.nbytes for c in batch) >= self.max_bytes
                    or (self.row_limit is not None and sum(c.rows for c in batch) >= self.row_limit))
            everyone = len(self._queue) >= self._active
            now = time.perf_counter()
            if not self.mergeable or full or everyone or now >= deadline or self._closed:
                break
            self._cond.wait(deadline - now)
        for c in batch:
            self._queue.remove(c)
        return batch

    def _select(self, first: _Call) -> list[_Call]:
        batch, nbytes, rows = [first], first.nbytes, first.rows
        if not self.mergeable or first.rows < 1:
            return batch
        for c in list(self._queue)[1:]:
            if len(batch) >= self.max_calls:
                break
            if c.key != first.key or c.rows < 1:
                continue
            if nbytes + c.nbytes > self.max_bytes or (self.row_limit is not None and rows + c.rows > self.row_limit):
                break
            batch.append(c)
            nbytes += c.nbytes
            rows += c.rows
        return batch

    def _execute(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        t0 = time.perf_counter()
        try:
            feeds = [np.concatenate([c.inputs[i] for c in batch], axis=0) for i in range(len(batch[0].inputs))]
            outs = self.inner.run(feeds)
            total = sum(c.rows for c in batch)
            if any(np.ndim(o) == 0 or np.shape(o)[0] != total for o in outs):
                raise _NotRowWise()
        except Exception as e:  # noqa: BLE001 -- every caller gets its own result or error below
            if isinstance(e, _NotRowWise):
                log.info("the engine's outputs have no row per window: calls are no longer merged")
                object.__setattr__(self, "mergeable", False)
            for c in batch:
                self._run_alone(c)
            return
        start = 0
        for c in batch:
            c.result = [np.ascontiguousarray(o[start:start + c.rows]) for o in outs]
            start += c.rows
        self._executed(len(batch), total, time.perf_counter() - t0)
        for c in batch:
            c.done.set()

    def _run_alone(self, call: _Call) -> None:
        t0 = time.perf_counter()
        try:
            call.result = list(self.inner.run(call.inputs))
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread, raised there
            call.error = e
        self._executed(1, max(call.rows, 1), time.perf_counter() - t0)
        call.done.set()

    def _executed(self, calls: int, rows: int, seconds: float) -> None:
        object.__setattr__(self, "executions", self.executions + 1)
        object.__setattr__(self, "calls", self.calls + calls)
        if self.on_execute is not None:
            try:
                self.on_execute(calls, rows, seconds)
            except Exception:  # noqa: BLE001 -- metrics never break a prediction
                log.exception("batcher metrics callback failed")

    # attributes of the wrapped engine ---------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in _OWN:
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def __repr__(self) -> str:
        return f"<BatchingEngine of {self.inner!r} max_calls={self.max_calls}>"


class _NotRowWise(Exception):
    """A merged call's outputs do not have one row per window."""
