"""Images larger than memory: zarr / OME-Zarr arrays and big TIFFs, read and written a region at a time.

Reading
-------
:func:`open_image` opens, without loading any pixel:

* a zarr array (zarr v2 or v3 folder; axes from ``dimension_names`` /
  ``_ARRAY_DIMENSIONS`` when present);
* an OME-Zarr image: NGFF 0.4 on zarr v2 or 0.5 on zarr v3 (a
  ``bioformats2raw`` layout opens its first image).  The metadata is
  validated with ``ome-zarr-models``; axes, physical pixel sizes and units
  come from its ``multiscales``; level 0 (or ``level=``) is read;
* a TIFF, memory-mapped when its pixels are stored contiguously, else read
  tile by tile through tifffile's zarr store (``aszarr``).

It returns a :class:`LazyImage`: ``read(region)`` gives a numpy array of
just that box.  A LazyImage pickles as its path, so a dask worker reopens
it instead of receiving pixels.

Writing
-------
:class:`OmeZarrWriter` writes an OME-Zarr image: NGFF 0.4 on zarr v2 by
default (what Fiji/MoBIE, QuPath and most converters read): ``/`` as the
chunk key separator, Blosc-zstd; ``ngff="0.5"``: zarr v3 with dimension
names, chunks inside shards.  Arrays are created first and filled by the
caller region by region; :meth:`OmeZarrWriter.finish` then builds the
multiscale pyramid in a second, chunk-aligned pass (mean of 2x2 blocks in
y/x for intensities, every second pixel for labels) and writes the NGFF
metadata *last*, validated with ``ome-zarr-models``: a store without it is
an unfinished run, never mistaken for a result.  Integer outputs go to
``labels/<name>`` as NGFF label images.

An output is never an input, inside one, or holding one, and an existing
path is replaced (``overwrite``) or continued (``resume``) only when it is a
store written by bioimgzoo: :func:`check_output_store` decides, before anything
is written or deleted, with symbolic links resolved (a link as the output
itself is refused: nothing is written or deleted through it).  bioimgzoo's
stores carry its marker from their creation on, the root attribute
``bioimgzoo`` (:data:`STORE_MARKER`); ``overwrite`` also refuses a store that
holds anything bioimgzoo does not write (a document dropped into it).

Nothing here imports zarr, tifffile or ome-zarr-models before it is used.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["LazyImage", "open_image", "is_zarr_path", "OmeZarrWriter", "NGFF_VERSIONS", "ngff_axes_order_ok",
           "read_ngff_metadata", "check_output_store", "STORE_MARKER", "is_own_store", "check_pixels"]

NGFF_VERSIONS = ("0.4", "0.5")
#: NGFF axis type of each of our layout letters
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_TIFF_SUFFIXES = (".tif", ".tiff")
#: pyramid levels stop once y and x are both at most this (or after this many levels)
_PYRAMID_MIN = 256
_PYRAMID_MAX_LEVELS = 8
#: values per block of the pyramid pass (a few MB at a time)
_PYRAMID_BLOCK = 1 << 24
#: blocks of the pyramid pass computed at once
_PYRAMID_THREADS = 2
#: Blosc-zstd level of written arrays (see OmeZarrWriter._create_array)
_ZSTD_LEVEL = 3


#: root attribute of every store bioimgzoo writes, set when the store is created (what overwrite/resume look for)
STORE_MARKER = "bioimgzoo"
#: what bioimgzoo writes at a store's top level (besides pyramid levels named by digits)
_OWN_ENTRIES = frozenset({".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json", "labels", ".bioimgzoo"})
#: largest zarr metadata file read to find the marker
_MAX_META_BYTES = 16 << 20


def _store_attributes(path: Path) -> dict:
    """The root attributes of the zarr group at ``path`` (v2 ``.zattrs`` or v3 ``zarr.json``), read as JSON."""
    import json

    for name, inner in ((".zattrs", None), ("zarr.json", "attributes")):
        f = path / name
        try:
            if f.is_symlink() or not f.is_file() or f.stat().st_size > _MAX_META_BYTES:
                continue
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if inner is not None:
            data = data.get(inner) if isinstance(data, dict) else None
        if isinstance(data, dict):
            return data
    return {}


def is_own_store(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a zarr store created by bioimgzoo (its root carries :data:`STORE_MARKER`)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    mark = _store_attributes(path).get(STORE_MARKER)
    return isinstance(mark, dict) and mark.get("output") is True


def _listing(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in sorted(names)[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _same_or_inside(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies inside it (both resolved; the same file reached by two names counts)."""
    if inner == outer or outer in inner.parents:
        return True
    try:
        for candidate in (inner, *inner.parents):
            if candidate.exists() and outer.exists() and os.path.samefile(candidate, outer):
                return True
    except OSError:
        pass
    return False


