"""The server's settings, checked once before anything listens (:class:`ServeSettings`)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from .. import config
from ..errors import ConfigError

__all__ = ["ServeSettings", "MIN_TOKEN_LENGTH", "is_loopback"]

#: shortest token accepted: a guessable token is no protection on a network
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class ServeSettings:
    """What ``bioimgzoo serve`` was told (see :mod:`bioimgzoo.cli.serve` for the option of each field).

    Sizes are in bytes and pixels, times in seconds.  :meth:`checked` fills
    tokens from the environment and refuses unsafe or impossible settings.
    """

    #: MODEL arguments: ``SOURCE`` or ``NAME=SOURCE`` (folder, zip, rdf.yaml or zoo id), loaded at start
    models: Sequence[str] = ()
    #: zoo ids loaded at start (untrusted, like any on-demand load)
    preload: Sequence[str] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    admin_token: str | None = None
    #: the operator trusts the code of the packages named in ``models`` (never of anything a request names)
    trust_code: bool = False
    weights: str | None = None
    device: str | None = None
    #: most requests' engine calls merged into one (1: no batching across requests)
    max_batch: int = 8
    #: seconds a batch waits for more calls; 0 (as Triton's default): a batch is what queued while the engine
    #: ran. Why: on CPU, 128x128 images from 8 clients gave 0.87x the unbatched throughput with 5 ms, 0.94x with 0
    #: (1024x1024: 1.08x, 1.09x); a GPU, whose batches cost little more than one image, may want a few ms
    batch_delay: float = 0.0
    max_batch_bytes: int = 64 << 20
    max_body_bytes: int = 256 << 20
    #: most pixels (values) of one synchronous request's input; larger images go through jobs
    max_pixels: int = 64 << 20
    max_models: int = 4
    max_memory_bytes: int | None = None
    #: folders whose package subfolders / zips are served on request, by folder or file name
    allow_folders: Sequence[Path] = ()
    #: folders job inputs and outputs must lie under
    data_roots: Sequence[Path] = ()
    scheduler: str | None = None
    #: zoo ids (from the configured hub or mirror) may be loaded on request
    hub: bool = True
    #: requests admitted at once (running and waiting); more get 429
    queue: int = 64
    #: threads running predictions
    workers: int = 8
    timeout: float = 300.0
    #: where jobs are recorded (so a restart resumes them); None: no jobs persisted
    state_dir: Path | None = None
    #: seconds in-flight requests get after SIGTERM
    grace: float = 30.0

    def checked(self) -> "ServeSettings":
        """These settings with tokens from the environment, or a ConfigError naming what is unsafe."""
        token = self.token or config.serve_token()
        admin = self.admin_token or config.serve_admin_token()
        for what, value in (("--token", token), ("--admin-token", admin)):
            if value is not None and (len(value) < MIN_TOKEN_LENGTH or not re.fullmatch(r"[\x21-\x7e]+", value)):
                raise ConfigError(f"{what} must be at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                                  "(e.g. from `python -c \"import secrets; print(secrets.token_urlsafe(24))\"`)")
        if token is not None and admin is not None and token == admin:
            raise ConfigError("--admin-token must differ from --token: whoever may predict must not load models")
        if not is_loopback(self.host) and token is None:
            raise ConfigError(f"serving on {self.host} (reachable from other machines) needs a token: pass --token "
                              "or set BIOIMGZOO_SERVE_TOKEN (clients send 'Authorization: Bearer TOKEN'), or "
                              "serve on 127.0.0.1")
        for name, value, low in (("--port", self.port, 0), ("--max-batch", self.max_batch, 1),
                                 ("--max-models", self.max_models, 1), ("--queue", self.queue, 1),
                                 ("--workers", self.workers, 1), ("--max-body-mb", self.max_body_bytes, 1),
                                 ("--max-pixels", self.max_pixels, 1)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} {value!r} is not valid: give a whole number of at least {low}")
        if not self.timeout > 0 or not self.batch_delay >= 0:
            raise ConfigError("--timeout must be above 0 and --batch-delay-ms at least 0")
        folders = []
        for f in list(self.allow_folders) + list(self.data_roots):
            p = Path(f).expanduser()
            if not p.is_dir():
                raise ConfigError(f"{f} is not a folder: --allow-folder and --data-root take existing folders")
            folders.append(p.resolve())
        n = len(self.allow_folders)
        return replace(self, token=token, admin_token=admin, allow_folders=tuple(folders[:n]),
                       data_roots=tuple(folders[n:]),
                       state_dir=Path(self.state_dir).expanduser().resolve() if self.state_dir else None)
