"""The package as written: the description serialised for its readers, and the zip.

The description is built with bioimageio.spec's classes (:mod:`._describe`);
bioimageio.spec lays out the package (``get_package_content``: every file
referenced by its plain name, flat), and :mod:`bioimgzoo.descr.readable`
rewrites it in the oldest 0.5 format that carries it (``covers`` and
``documentation`` as plain paths, which BiaPy's, the zoo CI's and JDLL's
readers require).  The YAML is written by
:func:`bioimgzoo._yaml.dump_portable_yaml`, which every deployed YAML loader
reads back with the same types (``1.0e-06``, never ``1e-06``).  The written
zip is validated again by the caller (:mod:`._finish`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._yaml import dump_portable_yaml
from ..errors import ExportError

__all__ = ["PackageContent", "package_content", "write_package_zip"]


@dataclass
class PackageContent:
    """What the zip will hold."""

    #: the description as written (``format_version`` set, readable form)
    rdf: dict
    #: ``rdf`` as YAML text
    text: str
    #: package file name -> local file
    files: dict[str, Path]
    format_version: str
    #: the fields that need :attr:`format_version` (empty: the oldest format bioimgzoo writes)
    format_reasons: list[str] = field(default_factory=list)


def package_content(descr: Any, *, format_version: str | None = None) -> PackageContent:
    """Lay out the package of ``descr`` (a validated ``ModelDescr`` over staged files)."""
    from bioimageio.spec import get_package_content

    from ..descr.readable import readable_rdf

    content = get_package_content(descr, bioimageio_yaml_file_name="rdf.yaml")
    raw = content.pop("rdf.yaml")
    try:
        rdf, fv, why = readable_rdf(raw, format_version=format_version)
    except ValueError as e:
        raise ExportError(f"format_version={format_version!r}: {e}") from e
    files = {}
    for name, fd in content.items():
        source = getattr(fd, "source", fd)
        files[name] = Path(str(source))
    return PackageContent(rdf=rdf, text=dump_portable_yaml(rdf), files=files, format_version=fv,
                          format_reasons=why)


def write_package_zip(content: PackageContent, out: Path) -> None:
    """Write ``content`` as a flat zip at ``out`` (``rdf.yaml`` first)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.writestr("rdf.yaml", content.text)
        for name, path in content.files.items():
            z.write(path, name)
