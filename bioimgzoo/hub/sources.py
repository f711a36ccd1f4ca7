"""Package sources for zoo ids and http(s) URLs, cached and pinned.

:func:`source_for_id` resolves ``affable-shark``, ``affable-shark/v1``,
``bioimage-io/affable-shark`` or (with ``allow_draft=True``)
``affable-shark/draft`` against the hub (see :mod:`.endpoints`):

1. the artifact manifest ``{hub}/bioimage-io/artifacts/{alias}`` gives the
   published versions (a server without manifests still works: the rdf is
   fetched directly);
2. the rdf comes from ``.../files/rdf.yaml?version={resolved version}``;
3. on a miss, the legacy id map (``BIOIMAGEIO_ID_MAP``; the public map only
   for the public hub) is tried, then the error suggests close matches.

Pinning: the first resolution of a request (``latest``, ``v1``, ...) is
stored as a pin (see :mod:`.cache`): the resolved version and the rdf's
sha256.  From then on the same request opens **with no network at all**;
``latest`` is *not* re-checked automatically -- a model does not change under
a running analysis -- until the user asks: ``update=True``,
``bioimgzoo pull ID --update``, or ``bioimgzoo cache clear ID``.  Published
versions are immutable, so pins of explicit versions never go stale.
Staged drafts change while under review: with network they are re-resolved
on every load; offline, the last draft pinned is used.

Files are fetched one at a time when a use needs them
(:meth:`CachedPackageSource.fetch`), verified against the rdf's sha256 and
stored atomically (see :mod:`.download`).
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from .. import config
from ..errors import BioimgzooError, DownloadError, HubError, IntegrityError, ModelNotFoundError, OfflineError
from ..package import PackageSource, ZipSource, safe_relpath
from . import transport
from .cache import CacheLayout, Pin, cache_layout
from .download import cached_fetch
from .endpoints import HUGGINGFACE_PATTERN, HubEndpoints, ZooId, hub_endpoints, parse_zoo_id

__all__ = ["CachedPackageSource", "source_for_id", "source_for_url", "fetch_url", "resolve_pin"]

log = logging.getLogger("bioimgzoo.hub")


class CachedPackageSource:
    """A zoo model or rdf URL, read through the cache.  Satisfies ``PackageSource``."""

    def __init__(self, *, name: str, pin: Pin, package_dir: Path, layout: CacheLayout, offline: bool,
                 progress: bool, pull_hint: str):
        self.name = name
        self.pin = pin
        self.package_dir = package_dir
        self.layout = layout
        self.offline = offline
        self.progress = progress
        self._pull_hint = pull_hint
        #: True when this source's rdf was just fetched from the network (not from a pin).
        self.resolved_now = False

    @property
    def base_url(self) -> str:
        """URL of the folder with the package files (the spec's validation root)."""
        return self.pin.base_url

    @property
    def version(self) -> str | None:
        return self.pin.version

    @property
    def snapshot_dir(self) -> Path:
        """Local folder presenting this version's cached files under their own names."""
        return self.layout.snapshot_dir(self.package_dir, self.pin.rdf_sha256)

    def manifest(self) -> dict | None:
        """The hub's artifact manifest as cached at resolution (no network)."""
        if not self.pin.manifest_sha256:
            return None
        data = self.layout.read_blob_verified(self.pin.manifest_sha256)
        return json.loads(data) if data else None

    def read_rdf(self) -> tuple[bytes, str]:
        data = self.layout.read_blob_verified(self.pin.rdf_sha256)
        if data is None:
            raise HubError(f"the cached rdf of {self.name} is missing or corrupt: {self._pull_hint} --update")
        return data, self.pin.rdf_name

    def file_url(self, path: str) -> str:
        return self.pin.base_url + quote(path, safe="/")

    def is_cached(self, path: str, *, sha256: str | None) -> bool:
        """True when :meth:`fetch` would need no network for ``path``."""
        from .download import download_action

        rel = safe_relpath(path, self.name)
        return download_action(self.layout, link=self.snapshot_dir / rel,
                               sha256=sha256).kind != "download"

    def fetch(self, path: str, *, sha256: str | None) -> Path:
        rel = safe_relpath(path, self.name)
        return cached_fetch(
            self.pin.base_url + quote(rel, safe="/"), params=self.pin.params or None,
            link=self.snapshot_dir / rel, sha256=sha256, offline=self.offline, progress=self.progress,
            what=f"{self.name}: {rel}", layout=self.layout,
            offline_hint=f"Fetch it first on a machine with network ({self._pull_hint} --all-files, or "
                         "--weights FORMAT), or turn offline mode off (unset BIOIMGZOO_OFFLINE / drop --offline).")

    def fetch_url(self, url: str, *, sha256: str | None) -> Path:
        """An absolute file URL named in the rdf, with this source's offline/progress options."""
        return fetch_url(url, sha256=sha256, offline=self.offline, progress=self.progress)

    def __repr__(self) -> str:
        return f"CachedPackageSource({self.name!r})"


# ---------------------------------------------------------------------------- ids


def _zoo_name(alias: str, pin: Pin, endpoints_identity: str) -> str:
    name = f"zoo model {alias}"
    if pin.version == "stage":
        name += " (staged draft)"
    elif pin.version:
        name += f" (version {pin.version})"
    if endpoints_identity and endpoints_identity != config.DEFAULT_HUB:
        name += f" from {endpoints_identity}"
    return name


def source_for_id(id: str, *, hub: str | None = None, offline: bool | None = None, allow_draft: bool = False,
                  progress: bool = False, update: bool = False) -> CachedPackageSource:
    """Source of a zoo model by id, pinned after its first resolution.

    Parameters
    ----------
    id : str
        ``affable-shark``, ``affable-shark/v1`` (``/1`` means ``v1``),
        ``bioimage-io/affable-shark``, ``affable-shark/draft``,
        ``huggingface/USER/REPO[/VERSION]``.
    hub : str, optional
        Hub base URL (default ``BIOIMGZOO_HUB``, see :mod:`.endpoints`).
    offline : bool, optional
        Never touch the network (default ``BIOIMGZOO_OFFLINE``); pins of any
        hub are used, and a miss raises :class:`OfflineError`.
    allow_draft : bool
        Allow the unreviewed staged version (``/draft``).
    progress : bool
        Show progress bars for downloads.
    update : bool
        Re-resolve (``latest`` may move to a newer version) instead of
        using the pin.
    """
    zid = parse_zoo_id(id)
    offline = config.offline() if offline is None else bool(offline)
    if zid.huggingface:
        branch = f"v{zid.version}" if zid.version else "main"
        return source_for_url(HUGGINGFACE_PATTERN.format(repo_id=zid.huggingface, branch=branch),
                              offline=offline, progress=progress, update=update)
    if zid.draft and not allow_draft:
        raise HubError(f"{zid.raw!r} is an unreviewed staged (draft) version: anyone can stage one and it has "
                       "not been checked by the zoo. Load it only if you trust it: allow_draft=True "
                       "(CLI: --draft); or load the published version: " + zid.alias)
    endpoints = hub_endpoints(hub)
    layout = cache_layout()
    pin, pkg_dir, fresh = resolve_pin(zid, endpoints=endpoints, layout=layout, offline=offline, update=update)
    source = CachedPackageSource(name=_zoo_name(zid.alias, pin, pin.hub), pin=pin, package_dir=pkg_dir,
                                 layout=layout, offline=offline, progress=progress,
                                 pull_hint=f"bioimgzoo pull {zid}")
    source.resolved_now = fresh
    return source


def resolve_pin(zid: ZooId, *, endpoints: HubEndpoints, layout: CacheLayout, offline: bool,
                update: bool = False) -> tuple[Pin, Path, bool]:
    """The pin of ``zid`` and its package folder, from the cache or resolved on the hub and stored.

    The third value is True when the hub was asked just now.
    """
    pkg_dir = layout.zoo_package_dir(endpoints.identity, zid.alias)
    # drafts change while under review: re-resolved whenever the network may be used
    use_pin = not update and (offline or not zid.draft)
    if use_pin:
        pin = layout.read_pin(pkg_dir, zid.request)
        if pin is not None:
            log.debug("%s: pinned to version %s (rdf %s)", zid, pin.version, pin.rdf_sha256[:12])
            return pin, pkg_dir, False
    if offline:
        if update:
            raise OfflineError(f"updating {zid} needs the network: drop --offline (unset BIOIMGZOO_OFFLINE)")
        pins = layout.find_zoo_pins(zid.alias, zid.request)
        if pins:
            log.info("offline: using %s as cached from %s", zid, pins[0].hub)
            return pins[0], layout.zoo_package_dir(pins[0].hub, zid.alias), False
        cached_versions = sorted({p.version for kind, _d, _s, p in layout.iter_pins()
                                  if kind == "zoo" and p.id == zid.alias and p.version})
        close = difflib.get_close_matches(zid.alias, layout.cached_ids(), n=3, cutoff=0.6)
        if cached_versions:
            hint = (f" Cached versions: {_some(cached_versions)} (load {zid.alias}/{cached_versions[-1]}).")
        else:
            hint = f" Cached models with similar ids: {', '.join(close)}." if close else ""
        raise OfflineError(
            f"{zid} is not in the cache ({layout.root}) and offline mode is on.{hint} Pull it first on a "
            f"machine with network (bioimgzoo pull {zid}, with the same BIOIMGZOO_CACHE), or turn offline "
            "mode off (unset BIOIMGZOO_OFFLINE / drop --offline).")
    with layout.locked(f"pin-{pkg_dir.parent.name}-{pkg_dir.name}-{zid.request}", what=str(zid)):
        if use_pin:  # another process may have resolved it while we waited
            pin = layout.read_pin(pkg_dir, zid.request)
            if pin is not None:
                return pin, pkg_dir, False
        pin = _resolve_online(zid, endpoints, layout)
        layout.write_pin(pkg_dir, zid.request, pin)
        if pin.version and pin.version != zid.request and pin.origin == "zoo" and not zid.draft:
            layout.write_pin(pkg_dir, pin.version, pin)  # "latest" -> v1 also answers "v1"
        log.info("resolved %s on %s to version %s", zid, endpoints.describe(), pin.version)
    return pin, pkg_dir, True


def _some(names: list[str], n: int = 10) -> str:
    """The last ``n`` of a listing (the newest versions), and how many more there are."""
    shown = ", ".join(str(v)[:40] for v in names[-n:])
    return shown if len(names) <= n else f"{shown} (and {len(names) - n:,} older)"


def _match_version(requested: str, versions: list[str]) -> str | None:
    """``v1`` -> ``v1``; ``1`` -> ``v1``; otherwise None."""
    for cand in (requested, f"v{requested}"):
        if cand in versions:
            return cand
    return None


def _check_description(data: bytes, where: str) -> None:
    """Refuse to pin something that is not an rdf (an HTML login page, a listing)."""
    from .._yaml import load_yaml
    from ..errors import InvalidDescriptionError

    try:
        content = load_yaml(data, where)  # limits (bombs, depth, size) hold for server answers too
    except InvalidDescriptionError:
        content = None
    if not isinstance(content, dict) or not ({"format_version", "type"} & set(content)):
        start = data[:60].decode("utf-8", "replace")
        raise DownloadError(f"{where} is not a bioimage.io description (it starts with {start!r}): the "
                            "address is not a zoo hub or mirror, or a proxy answered instead; check "
                            "BIOIMGZOO_HUB / --hub and the model id")


def _resolve_online(zid: ZooId, endpoints: HubEndpoints, layout: CacheLayout) -> Pin:
    manifest_data, manifest = None, None
    if endpoints.is_hypha:
        try:
            manifest_data = transport.get_bytes(endpoints.manifest_url(zid.alias),
                                                what=f"manifest of {zid.alias}")
            manifest = json.loads(manifest_data)
        except transport.HttpStatusError as e:
            if e.status != 404:
                raise
        except BioimgzooError:  # limits, integrity (a ValueError too): never read as "no manifest"
            raise
        except (ValueError, RecursionError):  # e.g. a static server's directory listing: no manifest here
            manifest = None
        if not isinstance(manifest, dict):
            manifest_data, manifest = None, None
    versions = [str(v["version"]) for v in (manifest or {}).get("versions") or []
                if isinstance(v, dict) and v.get("version") is not None]
    if zid.draft:
        version: str | None = "stage"
    elif zid.version is None:
        version = versions[-1] if versions else None
    elif versions:
        version = _match_version(zid.version, versions)
        if version is None:
            pin = _resolve_id_map(zid, endpoints, layout)  # legacy versions ("affable-shark/1.1")
            if pin is not None:
                return pin
            raise ModelNotFoundError(
                f"{zid.alias} has no version {zid.version!r} on {endpoints.describe()}; available: "
                f"{_some(versions)}. Load one of these ({zid.alias}/{versions[-1]}) or the latest "
                f"({zid.alias}).")
    else:
        version = zid.version
    if endpoints.is_hypha:
        rdf_url, files_url = endpoints.rdf_url(zid.alias), endpoints.files_url(zid.alias)
        params = {"version": version} if version else {}
    else:  # a collection pattern sees the id as typed, like bioimageio.spec does
        bioimageio_id = str(zid)
        rdf_url, files_url, params = endpoints.rdf_url(bioimageio_id), endpoints.files_url(bioimageio_id), {}
    try:
        data = transport.get_bytes(rdf_url, params=params or None, what=f"rdf of {zid}",
                                   limit=transport.rdf_limit())
    except transport.HttpStatusError as e:
        if e.status != 404:
            raise
        if zid.draft:
            raise ModelNotFoundError(f"{zid.alias} has no staged (draft) version on {endpoints.describe()}: "
                                     f"load the published one ({zid.alias})") from None
        pin = _resolve_id_map(zid, endpoints, layout)
        if pin is not None:
            return pin
        raise _not_found(zid, endpoints, layout) from None
    _check_description(data, f"GET {rdf_url}")
    sha = layout.store_bytes(data)
    return Pin(origin="zoo" if endpoints.is_hypha else "pattern", id=zid.alias, hub=endpoints.identity,
               version=version, rdf_sha256=sha, rdf_name=rdf_url.rsplit("/", 1)[-1] or "rdf.yaml",
               base_url=files_url, params=params,
               manifest_sha256=layout.store_bytes(manifest_data) if manifest_data else None)


_ID_MAPS: dict[str, dict] = {}


def _load_id_map(url: str) -> dict:
    """The legacy id map (memoised per process); unavailable -> empty (it is only a fallback)."""
    if url not in _ID_MAPS:
        try:
            data = transport.get_json(url, what="legacy id map", retries=0)
            _ID_MAPS[url] = data if isinstance(data, dict) else {}
        except DownloadError as e:
            log.info("legacy id map %s unavailable: %s", url, e)
            return {}
    return _ID_MAPS[url]


def _resolve_id_map(zid: ZooId, endpoints: HubEndpoints, layout: CacheLayout) -> Pin | None:
    url = endpoints.id_map_url()
    if not url:
        return None
    id_map = _load_id_map(url)
    keys = [zid.raw, str(zid)] + ([zid.alias] if zid.version is None else [])
    entry = next((id_map[k] for k in keys if isinstance(id_map.get(k), dict)), None)
    if entry is None or not entry.get("source"):
        return None
    source, sha = str(entry["source"]), entry.get("sha256")
    data = transport.get_bytes(source, what=f"rdf of {zid} (legacy id map)", limit=transport.rdf_limit())
    if sha:
        import hashlib

        actual = hashlib.sha256(data).hexdigest()
        if actual != str(sha).lower():
            raise IntegrityError(f"rdf of {zid} from {source}: sha256 mismatch (the id map {url} declares {sha}, "
                                 f"the server sent {actual}). Nothing was cached; try again later.")
    _check_description(data, f"GET {source}")
    actual = layout.store_bytes(data)
    log.info("%s resolved through the legacy id map %s", zid, url)
    parts = urlsplit(source)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rsplit("/", 1)[0] + "/", "", ""))
    return Pin(origin="id_map", id=zid.alias, hub=endpoints.identity, version=zid.version, rdf_sha256=actual,
               rdf_name=parts.path.rsplit("/", 1)[-1] or "rdf.yaml", base_url=base,
               params=dict(parse_qsl(parts.query)))


