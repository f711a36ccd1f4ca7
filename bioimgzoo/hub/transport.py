"""HTTP for the zoo client: one transport function, retries, error translation, progress.

:func:`http_stream` is the only code that talks to the network (through
httpx); everything else -- :func:`get_bytes`, :func:`get_json`,
:func:`download_to` -- builds on it.  Redirects are followed (the zoo
answers file requests with a redirect to presigned storage), proxies come
from the usual ``HTTP(S)_PROXY`` / ``NO_PROXY`` variables.

Failures become :class:`~bioimgzoo.errors.DownloadError` (with the URL, the
status and the fix in the message); transient ones -- connection errors,
timeouts, a connection cut mid-body, HTTP 5xx/408/429 -- are retried
``config.http_retries()`` times with exponential backoff and jitter.  The
backoff is :data:`BACKOFF_BASE_S` doubled per attempt and capped at
:data:`BACKOFF_MAX_S` (module attributes, so tests can shorten them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlencode, urlsplit

from .. import __version__, config
from ..errors import DownloadError, IntegrityError

__all__ = ["http_stream", "get_bytes", "get_json", "download_to", "HttpStatusError",
           "BACKOFF_BASE_S", "BACKOFF_MAX_S"]

log = logging.getLogger("bioimgzoo.hub")

#: First retry delay in seconds; doubled per attempt (with jitter).
BACKOFF_BASE_S = 0.5
#: Upper bound of one retry delay in seconds.
BACKOFF_MAX_S = 10.0
#: Largest response read into memory (rdf, manifest, listings).
MAX_MEMORY_BYTES = 64 << 20
_CHUNK = 1 << 16

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}

OFFLINE_HINT = "models already in the cache load without network with --offline (BIOIMGZOO_OFFLINE=1)"


class HttpStatusError(DownloadError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, url: str, status: int):
        super().__init__(message)
        self.url = url
        self.status = status
        self.transient = status in _TRANSIENT_STATUS


class _TransientError(DownloadError):
    """Connection failure, timeout or cut body: worth another try."""

    transient = True


def _display_url(url: str, params: dict | None) -> str:
    return f"{url}?{urlencode(params)}" if params else url


_CLIENT = None
_CLIENT_LOCK = threading.Lock()


def _client():
    """One shared httpx client per process (connection reuse across files)."""
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None:
            import httpx

            _CLIENT = httpx.Client(follow_redirects=True, max_redirects=10,
                                   headers={"User-Agent": f"bioimgzoo/{__version__}"})
        return _CLIENT


@contextlib.contextmanager
def http_stream(url: str, *, params: dict | None = None, timeout: float | None = None) -> Iterator[Any]:
    """GET ``url`` (following redirects) and yield the streaming ``httpx.Response``.

    The only function that touches the network.  HTTP error statuses raise
    :class:`HttpStatusError`; httpx exceptions -- also those raised while the
    caller reads the body -- become :class:`DownloadError` subclasses.
    """
    import httpx

    timeout = config.http_timeout() if timeout is None else timeout
    shown = _display_url(url, params)
    try:
        with _client().stream("GET", url, params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                raise _status_error(response, shown)
            yield response
    except httpx.TimeoutException as e:
        raise _TransientError(
            f"GET {shown} timed out after {timeout:g} s ({type(e).__name__}): the server did not answer in "
            f"time. Check the network, or allow more time with BIOIMGZOO_TIMEOUT; {OFFLINE_HINT}.") from e
    except httpx.ConnectError as e:
        host = urlsplit(url).netloc
        raise _TransientError(
            f"cannot connect to {host} (GET {shown}: {e or type(e).__name__}). Check the network and the "
            f"hub address (BIOIMGZOO_HUB or --hub); {OFFLINE_HINT}.") from e
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as e:
        raise _TransientError(
            f"the connection broke during GET {shown} ({e or type(e).__name__}). "
            f"Try again; {OFFLINE_HINT}.") from e
    except httpx.TooManyRedirects as e:
        raise DownloadError(f"GET {shown}: too many redirects; the server is misconfigured: "
                            "check the hub address (BIOIMGZOO_HUB or --hub)") from e
    except httpx.UnsupportedProtocol as e:
        raise DownloadError(f"{shown}: only http:// and https:// addresses are supported ({e}); serve a "
                            "mirror folder over HTTP (python -m http.server) and point BIOIMGZOO_HUB at it") from e
    except httpx.InvalidURL as e:
        raise DownloadError(f"{shown} is not a valid URL ({e}): check the hub address or the model URL") from e
    except (httpx.HTTPError, httpx.StreamError) as e:
        raise _TransientError(f"GET {shown} failed ({type(e).__name__}: {e}). {OFFLINE_HINT[0].upper()}"
                              f"{OFFLINE_HINT[1:]}.") from e


def _status_error(response: Any, shown: str) -> HttpStatusError:
    status = response.status_code
    reason = response.reason_phrase or ""
    redirected = str(response.url) != shown and str(response.url).split("?")[0] != shown.split("?")[0]
    where = f"GET {shown}" + (f" (redirected to {str(response.url).split('?')[0]})" if redirected else "")
    if status == 404:
        fix = ("the server has no such file or model: check the model id and version; "
               "a mirror must hold every file that is used (re-run `bioimgzoo mirror`)")
    elif status in (401, 403):
        fix = "the server refused access: the file is private or the download link expired; try again"
    elif status == 429:
        fix = "the server limits the request rate: wait a minute and try again"
    elif status >= 500:
        fix = (f"the zoo server has a problem: try again later, or use a mirror (BIOIMGZOO_HUB / --hub); "
               f"{OFFLINE_HINT}")
    else:
        fix = "check the model id, version and hub address"
    return HttpStatusError(f"{where} failed: HTTP {status} {reason}".rstrip() + f". {fix[0].upper()}{fix[1:]}.",
                           url=shown, status=status)


T = TypeVar("T")


def _backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** attempt)) * (0.5 + random.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_MAX_S))
    return delay


def with_retries(operation: Callable[[], T], *, what: str, retries: int | None = None) -> T:
    """Run ``operation``; retry transient DownloadErrors with exponential backoff."""
    retries = config.http_retries() if retries is None else max(0, retries)
    attempt = 0
    while True:
        try:
            return operation()
        except DownloadError as e:
            if not getattr(e, "transient", False) or attempt >= retries:
                if attempt:
                    raise type(e)(f"{e} (gave up after {attempt + 1} attempts)", **_extra(e)) from e
                raise
            delay = _backoff_delay(attempt)
            log.info("%s failed (%s); retry %d of %d in %.2f s", what, e, attempt + 1, retries, delay)
            time.sleep(delay)
            attempt += 1


def _extra(e: DownloadError) -> dict:
    return {"url": e.url, "status": e.status} if isinstance(e, HttpStatusError) else {}


def get_bytes(url: str, *, params: dict | None = None, what: str = "download",
              retries: int | None = None) -> bytes:
    """The body of ``url`` (small responses: rdf, manifest, listings), with retries."""

    def once() -> bytes:
        with http_stream(url, params=params) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > MAX_MEMORY_BYTES:
                    raise DownloadError(f"GET {_display_url(url, params)}: the answer is larger than "
                                        f"{MAX_MEMORY_BYTES >> 20} MiB, which no description or listing is: "
                                        "check the URL")
                chunks.append(chunk)
            _check_length(response, size, url, params)
            return b"".join(chunks)

    return with_retries(once, what=what, retries=retries)


def get_json(url: str, *, params: dict | None = None, what: str = "download",
             retries: int | None = None) -> Any:
    """``url``'s body parsed as JSON; a non-JSON answer is a DownloadError."""
    data = get_bytes(url, params=params, what=what, retries=retries)
    try:
        return json.loads(data)
    except ValueError as e:
        start = data[:60].decode("utf-8", "replace")
        raise DownloadError(f"GET {_display_url(url, params)} did not return JSON (it starts with {start!r}): "
                            "the address is not a zoo hub or mirror; check BIOIMGZOO_HUB / --hub") from e


