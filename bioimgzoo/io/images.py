"""Images in and out: TIFF (axes and calibration from ImageJ/OME metadata), PNG/JPEG, ``.npy``.

:func:`read_image` returns the array and its layout when the file states
one (``"zcyx"``...; ``None`` when the layout must be guessed);
:func:`read_calibration` reads what one pixel measures (``0.325 um`` in x
and y, ``2 um`` in z, ``5 s`` between frames) and the channel names, from
the metadata alone.

:func:`write_image` writes atomically (temporary file, then rename), so a
failed or interrupted run never leaves a partial output file.  A ``.tif``
is written as an ImageJ hyperstack (axes in ImageJ's TZCYX order, the
calibration and channel names Fiji shows), ``.ome.tif`` as OME-TIFF; an
array ImageJ cannot hold (axes other than t, z, c, y, x, or integers
outside 0..65535) goes into a plain TIFF that keeps its axes and type.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .._files import atomic_path
from ..errors import InputError

__all__ = ["read_image", "read_calibration", "write_image", "output_path", "image_stem", "png_ready",
           "normalize_unit", "Calibration", "IMAGE_SUFFIXES", "TIFF_SUFFIXES", "find_images"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".npy")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")

#: tifffile axis letters -> ours (S = samples of an RGB pixel = channels)
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
#: the order ImageJ hyperstacks keep their axes in
_IMAGEJ_ORDER = "tzcyx"
#: ways files spell micrometres; written back as ImageJ's "um" (Fiji shows µm)
_MICRONS = {"um", "µm", "μm", "micron", "microns", "micrometer", "micrometre", "micrometers", "micrometres",
            "\\u00b5m"}


@dataclass(frozen=True)
class Calibration:
    """What one pixel of an image measures, and the names of its channels.

    ``pixel_size`` maps axis letters (``x``, ``y``, ``z``; ``t`` for the
    interval between frames) to the size of one pixel in ``unit``
    (``time_unit`` for ``t``); axes without a known size are absent.
    """

    pixel_size: Mapping[str, float] = field(default_factory=dict)
    unit: str | None = None
    time_unit: str | None = None
    channel_names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pixel_size or self.channel_names)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".ome.tiff", ".ome.tif"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def read_image(path: str | Path) -> tuple[np.ndarray, str | None]:
    """Read an image file.

    Returns
    -------
    array : ndarray
    axes : str or None
        Layout letters (``t``, ``c``, ``z``, ``y``, ``x``) when the file says,
        else None.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist: check the path")
    suffix = _suffix(path)
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array = series.asarray()
                tiff_axes = series.axes
            axes = tiff_axes_to_ours(tiff_axes, array.shape)
            if axes is not None and "q" in axes:
                # unnamed size-1 axes carry nothing; squeezed here, two of them cannot repeat a letter
                array = array.reshape([n for ch, n in zip(axes, array.shape) if ch != "q"])
                axes = axes.replace("q", "") or None
            return array, axes
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix in (".png", ".jpg", ".jpeg"):
            import imageio.v3 as iio

            array = iio.imread(path)
            if array.ndim == 2:
                return array, "yx"
            if array.ndim == 3 and array.shape[-1] in (3, 4):
                return array, "yxc"
            return array, None
    except InputError:
        raise
    except Exception as e:  # tifffile/imageio/numpy raise many types for broken files
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {e}. Is the file complete and "
                         "really of that type?") from e
    raise InputError(f"{path}: unsupported image type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")


def read_calibration(path: str | Path) -> Calibration:
    """The pixel sizes, units and channel names a TIFF's ImageJ or OME metadata states.

    Reads metadata only (no pixels).  Other formats, files without such
    metadata and unreadable metadata give an empty :class:`Calibration`:
    calibration is a courtesy, never a reason to stop.
    """
    path = Path(path)
    if _suffix(path) not in TIFF_SUFFIXES:
        return Calibration()
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                found = _ome_calibration(tifffile.xml2dict(tif.ome_metadata))
                if found:
                    return found
            return _imagej_calibration(tif.imagej_metadata or {}, tif.pages.first)
    except Exception:  # a broken tag or XML: the image may still be readable, without calibration
        return Calibration()


