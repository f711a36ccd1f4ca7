"""Open model packages from any source, on bioimageio.spec.

A *source* says where a package's files live (:mod:`.sources`); a
:class:`Package` is the parsed, upgraded description plus lazy access to its
files (:mod:`.description`).  Only the files a use needs are read (or
downloaded): opening a package reads ``rdf.yaml`` alone, and
:meth:`Package.file` fetches one referenced file on demand, checking its
sha256 against the description.  URLs and zoo ids are opened by resolvers
the zoo client registers (:func:`register_resolver`), so this room never
imports :mod:`bioimgzoo.hub`.
"""

from __future__ import annotations

from .description import Package, build_model_description, open_package
from .sources import (
    RDF_NAMES,
    FolderSource,
    PackageSource,
    ZipSource,
    register_resolver,
    resolve_source,
    safe_relpath,
    sweep_dead_extractions,
    verify_sha256,
)

__all__ = ["PackageSource", "FolderSource", "ZipSource", "Package", "open_package", "RDF_NAMES",
           "build_model_description", "register_resolver", "resolve_source", "safe_relpath",
           "sweep_dead_extractions", "verify_sha256"]