def _not_found(zid: ZooId, endpoints: HubEndpoints, layout: CacheLayout) -> ModelNotFoundError:
    candidates: set[str] = set(layout.cached_ids())
    if endpoints.is_hypha:
        from .search import iter_children

        try:
            # suggestions are a courtesy: no retries, so a typo never waits on a struggling hub
            for item in iter_children(endpoints, max_items=2000, page_size=500, retries=0):
                alias = item.get("alias") or str(item.get("id", "")).split("/")[-1]
                if alias:
                    candidates.add(str(alias))
        except (DownloadError, ValueError, TypeError) as e:  # suggestions are best-effort
            log.info("cannot list %s for suggestions: %s", endpoints.describe(), e)
    id_map_url = endpoints.id_map_url()
    if id_map_url:
        candidates.update(k for k in _load_id_map(id_map_url) if "/" not in k)
    close = difflib.get_close_matches(zid.alias, sorted(candidates), n=3, cutoff=0.6)
    if len(close) == 1:
        hint = f" Did you mean {close[0]!r}?"
    elif close:
        hint = f" Did you mean one of {', '.join(repr(c) for c in close)}?"
    else:
        hint = ""
    return ModelNotFoundError(f"no model {zid.raw!r} on {endpoints.describe()}.{hint} "
                              "`bioimgzoo search QUERY` lists the models there.")


