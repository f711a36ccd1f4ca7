"""Search the zoo: the collection's ``children`` listing, page by page.

``GET {hub}/bioimage-io/artifacts/bioimage.io/children`` with ``keywords``,
``filters`` (``{"type": "model"}``), ``offset``, ``limit``,
``order_by=download_count>`` and ``pagination=true``.  Pages are requested
lazily, only as many as needed for ``limit`` hits.

A static mirror (any plain HTTP server) ignores query strings and returns
its whole listing for every request.  The client recognises that -- the
answer carries ``"static": true`` (as ``bioimgzoo mirror`` writes it), is a
plain list, holds more items than the page size asked for, or reports
another offset -- and then filters (keywords, type) and paginates on
its own side, so ``search`` gives the same results against a mirror as
against the hub.  Tags are always filtered on the client side.

Listings come from a server: a hit's fields are read defensively (a field of
the wrong type becomes empty, never a crash), the scan is bounded
(:data:`MAX_SCAN` entries, :data:`MAX_PAGES` pages), and the texts are
returned as sent -- whoever prints them escapes them (see
:mod:`bioimgzoo._text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .. import config
from ..errors import DownloadError, HubError, OfflineError
from . import transport
from .endpoints import HubEndpoints, hub_endpoints

__all__ = ["SearchHit", "search", "iter_children"]

#: Never scan more than this many listing entries for one search.
MAX_SCAN = 5000
#: Never request more than this many listing pages for one search (a server answering full
#: pages of junk forever must not keep the client asking).
MAX_PAGES = 200


@dataclass
class SearchHit:
    """One model of a search result."""

    id: str
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    weight_formats: list[str] = field(default_factory=list)
    downloads: int = 0
    type: str = "model"
    versions: list[str] = field(default_factory=list)


def _alias(item: dict) -> str:
    return str(item.get("alias") or str(item.get("id", "")).split("/")[-1])


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    """A list of strings from a listing field; anything else (a number, a mapping) is no list."""
    return [str(v) for v in value] if isinstance(value, list) else []


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def _matches(item: dict, keywords: Sequence[str], type: str | None) -> bool:
    """Client-side version of the hub's filtering (used for static listings)."""
    manifest = _dict(item.get("manifest"))
    if type and (item.get("type") or manifest.get("type")) != type:
        return False
    text = " ".join([_alias(item), str(manifest.get("name", "")), str(manifest.get("description", "")),
                     " ".join(_strings(manifest.get("tags")))]).lower()
    return all(k.lower() in text for k in keywords)


def iter_children(endpoints: HubEndpoints, *, keywords: Sequence[str] = (), type: str | None = None,
                  page_size: int = 100, max_items: int | None = None,
                  order_by: str = "download_count>", retries: int | None = None) -> Iterator[dict]:
    """Yield listing items of the collection, requesting pages as they are consumed."""
    url = endpoints.children_url()
    if url is None:
        raise HubError(f"{endpoints.describe()} is a URL pattern without a model listing: search needs a "
                       "Hypha hub or a mirror (BIOIMGZOO_HUB / --hub)")
    offset, yielded = 0, 0
    for _page in range(MAX_PAGES):
        params: dict[str, Any] = {"offset": offset, "limit": page_size, "pagination": "true",
                                  "order_by": order_by}
        if keywords:
            params["keywords"] = ",".join(keywords)
        if type:
            params["filters"] = json.dumps({"type": type})
        data = transport.get_json(url, params=params, what="model listing", retries=retries)
        if isinstance(data, list):
            items, total, static = data, len(data), True
        elif isinstance(data, dict) and isinstance(data.get("items"), list):
            items, total = data["items"], data.get("total")
            static = (data.get("static") is True or len(items) > page_size
                      or data.get("offset", offset) != offset)
        else:
            raise DownloadError(f"GET {url} did not return a model listing: check BIOIMGZOO_HUB / --hub")
        if static:  # a plain file: everything at once, filtered here
            items = [it for it in items if isinstance(it, dict) and _matches(it, keywords, type)][offset:]
        for item in items:
            if max_items is not None and yielded >= max_items:
                return
            if isinstance(item, dict):
                yielded += 1
                yield item
        offset += len(items)
        if static or not items or len(items) < page_size or (isinstance(total, int) and offset >= total):
            return


def _hit(item: dict) -> SearchHit:
    manifest = _dict(item.get("manifest"))
    versions = item.get("versions")
    return SearchHit(
        id=_alias(item), name=str(manifest.get("name") or _alias(item)),
        description=str(manifest.get("description") or ""),
        tags=_strings(manifest.get("tags")),
        weight_formats=[str(k) for k in _dict(manifest.get("weights"))],
        downloads=_count(item.get("download_count")), type=str(item.get("type") or manifest.get("type") or ""),
        versions=[str(v.get("version")) for v in (versions if isinstance(versions, list) else [])
                  if isinstance(v, dict)])


def search(query: str | None = None, *, tags: Sequence[str] = (), limit: int = 20, hub: str | None = None,
           type: str | None = "model", offline: bool | None = None, page_size: int | None = None) -> list[SearchHit]:
    """Search the zoo's models by keywords and tags, most downloaded first.

    Parameters
    ----------
    query : str, optional
        Keywords (space or comma separated); every one must match.
    tags : sequence of str
        Every tag must be among a model's tags (case-insensitive).
    limit : int
        Most hits to return.
    type : str, optional
        Resource type (``"model"``; None for all types).
    page_size : int, optional
        Listing page size (default: ``limit``, at most 100).
    """
    if (config.offline() if offline is None else offline):
        raise OfflineError("search needs the hub, and offline mode is on: `bioimgzoo cache list` shows the "
                           "cached models, or turn offline mode off (unset BIOIMGZOO_OFFLINE / drop --offline)")
    if limit < 1:
        return []
    endpoints = hub_endpoints(hub)
    keywords = query.replace(",", " ").split() if query else []
    wanted = {t.lower() for t in tags}
    page_size = page_size or (100 if wanted else min(limit, 100))
    hits: list[SearchHit] = []
    for item in iter_children(endpoints, keywords=keywords, type=type, page_size=page_size, max_items=MAX_SCAN):
        hit = _hit(item)
        if wanted and not wanted <= {t.lower() for t in hit.tags}:
            continue
        hits.append(hit)
        if len(hits) >= limit:
            break
    return hits
