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

Limits (a hostile or broken server must not fill the disk or hold a process
forever):

* size: a downloaded file may be at most ``config.max_file_bytes()``
  (``BIOIMGZOO_MAX_FILE_BYTES``), an rdf ``config.max_rdf_bytes()``
  (``BIOIMGZOO_MAX_RDF_BYTES``), a manifest or listing
  :data:`MAX_MEMORY_BYTES`.  A ``Content-Length`` over the limit is refused
  before the body is read; without one, reading stops as soon as the body
  passes the limit; a body longer than its ``Content-Length`` is an error.
  These raise :class:`~bioimgzoo.errors.LimitExceededError` and are never
  retried.
* time: one file's download, all attempts and reads together, ends after
  ``config.download_deadline()`` seconds (``BIOIMGZOO_DOWNLOAD_DEADLINE``),
  however slowly the server drips bytes; ``BIOIMGZOO_TIMEOUT`` only bounds
  a single read.  Each read waits at most the time left, so a download ends
  at the deadline plus at most one read's wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlencode, urlsplit

from .. import config
from .._version import __version__
from .._text import rich_safe
from ..errors import DeadlineError, DownloadError, HttpStatusError, IntegrityError, LimitExceededError

__all__ = ["http_stream", "get_bytes", "get_json", "download_to", "HttpStatusError", "DeadlineError", "Limit",
           "file_limit", "rdf_limit", "BACKOFF_BASE_S", "BACKOFF_MAX_S", "MAX_MEMORY_BYTES"]

log = logging.getLogger("bioimgzoo.hub")

#: First retry delay in seconds; doubled per attempt (with jitter).
BACKOFF_BASE_S = 0.5
#: Upper bound of one retry delay in seconds.
BACKOFF_MAX_S = 10.0
#: Largest manifest, listing or id map read into memory (rdfs have their own,
#: configurable limit: ``config.max_rdf_bytes()``).  No genuine one comes close.
MAX_MEMORY_BYTES = 64 << 20


OFFLINE_HINT = "models already in the cache load without network with --offline (BIOIMGZOO_OFFLINE=1)"


class _TransientError(DownloadError):
    """Connection failure, timeout or cut body: worth another try."""

    transient = True


@dataclass(frozen=True)
class Limit:
    """How large a body may be, and the setting that raises it (named in the refusal)."""

    bytes: int
    #: Environment variable that raises the limit; None for a fixed one.
    setting: str | None = None

    def hint(self) -> str:
        if self.setting:
            return f"If the file is genuine, raise {self.setting} (now {self.bytes})"
        return "No genuine answer is this large: check the URL and the hub address (BIOIMGZOO_HUB / --hub)"


def file_limit() -> Limit:
    """The limit of one downloaded package file."""
    return Limit(config.max_file_bytes(), "BIOIMGZOO_MAX_FILE_BYTES")


def rdf_limit() -> Limit:
    """The limit of one description (rdf.yaml)."""
    return Limit(config.max_rdf_bytes(), "BIOIMGZOO_MAX_RDF_BYTES")


class _Deadline:
    """The end of one file's download, shared by all its attempts and reads."""

    def __init__(self, what: str, seconds: float | None = None):
        self.seconds = config.download_deadline() if seconds is None else seconds
        self.what = what
        self.end = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, received: int | None = None) -> None:
        if self.left() <= 0:
            got = f" ({received} bytes received)" if received is not None else ""
            raise DeadlineError(
                f"{self.what}: the download did not finish within {self.seconds:g} s{got}; the server is too "
                "slow or stalls. Try again later or use another hub/mirror, or allow more time with "
                "BIOIMGZOO_DOWNLOAD_DEADLINE (seconds).")

    def read_timeout(self, timeout: float) -> float:
        """The per-read timeout: never longer than the time left (so a stalled read ends near the deadline)."""
        return max(0.001, min(timeout, self.left()))


def _display_url(url: str, params: dict | None) -> str:
    return f"{url}?{urlencode(params)}" if params else url