# ---------------------------------------------------------------------------- URLs


def _looks_like_zip_url(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return path.endswith(".zip") or path.endswith("/create-zip-file")


def source_for_url(url: str, *, offline: bool | None = None, progress: bool = False, update: bool = False,
                   **_ignored: Any) -> PackageSource:
    """Source of a package at an http(s) URL: an rdf.yaml/bioimageio.yaml (siblings relative to it) or a zip.

    Pinned like ids: the second open of the same URL needs no network
    (``update=True`` fetches the rdf again).  Query parameters of the URL
    (``?version=v1``) are sent with every sibling file request too.
    """
    offline = config.offline() if offline is None else bool(offline)
    layout = cache_layout()
    if _looks_like_zip_url(url):
        local = fetch_url(url, sha256=None, offline=offline, progress=progress)
        source = ZipSource(local)
        source.name = f"zip {url}"
        return source
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rsplit("/", 1)[0] + "/", "", ""))
    rdf_name = parts.path.rsplit("/", 1)[-1] or "rdf.yaml"
    pkg_dir = layout.url_package_dir(url)
    pin = None if update else layout.read_pin(pkg_dir, "rdf")
    fresh = pin is None
    if pin is None:
        if offline:
            raise OfflineError(f"{url} is not in the cache ({layout.root}) and offline mode is on: open it once "
                               "with network (same BIOIMGZOO_CACHE), or turn offline mode off "
                               "(unset BIOIMGZOO_OFFLINE / drop --offline)")
        with layout.locked(f"pin-{pkg_dir.name}", what=url):
            try:
                data = transport.get_bytes(url, what=f"rdf {url}", limit=transport.rdf_limit())
            except transport.HttpStatusError as e:
                if e.status == 404:
                    raise ModelNotFoundError(f"no package at {url} (HTTP 404): check the URL") from None
                raise
            _check_description(data, f"GET {url}")
            pin = Pin(origin="url", id=url, hub="", version=None, rdf_sha256=layout.store_bytes(data),
                      rdf_name=rdf_name, base_url=base, params=dict(parse_qsl(parts.query)))
            layout.write_pin(pkg_dir, "rdf", pin)
    source = CachedPackageSource(name=f"package {url}", pin=pin, package_dir=pkg_dir, layout=layout,
                                 offline=offline, progress=progress, pull_hint=f"bioimgzoo pull {url}")
    source.resolved_now = fresh
    return source


def fetch_url(url: str, *, sha256: str | None, offline: bool | None = None, progress: bool = False) -> Path:
    """Local, verified copy of an absolute file URL (cached; offline: cache only).

    The file keeps its name (``urls/{url_key}/{name}`` in the cache), so
    readers that pick a format by suffix work.
    """
    offline = config.offline() if offline is None else bool(offline)
    layout = cache_layout()
    return cached_fetch(url, link=layout.url_file_link(url), sha256=sha256, offline=offline,
                        progress=progress, what=url, layout=layout)
