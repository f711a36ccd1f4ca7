"""Parse a package's description with bioimageio.spec: :func:`open_package` and :class:`Package`.

Opening reads ``rdf.yaml`` alone (within the limits of :mod:`bioimgzoo._yaml`),
validates it with bioimageio.spec and upgrades it to format 0.5;
:meth:`Package.file` fetches one referenced file when a use needs it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidDescriptionError
from .sources import PackageSource, resolve_source, resolver, safe_relpath

__all__ = ["Package", "open_package", "build_model_description"]

log = logging.getLogger("bioimgzoo")

_URL = re.compile(r"^https?://", re.I)


def _parse_yaml(data: bytes, where: str) -> dict:
    from .._yaml import load_yaml

    content = load_yaml(data, where)
    if not isinstance(content, dict):
        raise InvalidDescriptionError(f"{where} does not hold a YAML mapping: it is not a model description")
    return content


def build_model_description(content: dict, *, root: Any, file_name: str, where: str):
    """Validate ``content`` with bioimageio.spec and upgrade it to the latest format (0.5).

    No file is read or downloaded (``perform_io_checks=False``): sha256
    checks happen when a file is actually fetched.  A description the
    upgrade rejects only for metadata (or for a 0.4 halo on a fixed-size
    output) is refused here: :func:`build_runnable_description` repairs it.
    """
    return build_runnable_description(content, root=root, file_name=file_name, where=where, repair=False)[0]


def build_runnable_description(content: dict, *, root: Any, file_name: str, where: str,
                               repair: bool = True) -> tuple[Any, tuple[str, ...]]:
    """The 0.5 description of ``content`` and the warnings of what was repaired to get it.

    As :func:`build_model_description`; with ``repair`` (default), a
    description whose upgrade fails for what cannot affect a run is taken
    through :func:`bioimgzoo.package.repair.repair_description` (metadata
    dropped with a warning each), never guessing its tensors.
    """
    from bioimageio.spec import InvalidDescr, build_description
    from bioimageio.spec._internal.validation_context import ValidationContext
    from bioimageio.spec.model.v0_5 import ModelDescr
    from pydantic_core import to_jsonable_python

    def build(data: dict, format_version: str):
        ctx = ValidationContext(root=root, file_name=file_name, perform_io_checks=False)
        try:
            return build_description(data, context=ctx, format_version=format_version)
        except Exception as e:  # spec raises plain exceptions for some malformed inputs
            raise InvalidDescriptionError(f"{where}: cannot parse the description ({type(e).__name__}: {e})") from e

    descr = build(content, "latest")
    warnings: tuple[str, ...] = ()
    if isinstance(descr, InvalidDescr) and repair and content.get("type", "model") == "model":
        from .repair import repair_description

        def convert(data: dict) -> None:
            try:
                with ValidationContext(root=root, file_name=file_name, perform_io_checks=False):
                    ModelDescr.convert_from_old_format_wo_validation(data)
                converted = to_jsonable_python(data)  # plain data, as if read from a 0.5 rdf.yaml
            except Exception as e:  # the converter raises plain exceptions (NotImplementedError, ...)
                raise InvalidDescriptionError(f"{where}: bioimageio.spec cannot convert the description to format "
                                              f"0.5 ({type(e).__name__}: {e})") from e
            data.clear()
            data.update(converted)

        descr, warnings = repair_description(content, build=build, convert=convert, where=where,
                                             is_valid=lambda d: not isinstance(d, InvalidDescr))
    if isinstance(descr, InvalidDescr):
        errors = descr.validation_summary.errors if descr.validation_summary else []
        lines = [f"  - {'.'.join(map(str, err.loc))}: {err.msg}" for err in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise InvalidDescriptionError(
            f"{where} is not a valid bioimage.io description:\n" + "\n".join(lines) + more
            + "\nFix these fields (bioimgzoo validate shows the full report).")
    if not isinstance(descr, ModelDescr):
        raise InvalidDescriptionError(f"{where} describes a {getattr(descr, 'type', '?')}, not a model")
    return descr, warnings


@dataclass
class Package:
    """A parsed model package: its description plus lazy, verified file access."""

    source: PackageSource
    #: The description, upgraded to format 0.5 (``bioimageio.spec.model.v0_5.ModelDescr``).
    descr: Any
    #: The format version the package was written in (e.g. ``"0.4.10"``).
    original_format_version: str
    raw: dict = field(repr=False, default_factory=dict)
    #: what was repaired to open the description (metadata dropped, a 0.4 rule restated), one line each;
    #: nothing here changes a prediction (``info`` and validation show them)
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return str(self.descr.name)

    def file(self, ref: Any, *, sha256: str | None = None) -> Path:
        """Local path of a file the description references, fetched and verified.

        ``ref`` is a spec ``FileDescr`` (with ``source`` and ``sha256``), a
        relative path, or an absolute http(s) URL.
        """
        if hasattr(ref, "source"):
            sha256 = sha256 or (str(ref.sha256) if getattr(ref, "sha256", None) else None)
            ref = ref.source
        text = str(ref)
        if _URL.match(text):
            # the source's own fetcher keeps its options (offline=, hub=); else the default client
            fetch = getattr(self.source, "fetch_url", None) or resolver("file_url")
            return fetch(text, sha256=sha256)
        # checked here for every kind of source (also one a caller wrote): a package uses only its own files
        return self.source.fetch(safe_relpath(text, self.source.name), sha256=sha256)


def open_package(source: Any, **hub_options: Any) -> Package:
    """Open a model package and parse its description (reads ``rdf.yaml`` only).

    Parameters
    ----------
    source : str, os.PathLike or PackageSource
        Folder, ``rdf.yaml`` path, ``.zip``, http(s) URL to an rdf.yaml, or zoo id.
    **hub_options
        Passed to the zoo client for URLs and ids (``hub=``, ``offline=``, ...).
    """
    src = resolve_source(source, **hub_options)
    data, file_name = src.read_rdf()
    where = f"{file_name} of {src.name}"
    content = _parse_yaml(data, where)
    fv = str(content.get("format_version", "?"))
    root = getattr(src, "root", None) or getattr(src, "base_url", None) or Path.cwd()
    descr, warnings = build_runnable_description(content, root=root, file_name=file_name, where=where)
    for line in warnings:
        log.info("%s: %s", src.name, line)
    return Package(source=src, descr=descr, original_format_version=fv, raw=content, warnings=warnings)
