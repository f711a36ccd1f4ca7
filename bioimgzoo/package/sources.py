"""Where a package's files live: folders, zips, and (registered by the hub) URLs and zoo ids.

A :class:`PackageSource` reads the description's bytes and fetches one
referenced file on demand, verified against its sha256.  Every path a
package names is checked to stay inside it (:func:`safe_relpath`; symlinks
out of a folder are refused), and zip members are checked against the
limits of :mod:`bioimgzoo.config` before and while they are extracted.

=====================================  ==========================================
``"path/to/folder"``                   :class:`FolderSource` (rdf.yaml or bioimageio.yaml inside)
``"path/to/rdf.yaml"``                 :class:`FolderSource` rooted at its folder
``"path/to/model.zip"``                :class:`ZipSource` (members extracted on demand, safely)
``"https://.../rdf.yaml"``             the ``"url"`` resolver (:func:`bioimgzoo.hub.source_for_url`)
``"affable-shark"``, ``"id/1.2"``      the ``"id"`` resolver (:func:`bioimgzoo.hub.source_for_id`)
any :class:`PackageSource` object      used as is
=====================================  ==========================================
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Protocol, runtime_checkable
from zlib import error as zlib_error

from .. import config
from .._files import sha256_file
from ..errors import (
    BioimgzooError,
    IntegrityError,
    LimitExceededError,
    PackageError,
    PackageNotFoundError,
)

__all__ = ["PackageSource", "FolderSource", "ZipSource", "RDF_NAMES", "safe_relpath", "verify_sha256",
           "resolve_source", "register_resolver", "sweep_dead_extractions"]

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_URL = re.compile(r"^https?://", re.I)


@runtime_checkable
class PackageSource(Protocol):
    """Where a package's files live.  Implementations: folder, zip, URL, zoo id."""

    #: Human-readable name used in messages ("folder /x", "zoo model affable-shark/1.2").
    name: str

    def read_rdf(self) -> tuple[bytes, str]:
        """Return the description's bytes and its file name (``rdf.yaml`` ...)."""
        ...

    def fetch(self, path: str, *, sha256: str | None) -> Path:
        """Return a local path holding the package file ``path`` (relative, posix).

        Implementations verify ``sha256`` when given and raise
        :class:`~bioimgzoo.errors.IntegrityError` on a mismatch.
        """
        ...


def _describes(file_name: str) -> bool:
    """A file name bioimageio.spec would take for a package's description (``rdf.yaml``, ``x.rdf.yaml``, ...)."""
    from bioimageio.spec._internal.io import ALL_BIOIMAGEIO_YAML_NAMES

    return any(file_name == n or file_name.endswith("." + n) for n in ALL_BIOIMAGEIO_YAML_NAMES)


_SCHEME_OR_DRIVE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # file:///..., C:\\..., ftp:...


