"""Images in and out: TIFF (axes from ImageJ/OME metadata), PNG/JPEG, ``.npy``.

:func:`read_image` returns the array and its layout when the file states
one (``"zcyx"``...; ``None`` when the layout must be guessed).
:func:`write_image` writes atomically (temporary file, then rename), so a
failed or interrupted run never leaves a partial output file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .._files import atomic_path
from ..errors import InputError

__all__ = ["read_image", "write_image", "output_path", "IMAGE_SUFFIXES", "find_images"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".npy")

#: tifffile axis letters -> ours (S = samples of an RGB pixel = channels)
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}


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
        if suffix in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array = series.asarray()
                tiff_axes = series.axes
            axes = _tiff_axes_to_ours(tiff_axes, array.shape)
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


def _tiff_axes_to_ours(tiff_axes: str, shape: Sequence[int]) -> str | None:
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


def write_image(path: str | Path, array: np.ndarray, *, axes: str | Sequence[str] | None = None) -> Path:
    """Write ``array`` atomically; the format follows the suffix (.tif, .npy, .png)."""
    path = Path(path)
    suffix = _suffix(path)
    array = np.asarray(array)
    try:
        _write(path, suffix, array, axes)
    except OSError as e:  # a read-only or full disk, a folder where the file should go
        raise InputError(f"cannot write {path}: {e.strerror or e}; choose a folder you can write to "
                         "(with enough free space)") from e
    return path


def _write(path: Path, suffix: str, array: np.ndarray, axes: str | Sequence[str] | None) -> None:
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
            import tifffile

            meta = {}
            if axes is not None:
                letters = "".join({"batch": "Q", "channel": "C", "index": "I"}.get(a, a) if len(a) > 1 else
                                  {"b": "Q", "c": "C", "i": "I"}.get(a, a) for a in axes).upper()
                if len(letters) == array.ndim:
                    meta = {"axes": letters}
            tifffile.imwrite(tmp, array, metadata=meta or None)
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


def output_path(out_dir: str | Path, image: str | Path, output_id: str, *, fmt: str | None = None) -> Path:
    """Where the output ``output_id`` of input file ``image`` goes: ``{stem}_{output_id}.{fmt}``."""
    image = Path(image)
    suffix = _suffix(image)
    stem = image.name[: -len(suffix)] if suffix else image.name
    ext = (fmt or ("npy" if suffix == ".npy" else "tif")).lstrip(".")
    return Path(out_dir) / f"{stem}_{output_id}.{ext}"


def find_images(items: Sequence[str | Path]) -> list[Path]:
    """Expand folders and glob patterns into a sorted list of image files."""
    import glob

    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(f for f in p.iterdir() if f.is_file() and _suffix(f) in IMAGE_SUFFIXES))
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise InputError(f"no file matches {item}")
            found.extend(m for m in matches if m.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"input {item} does not exist: check the path")
    if not found:
        raise InputError(f"no images found in {', '.join(map(str, items))} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return found