def normalize_unit(text: object) -> str | None:
    """A unit as written back to files: micrometres in any spelling -> ``um``; pixels/none -> None."""
    if text is None:
        return None
    t = str(text).strip()
    if not t or t.lower() in ("pixel", "pixels", "none"):
        return None
    return "um" if t.lower() in _MICRONS else t


def _resolution_size(page, tag: str) -> float | None:
    try:
        num, den = page.tags[tag].value
        return den / num if num and den else None
    except (KeyError, TypeError, ValueError):
        return None


def _imagej_calibration(meta: Mapping, page) -> Calibration:
    sizes: dict[str, float] = {}
    unit = normalize_unit(meta.get("unit"))
    res_unit = None
    try:
        res_unit = int(page.tags["ResolutionUnit"].value)
    except (KeyError, TypeError, ValueError):
        pass
    if unit is None and res_unit == 3:  # centimetres, from writers without ImageJ metadata
        unit, factor = "um", 1e4
    else:
        factor = 1.0
    # pixels per inch is what every image program writes by default (72 dpi): no physical meaning
    if unit is not None:
        for ax, tag in (("x", "XResolution"), ("y", "YResolution")):
            size = _resolution_size(page, tag)
            if size is not None and math.isfinite(size) and size > 0:
                sizes[ax] = size * factor
        if _positive(meta.get("spacing")):
            sizes["z"] = float(meta["spacing"])
    if _positive(meta.get("finterval")):
        sizes["t"] = float(meta["finterval"])
    labels = meta.get("Labels")
    channels = int(meta.get("channels", 1) or 1)
    names: tuple[str, ...] = ()
    if isinstance(labels, (list, tuple)) and channels > 1 and len(labels) >= channels:
        names = tuple(str(x) for x in labels[:channels])
    return Calibration(sizes, unit, normalize_unit(meta.get("tunit")) or ("s" if "t" in sizes else None), names)


def _positive(v: object) -> bool:
    try:
        return math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def _ome_calibration(tree: Mapping) -> Calibration:
    image = tree.get("OME", {}).get("Image")
    if isinstance(image, list):
        image = image[0] if image else {}
    pixels = (image or {}).get("Pixels") or {}
    sizes, unit = {}, None
    for ax in "xyz":
        v = pixels.get(f"PhysicalSize{ax.upper()}")
        if _positive(v):
            sizes[ax] = float(v)
            unit = unit or normalize_unit(pixels.get(f"PhysicalSize{ax.upper()}Unit", "µm"))
    time_unit = None
    if _positive(pixels.get("TimeIncrement")):
        sizes["t"] = float(pixels["TimeIncrement"])
        time_unit = normalize_unit(pixels.get("TimeIncrementUnit", "s"))
    channels = pixels.get("Channel")
    channels = [channels] if isinstance(channels, dict) else (channels or [])
    names = tuple(str(c.get("Name")) for c in channels if isinstance(c, dict) and c.get("Name") is not None)
    if len(names) != len(channels):
        names = ()
    return Calibration(sizes, unit, time_unit, names)


def tiff_axes_to_ours(tiff_axes: str, shape: Sequence[int]) -> str | None:
    letters = []
    for ch, n in zip(tiff_axes, shape):
        mapped = _TIFF_AXES.get(ch)
        if mapped is None:
            if n == 1:
                letters.append("q")  # an unnamed singleton: harmless, squeezed by read_image
                continue
            return None  # unknown axis (Q, I, ...): let the caller guess
        letters.append(mapped)
    if letters.count("c") > 1 or len(set(letters) - {"q"}) != len([x for x in letters if x != "q"]):
        return None
    return "".join(letters)


def _letters(axes: str | Sequence[str]) -> str:
    """Axis ids or letters -> our letters (``b`` batch, ``c`` channel, ``i`` index)."""
    long = {"batch": "b", "channel": "c", "index": "i"}
    if isinstance(axes, str):
        return axes.lower()
    return "".join(long.get(a, a) if len(a) > 1 else a.lower() for a in axes)


