"""Running the app under uvicorn: preload first, say where it listens, stop gracefully on SIGTERM.

:func:`serve` loads the models named on the command line *before* it
listens (a model that cannot load is one error message, not a server
without it), then runs uvicorn.  Once listening it prints one line,
``bioimgzoo serve: listening on http://HOST:PORT`` (with the real port
when ``port=0``).

SIGTERM or SIGINT: the server is marked not ready at once
(``/v2/health/ready`` answers 503, new predictions 503 with
``Retry-After``), uvicorn stops accepting connections and lets the
requests in flight finish (up to ``--grace`` seconds), running jobs stop at
their next work unit and stay queued for the next start, and the process
exits with status 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from .app import Server, create_app
from .settings import ServeSettings

__all__ = ["serve"]


def _uvicorn_server(config: Any, srv: Server) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            srv.begin_draining()  # not ready from the first signal on
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and isinstance(captured, list):
                # uvicorn (0.29+) raises a captured signal again once stopped, and the process dies of it
                # (status -15); a SIGTERM answered by a graceful stop is a normal end: exit status 0
                while signal.SIGTERM in captured:
                    captured.remove(signal.SIGTERM)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    shown = f"[{host}]" if ":" in host else host
                    print(f"bioimgzoo serve: listening on http://{shown}:{port}", flush=True)

    return _Server(config)


def serve(settings: ServeSettings, *, log_level: str = "info") -> None:
    """Check ``settings``, preload the models, serve until SIGTERM/SIGINT (blocking)."""
    import uvicorn

    settings = settings.checked()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("bioimgzoo.serve", "bioimgzoo.serve.access"):
        lg = logging.getLogger(name)
        lg.setLevel(getattr(logging, log_level.upper(), logging.INFO))
        lg.addHandler(handler)
        lg.propagate = False
    srv = Server(settings)
    srv.preload()
    app = create_app(settings, server=srv)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=max(1, int(settings.grace)),
                            server_header=False, timeout_keep_alive=5)
    _uvicorn_server(config, srv).run()
