"""Instance labels of a prediction stored as OME-Zarr, added to the store as an NGFF label image.

``predict --labels`` with an OME-Zarr output: the prediction streams into the
store as usual; then :func:`add_label_image` reads the foreground (and boundary)
probabilities one slice at a time -- a whole 2D plane (or 3D volume for a 3D
model), which the labelling needs at once (an object cut at a work unit's edge
would be split) -- labels it with :func:`~bioimgzoo.runtime.labels.output_to_labels`'s
rules (labels numbered on from slice to slice; ``link`` joins overlapping
objects of neighbouring z slices) and writes ``labels/<name>`` with its pyramid
(nearest) and the NGFF ``image-label`` metadata, validated.

:func:`check_labels_fit` says before any work whether one slice fits in memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from .labels import LabelChannels, link_slices, probabilities_to_instances

__all__ = ["add_label_image", "check_labels_fit", "LABEL_BYTES_PER_PIXEL", "LABEL_IMAGE_NAME"]

#: bytes per pixel of one slice while it is labelled: the probabilities read (float32, foreground and
#: boundary), the masks, the distance transform and the labels (measured ~10; doubled for the reading)
LABEL_BYTES_PER_PIXEL = 24
#: the label image's name under ``labels/``
LABEL_IMAGE_NAME = "instances"


def memory_available() -> int:
    """Bytes of physical memory of this machine (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover (not POSIX)
        return 0


def check_labels_fit(slice_shape: Sequence[int], *, memory: int | None = None) -> None:
    """Raise InputError when one slice of ``slice_shape`` cannot be labelled in half this machine's memory."""
    memory = memory_available() if memory is None else memory
    need = math.prod(int(n) for n in slice_shape) * LABEL_BYTES_PER_PIXEL
    if memory and need > memory // 2:
        size = " x ".join(str(int(n)) for n in slice_shape)
        raise InputError(f"--labels labels each whole {size} plane at once (an object cut at a tile's edge would be "
                         f"split), which needs about {need / 2**30:.1f} GB, more than half of this machine's "
                         f"{memory / 2**30:.1f} GB: nothing was run. Predict without --labels and decode the "
                         "probabilities with a tiled instance decoder, or on a machine with more memory")


def add_label_image(store: str | os.PathLike, *, output: str, channels: LabelChannels, spatial: Sequence[str],
                    threshold: float = 0.5, min_size: int = 4, link: str | None = None,
                    name: str = LABEL_IMAGE_NAME, progress: Callable[[float], None] | None = None) -> str:
    """Label the probabilities of ``output`` (the store's image) into ``labels/<name>``; returns its group path.

    ``spatial``: the axis letters labelled together (``"y", "x"`` for a 2D model); the other axes but
    the channel are labelled slice by slice.  ``link``: an axis (``"z"``) along which the objects of
    neighbouring slices that overlap are joined (see :func:`~bioimgzoo.runtime.labels.link_slices`).
    """
    from ..io.zarr import OmeZarrWriter, open_image

    store = Path(store)
    image = open_image(store)
    import zarr

    root = zarr.open_group(str(store), mode="r")
    attrs = dict(root.attrs)
    multiscale = (attrs.get("ome", attrs).get("multiscales") or [{}])[0]
    if multiscale.get("name") not in (None, output):
        raise InputError(f"{store} holds output '{multiscale.get('name')}' as its image, not '{output}': --labels "
                         "reads the first intensity output")
    axes = image.axes or ""
    space = [a for a in spatial]
    if any(a not in axes for a in space):
        raise InputError(f"{store} has axes {axes!r}, without the model's {''.join(space)}: cannot label it")
    keep = [i for i, a in enumerate(axes) if a != "c"]
    out_axes = "".join(axes[i] for i in keep)
    out_shape = [image.shape[i] for i in keep]
    chunks = [c for i, c in enumerate(image.array.chunks) if i in keep]
    shards = getattr(image.array, "shards", None)
    writer = OmeZarrWriter(store, ngff=image.ngff or "0.4", resume=True)
    target = writer.create(name, shape=out_shape, dtype=np.uint32, chunks=chunks, axes=out_axes,
                           scale=[image.scale.get(a, 1.0) for a in out_axes],
                           units={a: u for a, u in image.units.items() if a in out_axes},
                           shards=[s for i, s in enumerate(shards) if i in keep] if shards else None, label=True)
    report = progress or (lambda fraction: None)
    loop = [i for i in keep if axes[i] not in space]
    slices = list(np.ndindex(*[image.shape[i] for i in loop]))
    link_at = [axes[i] for i in loop].index(link) if link is not None and link in [axes[i] for i in loop] else None
    count = 0
    previous = None
    previous_key = None
    for k, index in enumerate(slices):
        at = dict(zip(loop, index))
        region = [at.get(i, slice(None)) for i in range(len(axes))]
        fg, bd = _planes(image, region, axes.find("c"), channels)
        part = probabilities_to_instances(fg, bd, threshold=threshold, min_size=min_size,
                                          progress=lambda f, k=k: report(0.9 * (k + f) / len(slices)))
        del fg, bd
        found = part > 0
        part[found] += count
        if found.any():
            count = int(part.max())
        if link_at is not None:
            # the previous slice along the linked axis, the other loop axes the same: join overlapping objects
            key = tuple(v for j, v in enumerate(index) if j != link_at)
            if previous is not None and previous_key == key:
                link_slices(previous, part)
            previous, previous_key = part, key
        out_region = tuple(at.get(i, slice(None)) for i in keep)
        target[out_region] = part.astype(np.uint32)
    report(0.9)
    writer.finish()
    report(1.0)
    return f"labels/{name}"


def _planes(image: Any, region: list, c: int, channels: LabelChannels) -> tuple[np.ndarray, np.ndarray | None]:
    """The foreground (and boundary) plane of one slice, as float32."""
    if c < 0 or channels.foreground is None:
        return np.asarray(image.read(region), np.float32), None
    region = list(region)
    region[c] = channels.foreground
    fg = np.asarray(image.read(region), np.float32)
    bd = None
    if channels.boundary is not None:
        region[c] = channels.boundary
        bd = np.asarray(image.read(region), np.float32)
    return fg, bd
