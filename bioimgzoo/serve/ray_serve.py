"""The same server on Ray Serve: replicas behind Ray's proxy, multiplexed models, ``@serve.batch``, autoscaling.

``pip install 'bioimgzoo[ray]'``, then::

    import ray
    from ray import serve
    from bioimgzoo.serve import ServeSettings
    from bioimgzoo.serve.ray_serve import build_app

    ray.init()
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_app(ServeSettings(models=["nuclei=/models/unet2d-nuclei-broad"]), max_replicas=4))

Every replica runs the whole application of :func:`~.app.create_app`: the
same protocol, tokens, limits and errors as ``bioimgzoo serve``; replicas
keep no state of their own (jobs are off here: run them on a
``bioimgzoo serve`` with ``--scheduler``).

* **Multiplexed models**: ``@serve.multiplexed`` keeps up to
  ``models_per_replica`` models warm per replica and tells Ray's router
  which replica holds which; clients that send the header
  ``serve_multiplexed_model_id: NAME`` are routed to a replica where NAME
  is loaded.  Ray's eviction unloads through the replica's registry, which
  waits for the model's requests in flight to finish.
* **Batching**: predictions go through a ``@serve.batch`` method
  (``max_batch``, ``batch_wait_s``); the requests of a batch run together
  and the model's :class:`~.batcher.BatchingEngine` merges their windows
  into engine calls, as in ``bioimgzoo serve``.
* **Autoscaling on queue depth**: ``min_replicas`` to ``max_replicas``,
  targeting ``target_ongoing_requests`` requests per replica.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from .app import Server, create_app
from .registry import NAME_PATTERN
from .settings import ServeSettings

__all__ = ["build_app", "PREDICTION_PATHS"]

#: path endings of the requests that go through ``@serve.batch``
PREDICTION_PATHS = ("/infer", "/predict")


async def call_asgi(app: Any, scope: dict, body: bytes) -> tuple[int, list, bytes]:
    """Run one HTTP request through an ASGI ``app``; returns status, headers and body."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the request is already whole
        return {"type": "http.disconnect"}

    status, headers, chunks = 500, [], []

    async def send(message: dict) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, headers, b"".join(chunks)


class _Warm:
    """A model held warm by Ray's multiplexer; unloaded (once) when Ray evicts it."""

    def __init__(self, server: Server, name: str):
        self.server, self.name, self.unloaded = server, name, False

    def __del__(self) -> None:
        if not self.unloaded:
            self.unloaded = True
            try:
                self.server.registry.unload(self.name, timeout=self.server.settings.timeout)
            except Exception:  # noqa: BLE001 -- best effort; never raise from __del__
                pass


def build_app(settings: ServeSettings, *, min_replicas: int = 1, max_replicas: int = 2, models_per_replica: int = 2,
              max_batch: int = 8, batch_wait_s: float = 0.005, target_ongoing_requests: float = 4.0) -> Any:
    """A Ray Serve application serving ``settings`` (see the module docstring)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    checked = replace(settings.checked(), max_models=models_per_replica, data_roots=(), state_dir=None)

    @serve.deployment(name="bioimgzoo", max_ongoing_requests=max(checked.queue, max_batch),
                      autoscaling_config={"min_replicas": min_replicas, "max_replicas": max_replicas,
                                          "target_ongoing_requests": target_ongoing_requests})
    class Bioimgzoo:
        def __init__(self, conf: ServeSettings):
            self.server = Server(conf)
            self.server.preload()
            self.app = create_app(conf, server=self.server)

        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def warm(self, name: str) -> _Warm:
            reg = self.server.registry
            await asyncio.get_running_loop().run_in_executor(None, lambda: reg.release(reg.acquire(name)))
            return _Warm(self.server, name)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s)
        async def predict(self, calls: list[tuple[dict, bytes]]) -> list[tuple[int, list, bytes]]:
            # the batch's requests run together: their engine calls merge in the model's BatchingEngine
            return list(await asyncio.gather(*(call_asgi(self.app, scope, body) for scope, body in calls)))

        async def __call__(self, request: Request) -> Response:
            scope, body = request.scope, await request.body()
            path = scope.get("path", "")
            if path.endswith(PREDICTION_PATHS):
                parts = path.strip("/").split("/")
                name = parts[2] if len(parts) > 2 else ""
                if NAME_PATTERN.match(name):
                    try:
                        await self.warm(name)
                    except Exception:  # noqa: BLE001 -- the app answers the same error, in the protocol's form
                        pass
                status, headers, content = await self.predict((scope, body))
            else:
                status, headers, content = await call_asgi(self.app, scope, body)
            out = Response(content, status_code=status)
            out.raw_headers = [(k, v) for k, v in headers]
            return out

    return Bioimgzoo.bind(checked)