def check_output_store(out: str | Path, *, inputs: Sequence[Any] = (), overwrite: bool = False,
                       resume: bool = False) -> Path:
    """Refuse an output store before anything is written or deleted; returns its path.

    Refused: an output that is a symbolic link; one that is an input, lies
    inside one, or holds one (paths resolved); an existing path without
    ``overwrite`` or ``resume``; with either, an existing path that is not a
    store written by bioimgzoo (its :data:`STORE_MARKER`), and with ``overwrite``,
    one holding entries bioimgzoo does not write.  ``inputs``: paths (or
    objects with a ``path``) of what the run reads.

    Raises
    ------
    InputError
        Naming the output, what is there and what to do.
    """
    out = Path(out)
    if out.is_symlink():
        target = os.readlink(out)
        raise InputError(f"output {out} is a symbolic link (to {target}): bioimgzoo never writes or deletes through a "
                         "link; name the folder itself, or remove the link")
    resolved = out.resolve()
    for item in inputs:
        raw = getattr(item, "path", item)
        if raw is None or not isinstance(raw, (str, os.PathLike)):
            continue
        source = Path(raw).resolve()
        if _same_or_inside(resolved, source):
            what = "is the input" if resolved == source else "lies inside the input"
            raise InputError(f"output {out} {what} {raw}: a prediction never writes into what it reads; choose "
                             "another output path (nothing was written)")
        if _same_or_inside(source, resolved):
            raise InputError(f"output {out} holds the input {raw}: writing (or --overwrite deleting) it would "
                             "destroy the input; choose another output path (nothing was written)")
    if not out.exists():
        return out
    if not (overwrite or resume):
        raise InputError(f"output {out} exists: pass --overwrite (overwrite=True) to replace it, --resume to finish "
                         "an interrupted run, or choose another path")
    flag = "--overwrite" if overwrite else "--resume"
    if not out.is_dir():
        raise InputError(f"output {out} exists and is a file, not an OME-Zarr store written by bioimgzoo: {flag} replaces "
                         "or continues only bioimgzoo's own outputs; move it away or choose another path")
    try:
        entries = [e.name for e in os.scandir(out)]
    except OSError as e:
        raise InputError(f"output {out} cannot be read ({e.strerror or e}): choose another path") from e
    if not is_own_store(out):
        there = f"it holds {_listing(entries)}" if entries else "it is an empty folder"
        raise InputError(f"output {out} exists and is not an OME-Zarr store written by bioimgzoo ({there}; no "
                         f"'{STORE_MARKER}' mark in its root attributes): {flag} replaces or continues only "
                         "bioimgzoo's own outputs; move it away, delete it yourself, or choose another path")
    if overwrite:
        strangers = [e for e in entries if e not in _OWN_ENTRIES and not e.isdigit()]
        if strangers:
            raise InputError(f"output {out} is a store written by bioimgzoo, but it also holds {_listing(strangers)}, "
                             "which are not bioimgzoo's: --overwrite would delete them; move them out first "
                             "(nothing was deleted)")
    return out


def is_zarr_path(path: str | Path) -> bool:
    """True for a path that names a zarr store by its suffix (``.zarr``, ``.ome.zarr``, ``.zarr/``)."""
    name = str(path).rstrip("/\\").lower()
    return name.endswith(".zarr")


