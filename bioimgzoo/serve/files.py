"""Files in, files out: an uploaded TIFF/PNG/JPEG/.npy predicted and answered as the CLI writes it.

:func:`read_upload` stores the body in a private temporary folder, checks
the image's size from its header alone (a small compressed file may
declare a huge image: 413 before any pixel is decoded), and reads it with
:func:`bioimgzoo.io.read_image` and its calibration with
:func:`bioimgzoo.io.read_calibration`.  :func:`predict_upload` runs the
model and writes the answer with :func:`bioimgzoo.io.write_image`: an
ImageJ hyperstack TIFF with the input's calibration carried over
(:func:`bioimgzoo.runtime.outputs.output_calibration`), a PNG (scaled as
``bioimgzoo predict --format png`` scales), a ``.npy``, or, for the web
page, a JSON preview (input, result and labels overlay as PNGs, plus the
TIFF).  ``labels`` turns the probabilities into instance labels as
``bioimgzoo predict --labels`` does.
"""

from __future__ import annotations

import base64
import colorsys
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .protocol import RequestRefused

__all__ = ["Upload", "read_upload", "predict_upload", "FORMATS", "choose_format"]

#: answer formats: name -> media type
FORMATS = {"tif": "image/tiff", "png": "image/png", "npy": "application/x-npy", "json": "application/json"}
_SUFFIX_BY_TYPE = {"image/tiff": ".tif", "image/tif": ".tif", "image/png": ".png", "image/jpeg": ".jpg",
                   "image/jpg": ".jpg", "application/x-npy": ".npy", "application/npy": ".npy"}


def _sniff(head: bytes) -> str | None:
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tif"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if head[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if head[:6] == b"\x93NUMPY":
        return ".npy"
    return None


def choose_format(accept: str | None, query: str | None) -> str:
    """The answer's format: ``?format=`` first, then the Accept header, else TIFF."""
    if query:
        q = query.lower().lstrip(".")
        q = {"tiff": "tif"}.get(q, q)
        if q not in FORMATS:
            raise RequestRefused(400, f"format={query!r} is not one of {', '.join(FORMATS)}")
        return q
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        for name, m in FORMATS.items():
            if media == m or (name == "npy" and media == "application/octet-stream"):
                return name
    return "tif"


@dataclass
class Upload:
    path: Path
    array: np.ndarray
    axes: str | None
    calibration: Any
    filename: str


def _declared_pixels(path: Path, suffix: str) -> int | None:
    """The number of values an image file declares, from its header alone (None: unknown)."""
    try:
        if suffix == ".tif":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return int(math.prod(tif.series[0].shape))
        if suffix == ".npy":
            return int(math.prod(np.load(path, mmap_mode="r", allow_pickle=False).shape))  # the header only
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0] * im.size[1] * len(im.getbands()))
    except Exception:  # noqa: BLE001 -- unreadable headers end in read_image's own message
        return None


def read_upload(data: bytes, content_type: str | None, folder: Path, *, filename: str | None = None,
                max_pixels: int) -> Upload:
    """The uploaded image (see the module docstring); 415 for what is no image, 413 for one too large."""
    media = (content_type or "").split(";")[0].strip().lower()
    suffix = _sniff(data[:16]) or _SUFFIX_BY_TYPE.get(media)
    if suffix is None:
        raise RequestRefused(415, f"the body is not a TIFF, PNG, JPEG or .npy image (Content-Type {media or 'none'}): "
                             "send the image file's bytes, or a multipart form with a 'file' field")
    path = folder / f"upload{suffix}"
    path.write_bytes(data)
    n = _declared_pixels(path, suffix)
    if n is not None and n > max_pixels:
        raise RequestRefused(413, f"the image has {n:,} values, more than this server takes in one request "
                             f"({max_pixels:,}): send it as a job (POST /bioimgzoo/v1/jobs) or crop it")
    from ..io import read_calibration, read_image

    array, axes = read_image(path)
    if array.size > max_pixels:
        raise RequestRefused(413, f"the image has {array.size:,} values, more than this server takes in one "
                             f"request ({max_pixels:,}): send it as a job (POST /bioimgzoo/v1/jobs) or crop it")
    stem = Path(filename or "image").name
    for s in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".npy"):
        if stem.lower().endswith(s):
            stem = stem[: -len(s)]
            break
    return Upload(path, array, axes, read_calibration(path), _safe_name(stem) or "image")


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)[:100]