_CLIENT = None
_CLIENT_LOCK = threading.Lock()

#: hosts of the hubs this process was pointed at (:func:`note_hub`): a failure to reach one is the hub
#: setting's to fix; any other host is where a package's file lives (the package or the hub's redirect
#: names it), which no hub setting changes
_HUB_HOSTS: set[str] = set()


def note_hub(url: str) -> None:
    """Remember ``url``'s host as a hub's (messages about it then name ``BIOIMGZOO_HUB`` / ``--hub``)."""
    _HUB_HOSTS.add(urlsplit(url).netloc.lower())


def _where_to_look(url: str) -> str:
    """What to check when ``url``'s host fails: the hub setting for a hub, else that host itself."""
    host = urlsplit(url).netloc
    if host.lower() in _HUB_HOSTS:
        return f"the hub address (BIOIMGZOO_HUB or --hub; now {host})"
    return (f"that {host} is up: the file lives there, named by the package (or the hub's redirect), so "
            "BIOIMGZOO_HUB / --hub do not change it; try again later or ask the model's maintainers")


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
def http_stream(url: str, *, params: dict | None = None, timeout: float | None = None,
                headers: dict | None = None) -> Iterator[Any]:
    """GET ``url`` (following redirects) and yield the streaming ``httpx.Response``.

    The only function that touches the network.  HTTP error statuses raise
    :class:`HttpStatusError`; httpx exceptions -- also those raised while the
    caller reads the body -- become :class:`DownloadError` subclasses.
    """
    import httpx

    timeout = config.http_timeout() if timeout is None else timeout
    shown = _display_url(url, params)
    try:
        with _client().stream("GET", url, params=params, timeout=timeout, headers=headers) as response:
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
            f"cannot connect to {host} (GET {shown}: {e or type(e).__name__}). Check the network and "
            f"{_where_to_look(url)}; {OFFLINE_HINT}.") from e
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as e:
        raise _TransientError(
            f"the connection broke during GET {shown} ({e or type(e).__name__}). "
            f"Try again; {OFFLINE_HINT}.") from e
    except httpx.TooManyRedirects as e:
        raise DownloadError(f"GET {shown}: too many redirects; the server {urlsplit(url).netloc} is "
                            f"misconfigured: check {_where_to_look(url)}") from e
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
        host = urlsplit(shown).netloc
        fix = (f"the zoo server {host} has a problem: try again later, or use a mirror (BIOIMGZOO_HUB / --hub); "
               f"{OFFLINE_HINT}" if host.lower() in _HUB_HOSTS else
               f"{host} has a problem (the file lives there, not on the hub): try again later; {OFFLINE_HINT}")
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
              retries: int | None = None, limit: Limit | None = None) -> bytes:
    """The body of ``url`` (small responses: rdf, manifest, listings), with retries.

    ``limit`` caps the body (default :data:`MAX_MEMORY_BYTES`; pass
    :func:`rdf_limit` for a description); the whole fetch ends at
    ``config.download_deadline()``.
    """
    limit = limit or Limit(MAX_MEMORY_BYTES)
    deadline = _Deadline(f"{what} (GET {_display_url(url, params)})")

    def once() -> bytes:
        deadline.check()
        with http_stream(url, params=params, timeout=deadline.read_timeout(config.http_timeout())) as response:
            chunks = list(_read_body(response, url=url, params=params, what=what, limit=limit,
                                     deadline=deadline))
            return b"".join(chunks)

    return with_retries(once, what=what, retries=retries)


def get_json(url: str, *, params: dict | None = None, what: str = "download",
             retries: int | None = None, limit: Limit | None = None) -> Any:
    """``url``'s body parsed as JSON; a non-JSON (or absurdly nested) answer is a DownloadError."""
    data = get_bytes(url, params=params, what=what, retries=retries, limit=limit)
    try:
        return json.loads(data)
    except RecursionError as e:  # "[[[[...]]]]" from a hostile server
        raise DownloadError(f"GET {_display_url(url, params)} returned JSON nested too deeply to be a zoo "
                            "answer: check BIOIMGZOO_HUB / --hub") from e
    except ValueError as e:
        start = data[:60].decode("utf-8", "replace")
        raise DownloadError(f"GET {_display_url(url, params)} did not return JSON (it starts with {start!r}): "
                            "the address is not a zoo hub or mirror; check BIOIMGZOO_HUB / --hub") from e


