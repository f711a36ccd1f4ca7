"""Cover images: input beside output, contrast-stretched, 2:1.

Arrays of any layout are reduced to one 2D RGB panel: first batch entry,
middle time point and middle z slice; one channel is grey, two are
green/magenta, three are RGB, more show the first three.  Each channel is
stretched between its 0.5 and 99.5 percentiles.  An output without spatial
axes (class scores) is drawn as a bar chart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_cover", "to_rgb"]

PANEL = 256


def _stretch(channel: np.ndarray) -> np.ndarray:
    c = channel.astype(np.float64)
    finite = np.isfinite(c)
    if not finite.any():
        return np.zeros_like(c)
    lo, hi = np.percentile(c[finite], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(c[finite].min()), float(c[finite].max())
    if hi <= lo:
        return np.zeros_like(c)
    return np.clip((np.where(finite, c, lo) - lo) / (hi - lo), 0, 1)


def to_rgb(array: np.ndarray, axes: str) -> np.ndarray | None:
    """(H, W, 3) float image in [0, 1], or None when there are no y/x axes."""
    a = np.asarray(array)
    ax = list(axes)
    # reduce batch / time / z to one index
    for letter in "btz":
        if letter in ax:
            d = ax.index(letter)
            a = np.take(a, a.shape[d] // 2 if letter != "b" else 0, axis=d)
            ax.pop(d)
    if "y" not in ax and "x" not in ax:
        return None
    if "c" not in ax:
        a = a[None]
        ax.insert(0, "c")
    for letter in "yx":
        if letter not in ax:
            a = a[..., None]
            ax.append(letter)
    a = np.transpose(a, [ax.index("c"), ax.index("y"), ax.index("x")])
    chans = [_stretch(c) for c in a[:3]]
    if len(chans) == 1:
        return np.stack([chans[0]] * 3, axis=-1)
    if len(chans) == 2:
        g, m = chans
        return np.stack([m, g, m], axis=-1)
    return np.stack(chans, axis=-1)


def _bars(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    img = np.full((PANEL, PANEL, 3), 0.08)
    if v.size == 0:
        return img
    lo, hi = min(0.0, float(v.min())), float(v.max())
    height = (v - lo) / (hi - lo) if hi > lo else np.ones_like(v)
    width = PANEL / v.size
    best = int(np.argmax(v))
    for i, h in enumerate(height):
        x0, x1 = int(i * width + width * 0.15), max(int(i * width + width * 0.85), int(i * width + width * 0.15) + 1)
        top = PANEL - 8 - int(h * (PANEL - 24))
        color = (0.95, 0.55, 0.1) if i == best else (0.3, 0.6, 0.95)
        img[top:PANEL - 8, x0:x1] = color
    return img


def _fit(img: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resize into a PANEL x PANEL square, centred, aspect kept."""
    h, w = img.shape[:2]
    scale = PANEL / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    rows = np.minimum((np.arange(nh) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(nw) / scale).astype(int), w - 1)
    out = np.zeros((PANEL, PANEL, 3))
    y0, x0 = (PANEL - nh) // 2, (PANEL - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = img[rows][:, cols]
    return out


def make_cover(input_array: np.ndarray, input_axes: str, output_array: np.ndarray, output_axes: str,
               path: Path) -> Path:
    """Write a 512x256 PNG: input left, output right."""
    import imageio.v3 as iio

    left = to_rgb(input_array, input_axes)
    if left is None:
        left = _bars(np.asarray(input_array))
    right = to_rgb(output_array, output_axes)
    if right is None:
        b = np.asarray(output_array)
        if "b" in output_axes:
            b = np.take(b, 0, axis=output_axes.index("b"))
        right = _bars(b)
    cover = np.concatenate([_fit(left), _fit(right)], axis=1)
    iio.imwrite(path, (cover * 255).round().astype(np.uint8), extension=".png")
    return path
