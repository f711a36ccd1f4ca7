"""A local stand-in for the bioimage.io Hypha server, for tests.

Serves the zoo's URL layout (see ``shared/docs/zoo-protocol.md``) from
memory on ``127.0.0.1`` (random port), in a thread::

    GET /bioimage-io/artifacts/{alias}[?version=]          manifest (JSON)
    GET /bioimage-io/artifacts/{alias}/files/{path}?version=
                                                           302 -> /storage/{alias}/{version}/{path}?X-Amz-...
    GET /storage/{alias}/{version}/{path}                  the bytes
    GET /bioimage-io/artifacts/bioimage.io/children?keywords=&filters=&offset=&limit=&pagination=&order_by=
    GET /id_map.json                                       legacy id map (entries added with add_legacy_id)

Knobs inject failures on requests whose path contains a pattern: ``fail``
(HTTP status), ``slow`` (delay before answering), ``trickle`` (slow body),
``corrupt`` (flip bytes), ``cut`` (close the connection midway).  Hostile
modes for the limit tests: ``endless`` (a body with no Content-Length that
never ends -- bounded here by a byte count and a time, so a test that fails
cannot hang), ``drip`` (the same, slowly: ``chunk`` bytes per ``seconds``)
and ``declare`` (announce a huge Content-Length).  Every request is logged
in ``requests``.

Reuse from other tests::

    from bioimgzoo.testing.zoo_server import ZooServer

    with ZooServer() as server:
        server.publish_folder("affable-shark", fixture_folder)
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)

or the ``zoo_server`` / ``zoo_hub`` fixtures of ``tests/hub/conftest.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

__all__ = ["ZooServer", "Fault", "read_folder"]

_FOLDER_CACHE: dict[Path, dict[str, bytes]] = {}


def read_folder(folder: Path) -> dict[str, bytes]:
    """All files of a package folder by relative path (memoised: fixtures are read once)."""
    folder = Path(folder).resolve()
    if folder not in _FOLDER_CACHE:
        _FOLDER_CACHE[folder] = {p.relative_to(folder).as_posix(): p.read_bytes()
                                 for p in sorted(folder.rglob("*")) if p.is_file()}
    return dict(_FOLDER_CACHE[folder])


@dataclass
class Fault:
    pattern: str
    kind: str  # status | slow | trickle | corrupt | cut | endless | declare
    status: int = 500
    seconds: float = 0.0
    chunk: int = 65536
    after: int | None = None
    times: int | None = None  # None: every matching request
    hits: int = 0
    #: endless: stop after this many bytes / seconds at the latest (a bound for the test, not a feature)
    max_bytes: int = 256 << 20
    max_seconds: float = 20.0
    #: endless: bytes actually sent, per request (the test checks the client stopped early)
    sent: list = field(default_factory=list)

    def applies(self, path: str) -> bool:
        return self.pattern in path and (self.times is None or self.hits < self.times)


@dataclass
class Artifact:
    alias: str
    type: str = "model"
    versions: dict[str, dict[str, bytes]] = field(default_factory=dict)
    staged: dict[str, bytes] | None = None
    download_count: int = 0
    created_at: float = field(default_factory=time.time)

    def files(self, version: str | None) -> tuple[str, dict[str, bytes]] | None:
        names = list(self.versions)
        if version in (None, "", "latest"):
            return (names[-1], self.versions[names[-1]]) if names else None
        if version == "stage":
            return ("stage", self.staged) if self.staged is not None else None
        if version in self.versions:
            return version, self.versions[version]
        if version.isdigit() and int(version) < len(names):
            return names[int(version)], self.versions[names[int(version)]]
        return None

    def rdf(self, version: str | None = None) -> dict:
        found = self.files(version)
        if not found or "rdf.yaml" not in found[1]:
            return {}
        try:
            content = yaml.safe_load(found[1]["rdf.yaml"])
        except yaml.YAMLError:
            return {}
        return json.loads(json.dumps(content, default=str)) if isinstance(content, dict) else {}

    def item(self, version: str | None = None) -> dict:
        return {
            "id": f"bioimage-io/{self.alias}", "alias": self.alias, "type": self.type,
            "manifest": self.rdf(version),
            "versions": [{"version": v, "comment": "", "created_at": self.created_at} for v in self.versions],
            "staging": [{"path": p} for p in self.staged] if self.staged is not None else None,
            "created_at": self.created_at, "last_modified": self.created_at,
            "download_count": self.download_count,
        }


class ZooServer:
    """The zoo layout over HTTP on 127.0.0.1, with fault injection (see module docstring)."""

    def __init__(self, *, static_children: bool = False):
        self.artifacts: dict[str, Artifact] = {}
        self.legacy: dict[str, tuple[str, str]] = {}
        self.faults: list[Fault] = []
        self.requests: list[str] = []
        #: Answer ``children`` with the full list regardless of offset (like a static mirror).
        self.static_children = static_children
        #: Set when a trickled body has started (for tests that kill a client midway).
        self.body_started = threading.Event()
        #: When set, answered verbatim (as JSON) for every listing request: a hostile or broken listing.
        self.children_override: object | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ content
    def publish(self, alias: str, files: Mapping[str, bytes], *, version: str | None = None, stage: bool = False,
                type: str = "model", download_count: int | None = None) -> str:
        """Publish ``files`` (path -> bytes, with ``rdf.yaml``) as a new version (or the staged one)."""
        art = self.artifacts.setdefault(alias, Artifact(alias=alias, type=type))
        if download_count is not None:
            art.download_count = download_count
        if stage:
            art.staged = dict(files)
            return "stage"
        version = version or f"v{len(art.versions)}"
        art.versions[version] = dict(files)
        return version

    def publish_folder(self, alias: str, folder: Path, *, rdf_changes: Mapping[str, object] | None = None,
                       **kwargs) -> str:
        """Publish a package folder; ``rdf_changes`` overrides top-level rdf fields (a new rdf)."""
        files = read_folder(folder)
        if rdf_changes:
            content = yaml.safe_load(files["rdf.yaml"])
            content.update(rdf_changes)
            files["rdf.yaml"] = yaml.safe_dump(content, sort_keys=False).encode()
        return self.publish(alias, files, **kwargs)

    def publish_listing_only(self, alias: str, *, name: str, tags=(), description: str = "", weights=("onnx",),
                             download_count: int = 0, type: str = "model") -> str:
        """A light model for search tests: a small rdf, no weight files."""
        rdf = {"format_version": "0.5.4", "type": type, "name": name, "description": description,
               "tags": list(tags), "weights": {w: {"source": f"weights.{w}"} for w in weights}}
        return self.publish(alias, {"rdf.yaml": yaml.safe_dump(rdf).encode()}, type=type,
                            download_count=download_count)

    def add_legacy_id(self, legacy_id: str, alias: str, version: str) -> None:
        """Make ``legacy_id`` resolvable only through /id_map.json (pointing at the storage URL)."""
        self.legacy[legacy_id] = (alias, version)

    # ------------------------------------------------------------------ knobs
    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(self, pattern: str, status: int = 500, *, times: int | None = None) -> Fault:
        return self._add(Fault(pattern, "status", status=status, times=times))

    def slow(self, pattern: str, seconds: float, *, times: int | None = None) -> Fault:
        return self._add(Fault(pattern, "slow", seconds=seconds, times=times))

    def trickle(self, pattern: str, *, chunk: int = 65536, seconds: float = 0.05, times: int | None = None) -> Fault:
        return self._add(Fault(pattern, "trickle", chunk=chunk, seconds=seconds, times=times))

    def corrupt(self, pattern: str, *, times: int | None = None) -> Fault:
        return self._add(Fault(pattern, "corrupt", times=times))

    def cut(self, pattern: str, *, after: int | None = None, times: int | None = 1) -> Fault:
        return self._add(Fault(pattern, "cut", after=after, times=times))

    def endless(self, pattern: str, *, chunk: int = 65536, seconds: float = 0.0, max_bytes: int = 256 << 20,
                max_seconds: float = 20.0, times: int | None = None) -> Fault:
        """Answer with a body that has no Content-Length and does not end (until the bounds)."""
        return self._add(Fault(pattern, "endless", chunk=chunk, seconds=seconds, max_bytes=max_bytes,
                               max_seconds=max_seconds, times=times))

    def drip(self, pattern: str, *, bytes_per_second: int = 2048, max_seconds: float = 20.0,
             times: int | None = None) -> Fault:
        """A server sending ``bytes_per_second`` forever (until ``max_seconds``): a slow-drip attack."""
        return self.endless(pattern, chunk=max(1, bytes_per_second // 4), seconds=0.25,
                            max_bytes=bytes_per_second * int(max_seconds + 1), max_seconds=max_seconds, times=times)

    def declare(self, pattern: str, length: int, *, times: int | None = None) -> Fault:
        """Announce ``length`` bytes in Content-Length (then send the real, shorter body)."""
        return self._add(Fault(pattern, "declare", after=length, times=times))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def count(self, pattern: str = "") -> int:
        """Requests so far whose path (with query) contains ``pattern``."""
        with self._lock:
            return sum(pattern in r for r in self.requests)

    def _take_faults(self, path: str) -> list[Fault]:
        with self._lock:
            taken = [f for f in self.faults if f.applies(path)]
            for f in taken:
                f.hits += 1
            return taken

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ZooServer":
        server = self

        class Handler(_Handler):
            zoo = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "ZooServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a test may stop the server while a slow handler sleeps
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # a client that went away is expected
        pass


class _Handler(BaseHTTPRequestHandler):
    zoo: ZooServer
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------ helpers
    def _send(self, status: int, body: bytes, *, content_type: str = "application/json",
              headers: Mapping[str, str] | None = None, faults: list[Fault] = ()) -> None:
        for f in faults:
            if f.kind == "corrupt" and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
        endless = next((f for f in faults if f.kind == "endless"), None)
        if endless is not None and status == 200:
            return self._send_endless(endless, content_type)
        declare = next((f for f in faults if f.kind == "declare"), None)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(declare.after if declare is not None and status == 200 else len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        cut = next((f for f in faults if f.kind == "cut"), None)
        trickle = next((f for f in faults if f.kind == "trickle"), None)
        try:
            if cut is not None:
                self.wfile.write(body[: cut.after if cut.after is not None else len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if trickle is not None:
                for i in range(0, len(body), trickle.chunk):
                    self.wfile.write(body[i:i + trickle.chunk])
                    self.wfile.flush()
                    self.zoo.body_started.set()
                    time.sleep(trickle.seconds)
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client went away (killed, timed out)

    def _send_endless(self, fault: Fault, content_type: str) -> None:
        """No Content-Length (HTTP/1.0: the body ends when the connection closes), and it does not end."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        sent, start = 0, time.monotonic()
        block = b"\0" * fault.chunk
        try:
            while sent < fault.max_bytes and time.monotonic() - start < fault.max_seconds:
                self.wfile.write(block)
                self.wfile.flush()
                sent += len(block)
                self.zoo.body_started.set()
                if fault.seconds:
                    time.sleep(fault.seconds)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client stopped reading: what the limit tests want
        finally:
            fault.sent.append(sent)
        self.close_connection = True

    def _json(self, data: object, status: int = 200, faults: list[Fault] = ()) -> None:
        self._send(status, json.dumps(data).encode(), faults=faults)

    def _error(self, status: int, message: str) -> None:
        self._json({"detail": message}, status)

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        with self.zoo._lock:
            self.zoo.requests.append(self.path)
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = unquote(parts.path)
        faults = self.zoo._take_faults(self.path)
        for f in faults:
            if f.kind == "slow":
                time.sleep(f.seconds)
        status_fault = next((f for f in faults if f.kind == "status"), None)
        if status_fault is not None:
            return self._error(status_fault.status, f"injected HTTP {status_fault.status}")
        segs = [s for s in path.split("/") if s]
        if path == "/id_map.json":
            return self._id_map()
        if segs[:1] == ["storage"] and len(segs) >= 4:
            return self._storage(segs[1], segs[2], "/".join(segs[3:]), faults)
        if segs[:2] != ["bioimage-io", "artifacts"] or len(segs) < 3:
            return self._error(404, "not found")
        alias = segs[2]
        if alias == "bioimage.io" and segs[3:] == ["children"]:
            return self._children(query, faults)
        art = self.zoo.artifacts.get(alias)
        if art is None:
            return self._error(404, f"artifact bioimage-io/{alias} does not exist")
        if len(segs) == 3:
            if art.files(query.get("version")) is None:
                return self._error(404, f"no version {query.get('version')}")
            return self._json(art.item(query.get("version")), faults=faults)
        if segs[3] == "files" and len(segs) > 4:
            found = art.files(query.get("version"))
            rel = "/".join(segs[4:])
            if found is None or rel not in found[1]:
                return self._error(404, f"file {rel} not found")
            art.download_count += rel == "rdf.yaml"
            target = f"/storage/{quote(alias)}/{quote(found[0])}/{quote(rel)}?X-Amz-Signature=test"
            return self._send(302, b"", headers={"Location": target})
        return self._error(404, "not found")

    def _storage(self, alias: str, version: str, rel: str, faults: list[Fault]) -> None:
        art = self.zoo.artifacts.get(alias)
        found = art.files(version) if art else None
        if found is None or rel not in found[1]:
            return self._error(404, "no such object")
        self._send(200, found[1][rel], content_type="application/octet-stream", faults=faults)

    def _children(self, query: Mapping[str, str], faults: list[Fault]) -> None:
        if self.zoo.children_override is not None:
            return self._json(self.zoo.children_override, faults=faults)
        if self.zoo.static_children:  # a file on a plain server: the query string is ignored
            items = sorted((a.item() for a in self.zoo.artifacts.values() if a.versions),
                           key=lambda it: -it["download_count"])
            return self._json({"items": items, "total": len(items), "offset": 0, "limit": len(items)},
                              faults=faults)
        keywords = [k.strip().lower() for k in query.get("keywords", "").split(",") if k.strip()]
        filters = json.loads(query["filters"]) if query.get("filters") else {}
        items = []
        for art in self.zoo.artifacts.values():
            if not art.versions:
                continue
            item = art.item()
            if filters.get("type") and art.type != filters["type"]:
                continue
            m = item["manifest"]
            text = " ".join([art.alias, str(m.get("name", "")), str(m.get("description", "")),
                             " ".join(map(str, m.get("tags") or []))]).lower()
            if all(k in text for k in keywords):
                items.append(item)
        if query.get("order_by", "").startswith("download_count"):
            items.sort(key=lambda it: it["download_count"], reverse=query["order_by"].endswith(">"))
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
        page = items[offset:offset + limit]
        if query.get("pagination") == "true":
            return self._json({"items": page, "total": len(items), "offset": offset, "limit": limit},
                              faults=faults)
        return self._json(page, faults=faults)

    def _id_map(self) -> None:
        import hashlib

        out = {}
        for legacy_id, (alias, version) in self.zoo.legacy.items():
            rdf = self.zoo.artifacts[alias].versions[version]["rdf.yaml"]
            host, port = self.server.server_address[:2]
            out[legacy_id] = {"source": f"http://{host}:{port}/storage/{alias}/{version}/rdf.yaml",
                              "sha256": hashlib.sha256(rdf).hexdigest()}
        self._json(out)
