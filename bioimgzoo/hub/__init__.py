"""The BioImage Model Zoo client: resolve ids, cache files, search, mirror.

=====================================  ===============================================
:func:`pull`                           resolve an id and cache the files a use needs
:func:`search`                         search the hub's model listing
:func:`mirror`                         write a static mirror folder for a lab
:func:`publish`                        add a local package to such a folder
:func:`cache_layout`                   the cache (``list_snapshots``, ``verify``, ``clear``)
:func:`~.sources.source_for_id`        a ``PackageSource`` for ``open_package`` / ``load``
=====================================  ===============================================

Modules: :mod:`.endpoints` (ids and hub URLs), :mod:`.transport` (HTTP,
retries, errors, progress), :mod:`.cache` (the cache layout, documented
there in one place), :mod:`.download` (cache decision and verified atomic
download), :mod:`.sources` (resolution and pinning), :mod:`.pull`,
:mod:`.search`, :mod:`.mirror`.  Importing this package loads no heavy library.
"""

from __future__ import annotations

# the submodules are light (httpx, yaml and bioimageio.spec load inside functions);
# importing the functions here also keeps ``bioimgzoo.hub.search`` the function,
# not the submodule of the same name
from .cache import cache_layout
from .mirror import mirror, publish
from .pull import pull
from .search import search
from .sources import fetch_url, source_for_id, source_for_url


def _register() -> None:
    """Teach :mod:`bioimgzoo.package` to open URLs and zoo ids (it never imports this room)."""
    from ..package import register_resolver

    register_resolver("url", source_for_url)
    register_resolver("id", source_for_id)
    register_resolver("file_url", fetch_url)


_register()

__all__ = ["pull", "search", "mirror", "publish", "cache_layout", "source_for_id", "source_for_url", "fetch_url"]