# ---------------------------------------------------------------------- reading
@dataclass
class LazyImage:
    """An image on disk, read a box at a time.

    Attributes
    ----------
    path : Path
        The zarr folder, OME-Zarr image group or TIFF file.
    axes : str or None
        Layout letters (``tczyx`` subset) when the file says, else None.
    scale : dict
        Physical pixel size per axis letter (1.0 where unknown).
    units : dict
        Unit per axis letter where the metadata names one.
    ngff : str or None
        NGFF version of an OME-Zarr image, else None.
    level : int
        Pyramid level read (OME-Zarr).
    """

    path: Path
    axes: str | None
    scale: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    ngff: str | None = None
    level: int = 0
    _array: Any = field(default=None, repr=False)
    _shape: tuple[int, ...] = ()
    _dtype: Any = None

    @property
    def array(self) -> Any:
        if self._array is None:  # unpickled on a worker: reopen, never ship pixels
            self._array = open_image(self.path, level=self.level)._array
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dtype)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def read(self, region: Sequence[slice | int]) -> np.ndarray:
        """The box ``region`` (slices or indices, one per axis) as a numpy array.

        Raises
        ------
        InputError
            When the stored pixels do not decode (a chunk of the wrong size, a
            truncated or foreign file): one message naming the store and the box.
        """
        try:
            data = np.asarray(self.array[tuple(region)])
        except InputError:
            raise
        except MemoryError:
            raise InputError(f"{self.path}: reading {_box(region)} needs more memory than there is (its chunks are too "
                             "large to decode): rechunk the image") from None
        except Exception as e:  # zarr, numcodecs and tifffile raise many types for damaged data
            raise InputError(f"{self.path}: the pixels of {_box(region)} cannot be read ({type(e).__name__}: "
                             f"{str(e)[:200]}): the store is damaged (a chunk of the wrong size or a foreign file?); "
                             "rewrite or re-download it") from e
        if (data.dtype.kind, data.dtype.itemsize) != (self.dtype.kind, self.dtype.itemsize):
            raise InputError(f"{self.path}: {_box(region)} decodes as {data.dtype}, the array declares {self.dtype}: "
                             "the store is damaged; rewrite it")
        return data

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None
        return state