def write_image(path: str | Path, array: np.ndarray, *, axes: str | Sequence[str] | None = None,
                calibration: Calibration | None = None) -> Path:
    """Write ``array`` atomically; the format follows the suffix (``.tif``, ``.ome.tif``, ``.npy``, ``.png``).

    Parameters
    ----------
    axes : str or sequence, optional
        Layout of ``array`` (letters or axis ids).  TIFFs are written in
        ImageJ's TZCYX order whatever the order here.
    calibration : Calibration, optional
        Pixel sizes, units and channel names stored in a TIFF (ImageJ or
        OME metadata); ignored by the other formats.
    """
    path = Path(path)
    suffix = _suffix(path)
    array = np.asarray(array)
    try:
        _write(path, suffix, array, axes, calibration or Calibration())
    except OSError as e:  # a read-only or full disk, a folder where the file should go
        raise InputError(f"cannot write {path}: {e.strerror or e}; choose a folder you can write to "
                         "(with enough free space)") from e
    return path


def _write(path: Path, suffix: str, array: np.ndarray, axes: str | Sequence[str] | None,
           calibration: Calibration) -> None:
    with atomic_path(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            _write_tiff(tmp, array, None if axes is None else _letters(axes), calibration,
                        ome=suffix.startswith(".ome"))
        elif suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
        elif suffix == ".png":
            if array.dtype not in (np.uint8, np.uint16):
                raise InputError(f"PNG holds only 8/16-bit integers, the output is {array.dtype}: "
                                 "write .tif or .npy instead (--format tif)")
            import imageio.v3 as iio

            iio.imwrite(tmp, np.squeeze(array), extension=".png")
        else:
            raise InputError(f"cannot write {path.name}: unsupported type {suffix!r}; use .tif, .npy or .png")


def _hyperstack(array: np.ndarray, axes: str) -> tuple[np.ndarray, str] | None:
    """``array`` in TZCYX order (a subset), or None when it has axes ImageJ cannot show."""
    if len(axes) != array.ndim or len(set(axes)) != len(axes) or "y" not in axes or "x" not in axes:
        return None
    keep = [i for i, a in enumerate(axes) if a in _IMAGEJ_ORDER or array.shape[i] != 1]
    if any(axes[i] not in _IMAGEJ_ORDER for i in keep):
        return None  # a batch of several, an index axis: no place for it in a hyperstack
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    order = sorted(range(len(axes)), key=lambda i: _IMAGEJ_ORDER.index(axes[i]))
    return np.transpose(array, order), "".join(axes[i] for i in order)


def _imagej_dtype(array: np.ndarray) -> np.ndarray | None:
    """``array`` in a type ImageJ holds (uint8, uint16, float32) without losing values, else None."""
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        return array.astype(np.float32)  # float64 outputs: float32 is what Fiji computes in anyway
    if array.dtype.kind in "iu":
        if array.size == 0 or (array.min() >= 0 and array.max() <= 65535):
            return array.astype(np.uint16)
        if array.min() > -(1 << 24) and array.max() < (1 << 24):  # exact in float32
            return array.astype(np.float32)
    return None


def _write_tiff(tmp: Path, array: np.ndarray, axes: str | None, cal: Calibration, *, ome: bool) -> None:
    import tifffile

    stack = _hyperstack(array, axes) if axes else None
    data = _imagej_dtype(stack[0]) if stack is not None else None
    if stack is None or (data is None and not ome):
        # what ImageJ cannot hold is kept exactly, with its axes, in a plain TIFF
        meta = {}
        if axes is not None and len(axes) == array.ndim:
            meta = {"axes": "".join({"b": "Q", "i": "I"}.get(a, a) for a in axes).upper()}
        tifffile.imwrite(tmp, array, metadata=meta or None, ome=False if not ome else None)
        return
    order = stack[1]
    sizes = cal.pixel_size
    # names of several channels (one channel's name would label every plane of a stack alike)
    names = list(cal.channel_names) if "c" in order and len(cal.channel_names) == \
        stack[0].shape[order.index("c")] > 1 else []
    if ome:
        data = stack[0] if data is None else data
        meta: dict = {"axes": order.upper()}
        for ax in "xyz":
            if ax in sizes and ax in order:
                meta[f"PhysicalSize{ax.upper()}"] = float(sizes[ax])
                meta[f"PhysicalSize{ax.upper()}Unit"] = "µm" if cal.unit in (None, "um") else cal.unit
        if "t" in sizes and "t" in order:
            meta["TimeIncrement"] = float(sizes["t"])
            meta["TimeIncrementUnit"] = cal.time_unit or "s"
        if names:
            meta["Channel"] = {"Name": names}
        tifffile.imwrite(tmp, data, ome=True, metadata=meta)
        return
    meta = {"axes": order.upper()}
    resolution = None
    if "x" in sizes and "y" in sizes:
        resolution = (1.0 / sizes["x"], 1.0 / sizes["y"])
        meta["unit"] = cal.unit or "pixel"
    if "z" in sizes and "z" in order:
        meta["spacing"] = float(sizes["z"])
        meta.setdefault("unit", cal.unit or "pixel")
    if "t" in sizes and "t" in order:
        meta["finterval"] = float(sizes["t"])
        if cal.time_unit:
            meta["tunit"] = cal.time_unit
    if names:
        planes = int(np.prod([n for a, n in zip(order, data.shape) if a in "tzc"]))
        n_c = len(names)
        meta["Labels"] = [names[i % n_c] for i in range(planes)]  # c varies fastest of t, z, c
    tifffile.imwrite(tmp, data, imagej=True, resolution=resolution, metadata=meta)


def png_ready(array: np.ndarray, axes: str | Sequence[str] | None) -> tuple[np.ndarray, str]:
    """``array`` as an 8/16-bit PNG image (``yx`` or RGB ``yxc``) and a note on how values were scaled.

    Only 2D single-channel and 3-channel results fit a PNG; anything else
    raises :class:`~bioimgzoo.errors.InputError` naming ``--format tif``.
    Integers from 0 to 65535 (labels) are kept as they are; other values
    are scaled to 0-255: probabilities in [0, 1] times 255, anything else
    from its minimum and maximum.
    """
    array = np.asarray(array)
    letters = _letters(axes) if axes is not None else None
    if letters is not None and len(letters) == array.ndim:
        keep = [i for i, n in enumerate(array.shape) if n != 1 or letters[i] in "yx"]
        letters = "".join(letters[i] for i in keep)
        array = array.reshape([array.shape[i] for i in keep])
        if letters == "cyx" or (letters == "yxc" and array.shape[-1] == 3):
            array = np.moveaxis(array, 0, -1) if letters == "cyx" else array
            letters = "yxc"
    else:
        array = np.squeeze(array)
        letters = "yx" if array.ndim == 2 else None
    if letters not in ("yx", "yxc") or (letters == "yxc" and array.shape[-1] != 3):
        raise InputError(f"a result of shape {tuple(array.shape)} (axes {letters or '?'}) is neither 2D "
                         "single-channel nor RGB: PNG cannot hold it, write TIFF (--format tif)")
    if array.dtype.kind in "bui" and (array.size == 0 or (array.min() >= 0 and array.max() <= 65535)):
        small = array.size == 0 or array.max() <= 255
        return array.astype(np.uint8 if small else np.uint16), "integer values kept as they are"
    a = array.astype(np.float64)
    finite = np.isfinite(a)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        lo, hi, how = 0.0, 1.0, "values 0..1 scaled to 0..255"
    else:
        how = f"values {lo:.4g}..{hi:.4g} scaled to 0..255"
    out = np.clip((np.where(finite, a, lo) - lo) / ((hi - lo) or 1.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, how


def output_path(out_dir: str | Path, image: str | Path, output_id: str, *, fmt: str | None = None,
                subfolder: str | Path | None = None) -> Path:
    """Where the output ``output_id`` of input file ``image`` goes: ``{out_dir}/{subfolder}/{stem}_{output_id}.{ext}``.

    ``fmt``: ``tif`` (default; ``npy`` for ``.npy`` inputs), ``ome-tiff``,
    ``npy`` or ``png``.
    """
    image = Path(image)
    suffix = _suffix(image)
    stem = image.name[: -len(suffix)] if suffix else image.name
    ext = (fmt or ("npy" if suffix == ".npy" else "tif")).lstrip(".")
    ext = {"ome-tiff": "ome.tif", "ome-tif": "ome.tif", "tiff": "tif"}.get(ext, ext)
    folder = Path(out_dir) / subfolder if subfolder else Path(out_dir)
    return folder / f"{stem}_{output_id}.{ext}"


def image_stem(image: str | Path) -> str:
    """The file name of ``image`` without its image suffix (``x.ome.tif`` -> ``x``)."""
    image = Path(image)
    suffix = _suffix(image)
    return image.name[: -len(suffix)] if suffix else image.name


def find_images(items: Sequence[str | Path], *, out_dir: str | Path | None = None,
                output_keys: Sequence[str] = (), skipped: list | None = None) -> list[Path]:
    """Expand folders and glob patterns into a sorted list of image files.

    Inputs are inputs: what folders and globs find is never a file inside
    ``out_dir`` (the run's own output folder), nor a file named as bioimgzoo
    names outputs (:func:`output_path`: ``{stem}_{key}.{ext}`` for a ``key``
    in ``output_keys``) beside an image ``{stem}.*`` found in the same
    folder, so a second run never predicts on the first run's results
    (``x_probability.tif`` giving ``x_probability_probability.tif``).  Files
    named one by one are taken as given.  ``skipped``, when a list, receives
    ``(path, reason)`` for each file left out.
    """
    import glob

    out = Path(out_dir).resolve() if out_dir is not None else None
    found: list[Path] = []
    searched: dict[Path, Path] = {}  # found by a folder or a glob (the ones to screen) -> the folder searched
    for item in items:
        p = Path(item)
        if p.is_dir():
            hits = sorted(f for f in p.iterdir() if f.is_file() and _suffix(f) in IMAGE_SUFFIXES)
            found.extend(hits)
            searched.update((h, p.resolve()) for h in hits)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise InputError(f"no file matches {item}")
            hits = [m for m in matches if m.is_file()]
            found.extend(hits)
            # the folder the glob searches: its path up to the first wildcard
            prefix = glob.escape(str(item)).split("[*]")[0].split("[?]")[0].split("[[]")[0]
            base = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix or "x").parent
            searched.update((h, base.resolve()) for h in hits)
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"input {item} does not exist: check the path")
    left_out = _own_outputs(searched, out, output_keys)
    if left_out:
        found = [f for f in found if f not in left_out]
        if skipped is not None:
            skipped.extend(left_out.items())
    if not found:
        more = f"; {len(left_out)} file(s) there are bioimgzoo's own outputs" if left_out else ""
        raise InputError(f"no images found in {', '.join(map(str, items))} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)}{more})")
    return found


def _own_outputs(searched: dict[Path, Path], out: Path | None, keys: Sequence[str]) -> dict[Path, str]:
    """The files found by searching that a bioimgzoo run wrote, with why (see :func:`find_images`).

    ``searched``: each file -> the folder its folder or glob searched.  A file inside ``out`` is
    left out when ``out`` lies below that folder (``imgs/**/*.tif -o imgs/results``); when the
    output folder is the searched folder itself (``imgs/ -o imgs/``), the inputs are there too and
    only the naming rule tells outputs apart.
    """
    left_out: dict[Path, str] = {}
    files = list(searched)
    if out is not None:
        for f, base in searched.items():
            if base in out.parents and out in f.resolve().parents:
                left_out[f] = f"inside the output folder {out}"
    stems = {(f.resolve().parent, image_stem(f).lower()) for f in files}
    for f in files:
        if f in left_out:
            continue
        stem = image_stem(f).lower()
        for key in keys:
            end = "_" + str(key).lower()
            if stem.endswith(end) and (f.resolve().parent, stem[: -len(end)]) in stems:
                left_out[f] = f"named as bioimgzoo names the output '{key}' of {stem[: -len(end)]}"
                break
    return left_out