def predict_upload(model: Any, upload: Upload, *, fmt: str, output: str | None, labels: bool, threshold: float,
                   options: dict) -> tuple[bytes, str, dict[str, str]]:
    """Predict ``upload`` and encode the answer; returns body, media type and headers."""
    import xarray as xr

    from ..descr.axes import parse_axes
    from ..io import png_ready, write_image
    from ..runtime.outputs import labels_plan, output_calibration

    axes = options.pop("axes", None) or upload.axes
    image: Any = upload.array
    if axes is not None:
        image = xr.DataArray(upload.array, dims=parse_axes(axes, ndim=upload.array.ndim, what="uploaded image"))
    ids = [t.id for t in model.outputs]
    plan = labels_plan(model) if labels else None
    out_id = output or (plan.output if plan is not None else ids[0])
    if out_id not in ids:
        raise InputError(f"the model has no output {out_id!r}; its outputs are {', '.join(ids)}")
    result = model.predict(image, **options)
    outs = result if isinstance(result, dict) else {ids[0]: result}
    arr = outs[out_id]
    dims = tuple(arr.dims) if hasattr(arr, "dims") else model.output_axes(out_id)
    arr = np.asarray(arr)
    key, cal_channels = out_id, True
    lab = lab_dims = None
    if plan is not None:
        from ..runtime.labels import output_to_labels

        if plan.stardist:  # StarDist's own decoder with the package's thresholds, as the CLI's --labels
            lab, lab_dims = model.labels_of(np.asarray(outs[plan.output]), dims)
        else:
            lab, lab_dims = output_to_labels(np.asarray(outs[plan.output]), dims, spatial=plan.spatial,
                                             channels=plan.channels, threshold=threshold)
    calibration = output_calibration(model, plan.output if plan is not None else out_id, upload.calibration,
                                     channels=plan is None)
    folder = upload.path.parent
    if plan is not None and fmt != "json":
        arr, dims, key, cal_channels = lab, lab_dims, "labels", False
    name = f"{upload.filename}_{key}"
    if fmt == "json":
        preview = _preview(upload, arr, dims, lab, lab_dims)
        tif = write_image(folder / "result.tif", arr, axes=dims, calibration=output_calibration(
            model, out_id, upload.calibration, channels=True))
        preview.update(output=out_id, axes="".join(_letter(d) for d in dims), shape=list(arr.shape),
                       dtype=str(arr.dtype), filename=f"{name}.tif",
                       tiff=base64.b64encode(tif.read_bytes()).decode())
        import json

        return json.dumps(preview).encode(), FORMATS["json"], {}
    if fmt == "png":
        arr, how = png_ready(arr, dims)
        dims = "yxc" if arr.ndim == 3 else "yx"
        headers = {"X-Bioimgzoo-Scaling": how}
    else:
        headers = {}
    path = write_image(folder / f"result.{fmt}", arr, axes=dims, calibration=calibration if cal_channels
                       else output_calibration(model, plan.output, upload.calibration, channels=False))
    headers["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return path.read_bytes(), FORMATS[fmt], headers


def _letter(axis_id: str) -> str:
    from ..descr.axes import axis_letter

    return axis_letter(axis_id)


def _plane(array: np.ndarray, dims: Any) -> np.ndarray:
    """A 2D view (or RGB ``yxc``) of ``array`` for display: the middle of other axes, the first channel."""
    letters = [_letter(str(d)) for d in dims] if dims is not None and len(dims) == array.ndim else None
    if letters is None:
        a = np.squeeze(array)
        while a.ndim > 2:
            a = a[a.shape[0] // 2]
        return a
    index: list[Any] = []
    for ch, n in zip(letters, array.shape):
        if ch in "yx":
            index.append(slice(None))
        elif ch == "c" and n == 3 and array.dtype == np.uint8:
            index.append(slice(None))
        else:
            index.append(0 if ch == "c" else n // 2)
    kept = [ch for ch, i in zip(letters, index) if isinstance(i, slice)]
    a = array[tuple(index)]
    if "c" in kept:
        a = np.moveaxis(a, kept.index("c"), -1)
    return a


def _png(array: np.ndarray) -> str:
    import imageio.v3 as iio

    from ..io import png_ready

    if not (array.ndim == 3 and array.dtype == np.uint8):
        array = array.astype(np.float32)  # scaled from its own range: 12-bit data in uint16 would look black
    a, _ = png_ready(array, "yxc" if array.ndim == 3 else "yx")
    buf = io.BytesIO()
    iio.imwrite(buf, a, extension=".png")
    return base64.b64encode(buf.getvalue()).decode()


def _overlay(labels: np.ndarray) -> str:
    """Instance labels as an RGBA PNG: one colour per label, half transparent, background clear."""
    import imageio.v3 as iio

    n = int(labels.max()) if labels.size else 0
    colours = np.zeros((n + 1, 4), np.uint8)
    for i in range(1, n + 1):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0)
        colours[i] = (int(r * 255), int(g * 255), int(b * 255), 140)
    buf = io.BytesIO()
    iio.imwrite(buf, colours[labels.astype(np.int64)], extension=".png")
    return base64.b64encode(buf.getvalue()).decode()


def _preview(upload: Upload, arr: np.ndarray, dims: Any, lab: np.ndarray | None, lab_dims: Any) -> dict:
    view_in = _plane(upload.array, upload.axes)
    preview = {"input_png": _png(view_in), "output_png": _png(_plane(arr, dims)), "labels_png": None,
               "n_labels": None}
    if lab is not None:
        plane = _plane(lab, lab_dims)
        preview["labels_png"] = _overlay(plane)
        preview["n_labels"] = int(np.unique(lab[lab > 0]).size)
    return preview