def open_image(path: str | Path, *, level: int = 0) -> LazyImage:
    """Open a zarr array, an OME-Zarr image or a TIFF without reading its pixels.

    Raises
    ------
    InputError
        For a path that does not exist, a folder that is no zarr store, a
        zarr group without OME-Zarr image metadata, metadata that does not
        validate, or a level the pyramid lacks.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist: check the path")
    if path.is_file() and path.name.lower().endswith(_TIFF_SUFFIXES):
        return _open_tiff(path)
    if not path.is_dir():
        raise InputError(f"{path} is neither a zarr folder nor a TIFF file: pass an OME-Zarr image, a zarr array "
                         "or a .tif")
    import zarr

    if not any((path / marker).is_file() for marker in ("zarr.json", ".zarray", ".zgroup", ".zattrs")):
        raise InputError(f"{path} is a folder but not a zarr store (no zarr.json, .zarray or .zgroup in it): pass "
                         "an OME-Zarr image or zarr array folder, or the image files themselves")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # zarr raises several types for broken metadata
        raise InputError(f"cannot open {path} as zarr: {type(e).__name__}: {e}") from e
    if isinstance(node, zarr.Array):
        return _lazy(path, node, axes=_array_axes(node), level=0)
    meta = read_ngff_metadata(node, path)
    if meta is None:
        if "0" in node and isinstance(node["0"], zarr.Group):  # bioformats2raw: images 0, 1, ...
            return open_image(path / "0", level=level)
        arrays = sorted(k for k, v in node.members() if isinstance(v, zarr.Array))
        raise InputError(f"{path} is a zarr group without OME-Zarr image metadata (no 'multiscales'): pass the path "
                         f"of an array in it{' (' + ', '.join(arrays) + ')' if arrays else ''} or an OME-Zarr image")
    version, multiscale = meta
    datasets = multiscale["datasets"]
    if not 0 <= level < len(datasets):
        raise InputError(f"{path} has {len(datasets)} pyramid level(s); level {level} does not exist")
    axes = "".join(_ngff_axis_letter(a, path) for a in multiscale["axes"])
    scale = _dataset_scale(multiscale, datasets[level])
    letters = list(axes)
    units = {letters[i]: a["unit"] for i, a in enumerate(multiscale["axes"]) if a.get("unit")}
    key = str(datasets[level].get("path", ""))
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise InputError(f"{path}: pyramid level {level} names the array {key!r}, which is not a path inside the "
                         "store; the metadata is damaged")
    try:
        array = node[key]
    except Exception as e:  # a missing or broken array under the name the metadata gives
        raise InputError(f"{path}: pyramid level {level} ({key!r}) cannot be opened ({type(e).__name__}: "
                         f"{str(e)[:200]}): the store is incomplete or damaged") from e
    return _lazy(path, array, axes=axes, scale=dict(zip(letters, scale)), units=units, ngff=version, level=level)


def read_ngff_metadata(group: Any, path: Path) -> tuple[str, dict] | None:
    """``(version, first multiscale)`` of an OME-Zarr image group, validated; None when it has none."""
    attrs = dict(group.attrs)
    if "ome" in attrs and isinstance(attrs["ome"], Mapping) and "multiscales" in attrs["ome"]:
        raw, version = attrs["ome"], str(attrs["ome"].get("version", "0.5"))
    elif "multiscales" in attrs:
        raw = attrs
        version = str((attrs["multiscales"] or [{}])[0].get("version", "0.4"))
    else:
        return None
    if version not in NGFF_VERSIONS:
        raise InputError(f"{path}: OME-Zarr (NGFF) version {version} is not supported: use 0.4 or 0.5 "
                         "(convert with ome2024-ngff-challenge or bioformats2raw)")
    try:
        import ome_zarr_models

        ome_zarr_models.open_ome_zarr(group, version=version)
    except Exception as e:  # pydantic ValidationError and ome-zarr-models' own errors
        first = str(e).strip().splitlines()
        raise InputError(f"{path}: the OME-Zarr {version} metadata does not validate "
                         f"({first[0] if first else type(e).__name__}): fix or rewrite the metadata") from e
    return version, dict(raw["multiscales"][0])


def _ngff_axis_letter(axis: Mapping, path: Path) -> str:
    name = str(axis.get("name", "")).lower()
    kind = axis.get("type")
    if name in AXIS_TYPES:
        return name
    if kind == "time":
        return "t"
    if kind == "channel":
        return "c"
    raise InputError(f"{path}: OME-Zarr axis {axis.get('name')!r} (type {kind!r}) is not one of t, c, z, y, x; "
                     "bioimgzoo cannot map it onto a model's axes")


def _dataset_scale(multiscale: Mapping, dataset: Mapping) -> list[float]:
    n = len(multiscale["axes"])
    scale = [1.0] * n
    for transforms in (dataset.get("coordinateTransformations") or [],
                       multiscale.get("coordinateTransformations") or []):
        for t in transforms:
            if t.get("type") == "scale" and "scale" in t:
                scale = [a * float(b) for a, b in zip(scale, t["scale"])]
    return scale


def _array_axes(array: Any) -> str | None:
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    if not names:
        return None
    letters = "".join(str(n).lower()[:1] if str(n).lower() in AXIS_TYPES or str(n).lower() in
                      ("time", "channel") else "?" for n in names)
    return None if "?" in letters or len(set(letters)) != len(letters) else letters


def _box(region: Sequence[Any]) -> str:
    return "[" + ", ".join(f"{r.start}:{r.stop}" if isinstance(r, slice) else str(r) for r in region) + "]"


#: pixel types a model can be fed: bool, integers and floats (not complex, strings, dates, objects or records)
_PIXEL_KINDS = "biuf"


def check_pixels(path: Any, shape: Sequence[int], dtype: Any, chunks: Any = None) -> None:
    """Refuse an image no model can read: no pixels, a type that is not a number, chunks of size 0 or of the wrong rank.

    Raises
    ------
    InputError
    """
    dt = np.dtype(dtype)
    if dt.fields is not None or dt.kind not in _PIXEL_KINDS:
        what = f"records of fields ({dt})" if dt.fields is not None else f"{dt} values"
        raise InputError(f"{path} holds {what}, not numbers a model can take: convert it to an integer or float "
                         "image")
    if any(int(n) <= 0 for n in shape):
        raise InputError(f"{path} has shape {tuple(int(n) for n in shape)}: an image without pixels; check the path "
                         "(a pyramid level or array that was never written?)")
    if chunks is None:
        return
    try:
        sizes = tuple(int(c) for c in chunks)
    except (TypeError, ValueError):
        return  # irregular (dask-like) chunks: read as they come
    if len(sizes) != len(shape) or any(c < 1 for c in sizes):
        raise InputError(f"{path} declares chunks {sizes} for an array of shape {tuple(shape)}: chunks must have one "
                         "size of at least 1 per axis; the store's metadata is damaged")


def _lazy(path: Path, array: Any, **kw: Any) -> LazyImage:
    check_pixels(path, array.shape, array.dtype, getattr(array, "chunks", None))
    return LazyImage(path, _array=array, _shape=tuple(int(n) for n in array.shape), _dtype=array.dtype, **kw)


def _open_tiff(path: Path) -> LazyImage:
    import tifffile

    from .images import tiff_axes_to_ours

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = tiff_axes_to_ours(series.axes, series.shape)
        try:
            array: Any = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or tiled: read through tifffile's zarr store, tile by tile
            import zarr

            array = zarr.open(tifffile.imread(path, aszarr=True, series=0, level=0), mode="r")
    except Exception as e:  # tifffile raises many types for broken files
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {e}. Is the file complete?") from e
    if axes is not None and "q" in axes:  # unnamed singletons: keep them, named q, the layout mapping squeezes
        axes = None if axes.count("q") > 1 else axes
    scale, units = _tiff_scale(path)
    return _lazy(path, array, axes=axes, scale=scale, units=units)


#: units as ImageJ / OME-TIFF metadata spell them (after images.normalize_unit) -> NGFF's (UDUNITS-2) names
_NGFF_UNITS = {"um": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
               "pm": "picometer", "s": "second", "sec": "second", "ms": "millisecond", "us": "microsecond",
               "min": "minute", "h": "hour"}


def _tiff_scale(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Pixel sizes and NGFF units from a TIFF's ImageJ or OME metadata (empty when it states none)."""
    from .images import read_calibration

    cal = read_calibration(path)
    scale = {a: float(v) for a, v in cal.pixel_size.items() if a in "tzyx"}
    units = {}
    for a in scale:
        unit = cal.time_unit if a == "t" else cal.unit
        key = str(unit).lower() if unit else ""
        name = _NGFF_UNITS.get(key, key if key in _NGFF_UNITS.values() else None)
        if name:  # a unit NGFF does not name is left out (the metadata would not validate); the size stays
            units[a] = name
    return scale, units