def _declared_length(response: Any) -> int | None:
    """The body size the server announced (``Content-Length``), when it is usable."""
    expected = (response.headers.get("content-length") or "").strip()
    return int(expected) if expected.isdigit() else None


def _identity(response: Any) -> bool:
    return response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity")


def _read_body(response: Any, *, url: str, params: dict | None, what: str, limit: Limit,
               deadline: _Deadline) -> Iterator[bytes]:
    """Yield the body's chunks, enforcing ``limit``, the declared length and ``deadline``.

    A ``Content-Length`` over the limit is refused before a byte is read; a
    body without one stops as soon as it passes the limit.  Limit errors are
    :class:`LimitExceededError` (not a DownloadError, so never retried).
    """
    shown = _display_url(url, params)
    declared = _declared_length(response)
    identity = _identity(response)
    if declared is not None and declared > limit.bytes:
        raise LimitExceededError(
            f"{what}: the server announces {declared} bytes (GET {shown}), more than the {limit.bytes} allowed: "
            f"refused before downloading. {limit.hint()}.")
    size = 0
    # no chunk size: httpx would buffer up to it, and a slow server would keep us from checking the clock
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit.bytes:
            raise LimitExceededError(
                f"{what}: the download (GET {shown}) passed the {limit.bytes} bytes allowed and was stopped"
                f"{'' if declared is None else f' (the server announced {declared})'}. {limit.hint()}.")
        if identity and declared is not None and size > declared:
            # decoded bodies (gzip) may legitimately be longer than the bytes on the wire
            raise DownloadError(
                f"{what}: the server sent more than the {declared} bytes it announced (GET {shown}): the "
                "download was stopped. The server is broken or hostile: use another hub/mirror.")
        # checked before handing the chunk on, so a body that did complete is never failed for time
        deadline.check(size)
        yield chunk
    if identity and declared is not None and size != declared:
        raise _TransientError(f"GET {shown}: the connection ended after {size} of "
                              f"{declared} bytes. Try again; {OFFLINE_HINT}.")


def download_to(url: str, dest: Path, *, params: dict | None = None, sha256: str | None = None,
                progress: bool = False, what: str | None = None, retries: int | None = None,
                limit: Limit | None = None) -> str:
    """Stream ``url`` into ``dest`` (truncated per attempt) and return its sha256.

    With ``sha256`` given, a mismatch raises :class:`IntegrityError` (not
    retried: the server holds different content than the rdf declares).
    The file may be at most ``limit`` (default :func:`file_limit`) and the
    download, all attempts together, ends at ``config.download_deadline()``;
    see the module docstring.  ``dest`` is left partial on failure: the
    caller owns it (and removes it).
    """
    what = what or url
    shown = _display_url(url, params)
    limit = limit or file_limit()
    deadline = _Deadline(what)

    def once() -> str:
        deadline.check()
        digest = hashlib.sha256()
        # the sha256 is of the file's bytes: ask for them as they are (no gzip to inflate on our side)
        with http_stream(url, params=params, timeout=deadline.read_timeout(config.http_timeout()),
                         headers={"Accept-Encoding": "identity"}) as response, open(dest, "wb") as out, \
                _progress_bar(progress, what, response) as advance:
            for chunk in _read_body(response, url=url, params=params, what=what, limit=limit,
                                    deadline=deadline):
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
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
    # the label comes from the rdf (a file name): rich would interpret markup in it
    label = rich_safe(what.rsplit(": ", 1)[-1], single_line=True, max_len=60)
    with bar:
        task = bar.add_task(label, total=int(total) if total and total.isdigit() else None)
        yield lambda n: bar.advance(task, n)