def _check_length(response: Any, received: int, url: str, params: dict | None) -> None:
    expected = response.headers.get("content-length")
    encoded = response.headers.get("content-encoding", "identity") not in ("", "identity")
    if expected and not encoded and expected.isdigit() and int(expected) != received:
        raise _TransientError(f"GET {_display_url(url, params)}: the connection ended after {received} of "
                              f"{expected} bytes. Try again; {OFFLINE_HINT}.")


def download_to(url: str, dest: Path, *, params: dict | None = None, sha256: str | None = None,
                progress: bool = False, what: str | None = None, retries: int | None = None) -> str:
    """Stream ``url`` into ``dest`` (truncated per attempt) and return its sha256.

    With ``sha256`` given, a mismatch raises :class:`IntegrityError` (not
    retried: the server holds different content than the rdf declares).
    """
    what = what or url
    shown = _display_url(url, params)

    def once() -> str:
        digest = hashlib.sha256()
        size = 0
        with http_stream(url, params=params) as response, open(dest, "wb") as out, \
                _progress_bar(progress, what, response) as advance:
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                advance(len(chunk))
            _check_length(response, size, url, params)
        return digest.hexdigest()

    actual = with_retries(once, what=f"download of {what}", retries=retries)
    if sha256 and actual != sha256.lower():
        raise IntegrityError(
            f"{what}: sha256 mismatch after download from {shown} (the rdf declares {sha256.lower()}, "
            f"the server sent {actual}). Nothing was cached. The file on the server is corrupt or was "
            "replaced: try again later, report it to the model's maintainers, or use another hub/mirror.")
    return actual


@contextlib.contextmanager
def _progress_bar(enabled: bool, what: str, response: Any) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    total = response.headers.get("content-length")
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                   transient=True)
    label = what.rsplit(": ", 1)[-1]
    with bar:
        task = bar.add_task(label, total=int(total) if total and total.isdigit() else None)
        yield lambda n: bar.advance(task, n)