# ---------------------------------------------------------------------- writing
def ngff_axes_order_ok(axes: str) -> bool:
    """Whether ``axes`` (letters) is an NGFF image layout: 2-5 axes, time, then channel, then 2-3 space."""
    order = {"t": 0, "c": 1, "z": 2, "y": 2, "x": 2}
    if not 2 <= len(axes) <= 5 or any(a not in order for a in axes) or len(set(axes)) != len(axes):
        return False
    ranks = [order[a] for a in axes]
    return ranks == sorted(ranks) and 2 <= sum(a in "zyx" for a in axes) <= 3


@dataclass
class _Image:
    """One multiscale image being written (the root image or a label image)."""

    group_path: str  # relative to the store root: "" or "labels/<name>"
    axes: str
    scale: list[float]
    units: dict[str, str]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    label: bool
    name: str


class OmeZarrWriter:
    """Writes one OME-Zarr store: arrays first, pyramid and metadata last.

    Parameters
    ----------
    path : str or Path
        The store to create (``out.ome.zarr``).
    ngff : {"0.4", "0.5"}
        0.4: zarr v2, ``/`` separator, Blosc-zstd.  0.5: zarr v3, dimension
        names, shards (the caller's work units) holding chunks.
    overwrite : bool
        Replace an existing store; else an existing path is refused.
    resume : bool
        Reopen a store an interrupted run left (the caller keeps the record
        of what is finished).
    """

    def __init__(self, path: str | Path, *, ngff: str = "0.4", overwrite: bool = False, resume: bool = False,
                 inputs: Sequence[Any] = ()):
        import zarr

        if ngff not in NGFF_VERSIONS:
            raise InputError(f"ngff={ngff!r} is not valid: use '0.4' (zarr v2, read by most viewers) or '0.5'")
        self.path = Path(path)
        self.ngff = ngff
        self.zarr_format = 2 if ngff == "0.4" else 3
        self.images: dict[str, _Image] = {}
        check_output_store(self.path, inputs=inputs, overwrite=overwrite, resume=resume)
        resuming = resume and self.path.exists()
        if self.path.exists() and not resuming:
            shutil.rmtree(self.path)  # a store of ours, checked above: never a link, an input or a stranger's
        try:
            self.root = zarr.open_group(str(self.path), mode="a" if resuming else "w", zarr_format=self.zarr_format)
            if not resuming:  # the mark comes first: from now on overwrite/resume recognise the store as ours
                from .._version import __version__

                self.root.attrs.update({STORE_MARKER: {"output": True, "version": __version__}})
        except Exception as e:
            raise InputError(f"cannot write {self.path}: {type(e).__name__}: {e}; choose a folder you can write "
                             "to") from e
        if resuming and self.root.metadata.zarr_format != self.zarr_format:
            raise InputError(f"cannot resume {self.path}: it is a zarr v{self.root.metadata.zarr_format} store, this "
                             f"run writes NGFF {ngff} (zarr v{self.zarr_format}); pass the same --ngff, or --overwrite")

    def create(self, name: str, *, shape: Sequence[int], dtype: Any, chunks: Sequence[int], axes: str,
               scale: Sequence[float], units: Mapping[str, str] | None = None,
               shards: Sequence[int] | None = None, label: bool = False) -> Any:
        """Create (or, resuming, reopen) level 0 of an image; returns the zarr array to fill.

        ``label``: an NGFF label image under ``labels/<name>``; else the root image.
        """
        if not ngff_axes_order_ok(axes):
            raise InputError(f"output {name!r} has axes {axes!r}, which OME-Zarr cannot hold (it takes 2 to 5 axes "
                             "in the order t, c, z, y, x): write plain files instead (-o FOLDER)")
        group_path = f"labels/{name}" if label else ""
        chunks = tuple(int(min(c, n)) for c, n in zip(chunks, shape))
        shards_t = None
        if shards is not None and self.zarr_format == 3:
            shards_t = tuple(int(min(s, n)) for s, n in zip(shards, shape))
            # a shard holds whole chunks
            chunks = tuple(c if s % c == 0 else s for c, s in zip(chunks, shards_t))
        img = _Image(group_path, axes, [float(s) for s in scale], dict(units or {}), chunks, shards_t, label, name)
        self.images[group_path] = img
        group = self._group(group_path)
        if "0" in group:  # resuming: the arrays exist; they must be what this run would make
            array = group["0"]
            if tuple(array.shape) != tuple(shape) or np.dtype(array.dtype) != np.dtype(dtype):
                raise InputError(f"cannot resume {self.path}: its array {group_path or '.'}/0 is {array.shape} "
                                 f"{array.dtype}, this run makes {tuple(shape)} {np.dtype(dtype)}; pass --overwrite")
            return array
        return self._create_array(group, "0", tuple(shape), dtype, chunks, shards_t, axes)

    def _group(self, group_path: str) -> Any:
        g = self.root
        for part in [p for p in group_path.split("/") if p]:
            g = g[part] if part in g else g.create_group(part)
        return g

    def _create_array(self, group: Any, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...],
                      shards: tuple[int, ...] | None, axes: str) -> Any:
        # zstd level 3, not 5: on a 1024² float32 network output 25 ms against 75 ms per chunk, for a 1.20 in
        # place of 1.22 compression ratio (measured); the writer shares the cores with the engine
        if self.zarr_format == 2:
            import numcodecs

            return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                                      compressors=numcodecs.Blosc(cname="zstd", clevel=_ZSTD_LEVEL,
                                                                  shuffle=numcodecs.Blosc.SHUFFLE),
                                      chunk_key_encoding={"name": "v2", "separator": "/"}, overwrite=True)
        import zarr

        return group.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=dtype, fill_value=0,
                                  compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=_ZSTD_LEVEL, shuffle="shuffle"),
                                  dimension_names=list(axes), overwrite=True)

    def array(self, name: str) -> Any:
        """Level 0 of the image ``name`` (the root image when it is one, else its label image)."""
        img = next((i for i in self.images.values() if i.name == name and not i.label), None) or \
            next(i for i in self.images.values() if i.name == name)
        return self._group(img.group_path)["0"]

    # ------------------------------------------------------------ finishing
    def finish(self) -> None:
        """Build every image's pyramid, then write the NGFF metadata (validated) last."""
        for img in self.images.values():
            levels = self._pyramid(img)
            self._write_metadata(img, levels)
        labels = [img.name for img in self.images.values() if img.label]
        if labels:
            group = self._group("labels")
            # a label image added to a finished store (predict --labels) joins the ones it lists
            listed = dict(group.attrs)
            earlier = list((listed.get("ome", listed) or {}).get("labels") or [])
            labels = list(dict.fromkeys(earlier + labels))
            attrs = {"labels": labels} if self.ngff == "0.4" else {"version": "0.5", "labels": labels}
            self._write_attrs(group, attrs, validate=None)
        self._validate_written()

    def _pyramid(self, img: _Image) -> int:
        group = self._group(img.group_path)
        src = group["0"]
        yx = [i for i, a in enumerate(img.axes) if a in "yx"]
        n_levels = 1
        while n_levels < _PYRAMID_MAX_LEVELS and max(src.shape[i] for i in yx) > _PYRAMID_MIN:
            shape = tuple((n + 1) // 2 if i in yx else n for i, n in enumerate(src.shape))
            dst = self._create_array(group, str(n_levels), shape, src.dtype, img.chunks, img.shards, img.axes)
            _downsample(src, dst, yx, label=img.label)
            src = dst
            n_levels += 1
        for stale in range(n_levels, _PYRAMID_MAX_LEVELS + 1):  # a resumed run may have left more
            if str(stale) in group:
                del group[str(stale)]
        return n_levels

    def _multiscale(self, img: _Image, n_levels: int) -> dict:
        axes = []
        for a in img.axes:
            entry = {"name": a, "type": AXIS_TYPES[a]}
            if a in img.units:
                entry["unit"] = img.units[a]
            axes.append(entry)
        datasets = []
        for k in range(n_levels):
            scale = [s * (2 ** k if a in "yx" else 1) for s, a in zip(img.scale, img.axes)]
            datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
        ms = {"name": img.name, "axes": axes, "datasets": datasets,
              "type": "nearest" if img.label else "mean", "metadata": {"method": "bioimgzoo 2x2 " +
                                                                       ("nearest" if img.label else "mean")}}
        if self.ngff == "0.4":
            ms = {"version": "0.4", **ms}
        return ms

    def _write_metadata(self, img: _Image, n_levels: int) -> None:
        from ome_zarr_models.v04.image import ImageAttrs as Attrs04
        from ome_zarr_models.v04.image_label import ImageLabelAttrs as Label04
        from ome_zarr_models.v05.image import ImageAttrs as Attrs05
        from ome_zarr_models.v05.image_label import ImageLabelAttrs as Label05

        ms = self._multiscale(img, n_levels)
        attrs: dict[str, Any] = {"multiscales": [ms]}
        if img.label:
            attrs["image-label"] = {"source": {"image": "../../"}}
            if self.ngff == "0.4":
                attrs["image-label"]["version"] = "0.4"
        model = (Label04 if img.label else Attrs04) if self.ngff == "0.4" else (Label05 if img.label else Attrs05)
        if self.ngff == "0.5":
            attrs = {"version": "0.5", **attrs}
        self._write_attrs(self._group(img.group_path), attrs, validate=model)

    def _write_attrs(self, group: Any, attrs: dict, *, validate: Any) -> None:
        if validate is not None:
            try:
                validate.model_validate(attrs)
            except Exception as e:  # a bug here, not the user's: say what failed
                raise RuntimeError(f"bioimgzoo made NGFF metadata that does not validate: {e}") from e
        group.attrs.update({"ome": attrs} if self.ngff == "0.5" else attrs)

    def _validate_written(self) -> None:
        import zarr

        from ome_zarr_models import open_ome_zarr

        root = zarr.open_group(str(self.path), mode="r")
        try:
            open_ome_zarr(root, version=self.ngff)
            for img in self.images.values():
                if img.label:
                    open_ome_zarr(root[img.group_path], version=self.ngff)
        except Exception as e:
            raise RuntimeError(f"the OME-Zarr written to {self.path} does not validate: {e}") from e


def _downsample(src: Any, dst: Any, yx: Sequence[int], *, label: bool) -> None:
    """``dst`` = ``src`` halved along ``yx``, written in blocks of whole ``dst`` chunks."""
    yx = list(yx)
    chunks = dst.shards or dst.chunks
    block = list(chunks)
    # grow the block along y/x while it stays small: fewer, larger reads
    # (a block of the finer level is 4x the values: keep that within _PYRAMID_BLOCK, whatever the image size)
    while math.prod(block) * 16 < _PYRAMID_BLOCK and any(block[i] < dst.shape[i] for i in yx):
        for i in yx:
            block[i] = min(dst.shape[i], block[i] * 2)
    ranges = [range(0, n, b) for n, b in zip(dst.shape, block)]

    def one(starts: tuple[int, ...]) -> None:
        out_region = tuple(slice(s, min(s + b, n)) for s, b, n in zip(starts, block, dst.shape))
        in_region = tuple(slice(2 * r.start, min(2 * r.stop, n)) if i in yx else r
                          for i, (r, n) in enumerate(zip(out_region, src.shape)))
        data = np.asarray(src[in_region])
        if label:
            out = data[tuple(slice(None, None, 2) if i in yx else slice(None) for i in range(data.ndim))]
        else:
            pad = [(0, (n % 2) if i in yx else 0) for i, n in enumerate(data.shape)]
            if any(p[1] for p in pad):
                data = np.pad(data, pad, mode="edge")
            # the 2x2 mean in float64 as strided sums (3x faster than a reshaped .mean, the same values)
            out = None
            for offsets in itertools.product((0, 1), repeat=len(yx)):
                view = data[tuple(slice(offsets[yx.index(i)], None, 2) if i in yx else slice(None)
                                  for i in range(data.ndim))]
                if out is None:
                    out = view.astype(np.float64)
                else:
                    out += view
            out *= 1.0 / 2 ** len(yx)
            if np.dtype(dst.dtype).kind in "iu":
                out = np.rint(out)
            out = out.astype(dst.dtype)
        dst[out_region] = out  # whole chunks (shards) of dst: blocks never share one

    # two blocks at a time: decoding, the means and encoding release the GIL, and the pass is otherwise
    # serial after the prediction (measured on 2 cores, 4096²: see scripts/bench_big.py)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(_PYRAMID_THREADS, thread_name_prefix="bioimgzoo-pyramid") as pool:
        for _ in pool.map(one, itertools.product(*ranges)):
            pass