def safe_relpath(path: str, where: str) -> str:
    """``path`` as a posix path inside the package; PackageError for anything that could leave it.

    Refused: absolute paths, ``..``, and URL schemes or drive letters (``file:///etc``,
    ``C:\\x``): an http(s) URL is fetched by the caller before it gets here.
    """
    text = str(path)
    p = PurePosixPath(text.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or _SCHEME_OR_DRIVE.match(text):
        raise PackageError(f"{where} references the unsafe path {path!r} (an absolute path, '..' or a URL "
                           "scheme): refused, it could read anything on this machine. Package files must be "
                           "plain relative paths inside the package (or http(s) URLs)")
    return p.as_posix()


_VERIFIED: dict[tuple[str, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()


def verify_sha256(path: Path, expected: str | None, *, what: str) -> None:
    """Raise IntegrityError unless ``path``'s sha256 equals ``expected`` (if given).

    Results are memoised per (path, size, mtime) so loading a model many times
    in one process hashes its weights once.
    """
    if not expected:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        actual = _VERIFIED.get(key)
    if actual is None:
        actual = sha256_file(path)
        with _VERIFIED_LOCK:
            _VERIFIED[key] = actual
    if actual.lower() != str(expected).lower():
        raise IntegrityError(
            f"{what}: sha256 mismatch (rdf.yaml declares {expected}, the file has {actual}). "
            "The file is corrupt or was changed after packaging: re-download or re-export the package, "
            "or update the sha256 in rdf.yaml if the change is intended."
        )


class FolderSource:
    """A package unpacked in a local folder."""

    def __init__(self, root: str | os.PathLike, rdf_name: str | None = None):
        self.root = Path(root).resolve()
        if rdf_name is None:
            for cand in RDF_NAMES:
                if (self.root / cand).is_file():
                    rdf_name = cand
                    break
            else:
                raise PackageNotFoundError(
                    f"{self.root} has no rdf.yaml or bioimageio.yaml: pass a model package folder, "
                    "its rdf.yaml, a .zip package, a URL or a zoo id")
        self.rdf_name = rdf_name
        self.name = f"folder {self.root}"

    def resolve_inside(self, rel: str) -> Path:
        """``root/rel``, refused when a symlink on the way leads out of the package folder."""
        local = self.root / rel
        resolved = local.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise PackageError(f"{self.name}: {rel!r} is a symbolic link to {resolved}, outside the package "
                               "folder: refused, a package may only use its own files. Copy the file into the "
                               "package instead of linking it")
        return local

    def read_rdf(self) -> tuple[bytes, str]:
        path = self.resolve_inside(self.rdf_name)
        limit = config.max_rdf_bytes()
        try:
            size = path.stat().st_size
            if size > limit:
                raise LimitExceededError(f"{self.name}: {self.rdf_name} is {size} bytes, more than the {limit} "
                                         "allowed for a description: refused. If it is genuine, raise "
                                         "BIOIMGZOO_MAX_RDF_BYTES")
            return path.read_bytes(), self.rdf_name
        except OSError as e:
            raise PackageError(f"{self.name}: cannot read {self.rdf_name} ({e.strerror or e})") from e

    def fetch(self, path: str, *, sha256: str | None) -> Path:
        rel = safe_relpath(path, self.name)
        local = self.resolve_inside(rel)
        if not local.is_file():
            raise PackageError(f"{self.name}: file {rel!r} named in {self.rdf_name} is missing")
        verify_sha256(local, sha256, what=f"{self.name}: {rel}")
        return local

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r})"


_EXTRACT_ROOT: Path | None = None
_EXTRACT_PREFIX = "bioimgzoo-zip-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process: alive
        return True
    return True


def sweep_dead_extractions(tmp_root: str | os.PathLike | None = None) -> list[Path]:
    """Remove zip extraction folders left by processes that died without cleaning up (SIGKILL).

    Each process extracts into ``{tmp}/bioimgzoo-zip-{pid}-{random}`` and
    removes it at exit; a folder whose pid no longer runs is a leftover.
    Returns the folders removed.
    """
    root = Path(tmp_root or tempfile.gettempdir())
    removed = []
    try:
        candidates = list(root.glob(_EXTRACT_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        m = re.fullmatch(re.escape(_EXTRACT_PREFIX) + r"(\d+)-\w+", folder.name)
        if not m or not folder.is_dir() or folder.is_symlink():
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _extract_root() -> Path:
    global _EXTRACT_ROOT
    if _EXTRACT_ROOT is None:
        sweep_dead_extractions()
        _EXTRACT_ROOT = Path(tempfile.mkdtemp(prefix=f"{_EXTRACT_PREFIX}{os.getpid()}-"))
        atexit.register(shutil.rmtree, _EXTRACT_ROOT, True)
    return _EXTRACT_ROOT


class ZipSource:
    """A zipped package; members are extracted one at a time, when needed.

    Member names are checked (no absolute paths, no ``..``), and a member is
    refused before extraction when its declared size passes
    ``BIOIMGZOO_MAX_FILE_BYTES`` (``BIOIMGZOO_MAX_RDF_BYTES`` for the
    description) or it inflates more than ``BIOIMGZOO_MAX_ZIP_RATIO`` times;
    extraction stops at the declared size and hashes as it goes, so a hostile
    zip can neither write outside the extraction folder nor fill the disk.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()
        self.name = f"zip {self.path}"
        try:
            with zipfile.ZipFile(self.path) as zf:
                self._members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        except (zipfile.BadZipFile, OSError) as e:
            raise PackageError(f"{self.path} is not a readable zip file ({e}): "
                               "re-download or re-export the package") from e
        # bioimageio.spec (and so core, when validation hands it the zip) picks its description by its
        # own rule, "rdf.yaml" or any "*.rdf.yaml", sorted: with two candidates we could check one
        # description while core runs the other, so a zip may hold exactly one
        candidates = sorted(m for m in self._members if _describes(PurePosixPath(m).name))
        if len(candidates) > 1:
            raise PackageError(f"{self.path} holds several model descriptions ({', '.join(candidates[:5])}): "
                               "a package has exactly one rdf.yaml; remove the others")
        # rdf at the root, or inside one top-level folder (zips made by zipping a folder)
        self._prefix = ""
        for cand in RDF_NAMES:
            if cand in self._members:
                self.rdf_name = cand
                break
        else:
            nested = [m for m in self._members if PurePosixPath(m).name in RDF_NAMES
                      and len(PurePosixPath(m).parts) == 2]
            if len(nested) != 1:
                raise PackageNotFoundError(f"{self.path} has no rdf.yaml or bioimageio.yaml at its root: "
                                           "it is not a model package")
            self._prefix = PurePosixPath(nested[0]).parent.as_posix() + "/"
            self.rdf_name = PurePosixPath(nested[0]).name
        st = self.path.stat()
        self._zip_bytes = st.st_size
        self._dir = _extract_root() / f"{abs(hash((str(self.path), st.st_size, st.st_mtime_ns))):x}"

    def _member(self, rel: str, *, limit: int | None = None, setting: str = "BIOIMGZOO_MAX_FILE_BYTES"
                ) -> zipfile.ZipInfo:
        info = self._members.get(self._prefix + rel)
        if info is None:
            raise PackageError(f"{self.name}: file {rel!r} named in {self.rdf_name} is not in the zip")
        limit = config.max_file_bytes() if limit is None else limit
        if info.file_size > limit:
            raise LimitExceededError(f"{self.name}: member {rel!r} declares {info.file_size} bytes, more than the "
                                     f"{limit} allowed: refused before extracting. If the package is genuine, "
                                     f"raise {setting}")
        # the declared compressed size can lie (members overlapping in the file): no member holds more
        # compressed bytes than the whole zip
        ratio = info.file_size / max(min(info.compress_size, self._zip_bytes), 1)
        max_ratio = config.max_zip_ratio()
        if info.file_size > config.ZIP_RATIO_EXEMPT_BYTES and ratio > max_ratio:
            raise LimitExceededError(f"{self.name}: member {rel!r} inflates {ratio:.0f} times ({info.compress_size} "
                                     f"-> {info.file_size} bytes), more than the {max_ratio:g} allowed: it looks "
                                     "like a zip bomb and is refused. If the package is genuine, raise "
                                     "BIOIMGZOO_MAX_ZIP_RATIO")
        return info

    def read_rdf(self) -> tuple[bytes, str]:
        info = self._member(self.rdf_name, limit=config.max_rdf_bytes(), setting="BIOIMGZOO_MAX_RDF_BYTES")
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(info) as f:
                return f.read(info.file_size + 1)[: info.file_size], self.rdf_name
        except (zipfile.BadZipFile, OSError, EOFError, zlib_error) as e:
            raise PackageError(f"{self.name}: cannot read {self.rdf_name} ({e}): the zip is damaged, "
                               "re-download or re-export the package") from e

    def fetch(self, path: str, *, sha256: str | None) -> Path:
        rel = safe_relpath(path, self.name)
        local = self._dir / rel
        if not local.is_file():
            info = self._member(rel)
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                self._extract(info, tmp, rel, sha256)
                os.replace(tmp, local)
            except BioimgzooError:  # our own refusals (limits, integrity) as they are, never "damaged"
                tmp.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, OSError, EOFError, zlib_error) as e:
                tmp.unlink(missing_ok=True)
                raise PackageError(f"{self.name}: cannot extract {rel!r} ({e}): the zip is damaged, "
                                   "re-download or re-export the package") from e
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        verify_sha256(local, sha256, what=f"{self.name}: {rel}")
        return local

    def _extract(self, info: zipfile.ZipInfo, dest: Path, rel: str, sha256: str | None) -> None:
        """Copy one member to ``dest``, never past its declared size, hashing as it goes."""
        import hashlib

        digest = hashlib.sha256()
        written = 0
        with zipfile.ZipFile(self.path) as zf, zf.open(info) as src, open(dest, "wb") as dst:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                written += len(block)
                if written > info.file_size:  # zipfile stops there itself; never trust one layer alone
                    raise LimitExceededError(f"{self.name}: member {rel!r} inflates past its declared size "
                                             f"({info.file_size} bytes): the zip is corrupt or hostile, refused")
                digest.update(block)
                dst.write(block)
        if sha256 and digest.hexdigest() != str(sha256).lower():
            raise IntegrityError(
                f"{self.name}: {rel}: sha256 mismatch (rdf.yaml declares {sha256}, the file has "
                f"{digest.hexdigest()}). The file is corrupt or was changed after packaging: re-download or "
                "re-export the package, or update the sha256 in rdf.yaml if the change is intended.")

    def __repr__(self) -> str:
        return f"ZipSource({str(self.path)!r})"


#: kind ("url", "id", "file_url") -> callable; the zoo client (:mod:`bioimgzoo.hub`) registers
#: these, so this lower room never imports it
_RESOLVERS: dict[str, Callable[..., Any]] = {}


def register_resolver(kind: str, resolver: Callable[..., Any]) -> None:
    """Let a higher room open what this one cannot: ``"url"`` and ``"id"`` sources, ``"file_url"`` files.

    ``url``/``id``: ``resolver(text, **hub_options) -> PackageSource``;
    ``file_url``: ``resolver(url, sha256=...) -> Path``.
    """
    if kind not in ("url", "id", "file_url"):
        raise ValueError(f"unknown resolver kind {kind!r}")
    _RESOLVERS[kind] = resolver


def resolver(kind: str) -> Callable[..., Any]:
    """The registered resolver of ``kind`` (raises PackageError naming what is missing)."""
    try:
        return _RESOLVERS[kind]
    except KeyError:
        raise PackageError(f"opening a {'zoo id' if kind == 'id' else 'URL'} needs the zoo client "
                           "(bioimgzoo.hub), which is not loaded: import bioimgzoo first") from None


def resolve_source(source: Any, **hub_options: Any) -> PackageSource:
    """Turn what a user passed (path, URL, id, source object) into a PackageSource."""
    if isinstance(source, PackageSource) and not isinstance(source, (str, os.PathLike)):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise PackageError(f"cannot open a package from {type(source).__name__}: pass a folder, "
                           "an rdf.yaml path, a .zip, an http(s) URL or a zoo id")
    if _URL.match(source):
        return resolver("url")(source, **hub_options)
    path = Path(source).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return ZipSource(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            return FolderSource(path.parent, path.name)
        if path.suffix.lower() == ".zip" or _starts_like_zip(path):
            raise PackageError(f"{path} is a damaged zip file (truncated or corrupt: its table of contents "
                               "cannot be read): re-download or re-export the package")
        raise PackageError(f"{path} is neither a zip package nor an rdf.yaml: pass a model package folder, "
                           "its rdf.yaml, a .zip, a URL or a zoo id")
    looks_like_path = (os.sep in source and not re.fullmatch(r"[\w.-]+/[\w.-]+", source)) or \
        source.lower().endswith((".zip", ".yaml", ".yml")) or source.startswith((".", "~"))
    similar = _similar_local_names(path)
    if looks_like_path:
        raise PackageNotFoundError(f"{source} does not exist: check the path" + _did_you_mean(similar) +
                                   " (or pass an http(s) URL or a zoo id)")
    if similar:  # a typo of a local name is far likelier than a zoo id: no network, both readings named
        raise PackageNotFoundError(
            f"{source!r} is not a file or folder in {path.parent.resolve()} ({_did_you_mean(similar).strip()}), "
            "and it was not looked up as a zoo id, since a local name is so close: check the path, or pass "
            f"bioimage-io/{source} to open the zoo model of that id")
    from ..errors import DownloadError, ModelNotFoundError

    try:
        return resolver("id")(source, **hub_options)
    except (ModelNotFoundError, DownloadError) as e:
        if type(e) not in (ModelNotFoundError, DownloadError):  # a subclass carrying more (an HTTP status)
            raise
        raise type(e)(f"{source!r} is neither an existing file or folder (in {path.parent.resolve()}) nor a zoo "
                      f"id that could be opened: {e}") from e


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _similar_local_names(path: Path) -> list[str]:
    """Names in ``path``'s folder close to its name (a mistyped package folder, zip or rdf.yaml)."""
    import difflib

    folder = path.parent
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir() or p.suffix.lower() in (".zip", ".yaml", ".yml")]
    except OSError:
        return []
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.8)
    return [str(folder / n) if str(folder) != "." else n for n in close]


def _did_you_mean(names: list[str]) -> str:
    if not names:
        return ""
    return f" did you mean {names[0]}?" if len(names) == 1 else \
        f" did you mean one of {', '.join(names)}?"


