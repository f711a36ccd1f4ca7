"""Zoo ids and the URLs of a hub (the Hypha layout of bioimage.io, a mirror, or a URL pattern).

Which hub is used, first match wins:

1. ``hub=`` / ``--hub``;
2. ``BIOIMGZOO_HUB``;
3. bioimageio.spec's ``BIOIMAGEIO_COLLECTION_HTTP_PATTERN``: when it has the
   Hypha shape (``{base}/bioimage-io/artifacts/{bioimageio_id}/files/rdf.yaml``)
   ``{base}`` is the hub with the full protocol (manifest, versions, search);
   any other pattern is used as is to find an id's rdf, siblings relative to it;
4. ``https://hypha.aicell.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from .. import config
from ..errors import HubError, ModelNotFoundError

__all__ = ["ZooId", "parse_zoo_id", "HubEndpoints", "hub_endpoints", "WORKSPACE", "COLLECTION"]

WORKSPACE = "bioimage-io"
COLLECTION = "bioimage.io"
DEFAULT_ID_MAP = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/id_map.json"
HUGGINGFACE_PATTERN = "https://huggingface.co/{repo_id}/resolve/{branch}/package/bioimageio.yaml"

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DRAFT = {"draft", "stage", "staged"}
_HYPHA_PATTERN = re.compile(r"^(?P<base>https?://.+?)/bioimage-io/artifacts/\{bioimageio_id\}/files/rdf\.yaml$")


@dataclass(frozen=True)
class ZooId:
    """A parsed model id: ``affable-shark``, ``affable-shark/v1``, ``bioimage-io/affable-shark/draft``."""

    #: What the user typed (used for the legacy id map and messages).
    raw: str
    alias: str
    #: Requested version (``v1``, ``1.2``) or None for the latest published one.
    version: str | None = None
    draft: bool = False
    #: ``user/repo`` for ``huggingface/user/repo[/version]`` ids.
    huggingface: str | None = None

    @property
    def request(self) -> str:
        """The pin name of this request: ``latest``, ``stage`` or the version."""
        return "stage" if self.draft else (self.version or "latest")

    def __str__(self) -> str:
        return self.alias + ("/draft" if self.draft else f"/{self.version}" if self.version else "")


def parse_zoo_id(text: str) -> ZooId:
    """Parse a zoo id; raise :class:`ModelNotFoundError` when it cannot be one."""
    raw = str(text).strip()
    parts = [p for p in raw.strip("/").split("/") if p]
    if parts and parts[0] == "huggingface":
        if len(parts) not in (3, 4):
            raise ModelNotFoundError(f"{raw!r} is not a Hugging Face model id: use huggingface/USER/REPO[/VERSION]")
        return ZooId(raw=raw, alias="/".join(parts[1:3]), version=parts[3] if len(parts) == 4 else None,
                     huggingface="/".join(parts[1:3]))
    if parts and parts[0] == WORKSPACE:
        parts = parts[1:]
    if not parts or not _ALIAS.match(parts[0]):
        raise ModelNotFoundError(f"{raw!r} is not a zoo model id (ids look like 'affable-shark' or "
                                 "'affable-shark/v1'); to open a local package pass an existing folder, "
                                 "rdf.yaml or .zip path")
    alias, rest = parts[0], "/".join(parts[1:])
    if rest.lower() in _DRAFT:
        return ZooId(raw=raw, alias=alias, draft=True)
    if rest.lower() == "latest" or not rest:
        return ZooId(raw=raw, alias=alias)
    return ZooId(raw=raw, alias=alias, version=rest)


@dataclass(frozen=True)
class HubEndpoints:
    """URLs of one hub.  ``pattern`` is set for a non-Hypha collection pattern."""

    base: str
    pattern: str | None = None

    @property
    def identity(self) -> str:
        """What pins are keyed by: the hub URL, or the pattern."""
        return self.pattern or self.base

    @property
    def is_hypha(self) -> bool:
        return self.pattern is None

    @property
    def is_default(self) -> bool:
        return self.pattern is None and self.base == config.DEFAULT_HUB

    @property
    def artifacts(self) -> str:
        return f"{self.base}/{WORKSPACE}/artifacts"

    def manifest_url(self, alias: str) -> str | None:
        return f"{self.artifacts}/{quote(alias)}" if self.is_hypha else None

    def files_url(self, alias: str) -> str:
        """Folder URL of a model's files (ends with ``/``)."""
        if self.pattern:
            rdf_url = self.pattern.format(bioimageio_id=alias)
            return rdf_url.rsplit("/", 1)[0] + "/"
        return f"{self.artifacts}/{quote(alias)}/files/"

    def rdf_url(self, alias: str) -> str:
        if self.pattern:
            return self.pattern.format(bioimageio_id=alias)
        return self.files_url(alias) + "rdf.yaml"

    def children_url(self) -> str | None:
        return f"{self.artifacts}/{COLLECTION}/children" if self.is_hypha else None

    def id_map_url(self) -> str | None:
        """The legacy id map: ``BIOIMAGEIO_ID_MAP`` when set, the public one for the public hub only.

        A lab mirror never triggers requests to the public id map (they would
        hang behind a firewall).
        """
        explicit = config.id_map_url()
        if explicit:
            return explicit
        return DEFAULT_ID_MAP if self.is_default else None

    def describe(self) -> str:
        return self.pattern or self.base


def hub_endpoints(hub: str | None = None) -> HubEndpoints:
    """The hub to use (see the module docstring for the order)."""
    if hub is None and not config.hub_url_set():
        pattern = config.collection_http_pattern()
        if pattern:
            m = _HYPHA_PATTERN.match(pattern)
            if m:
                return _noted(HubEndpoints(m["base"].rstrip("/")))
            if "{bioimageio_id}" not in pattern:
                raise HubError(f"BIOIMAGEIO_COLLECTION_HTTP_PATTERN={pattern!r} has no '{{bioimageio_id}}' "
                               "placeholder: fix or unset it")
            return _noted(HubEndpoints(pattern.split("/{bioimageio_id}")[0], pattern=pattern))
    base = (hub if hub is not None else config.hub_url()).strip().rstrip("/")
    if not re.match(r"^https?://[^/]+", base, re.I):
        raise HubError(f"hub address {base!r} is not an http(s) URL: pass e.g. --hub https://hypha.aicell.io, "
                       "or a mirror served over HTTP (python -m http.server) as http://HOST:PORT")
    return _noted(HubEndpoints(base))


def _noted(endpoints: HubEndpoints) -> HubEndpoints:
    """``endpoints``, its host remembered by the transport (a failure there names the hub setting)."""
    from .transport import note_hub

    note_hub(endpoints.base)
    return endpoints
