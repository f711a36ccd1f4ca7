"""Tiny PNG plots drawn with numpy + Pillow (matplotlib is not a dependency).

Enough for a loss curve and a side-by-side image overview; not a plotting
library.  Everything is written through :func:`bioimgzoo._files.atomic_path`.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from .._files import atomic_path

__all__ = ["line_plot_png", "image_row_png", "image_grid_png", "to_uint8", "label_colors"]

_BG = (255, 255, 255)
_FG = (40, 40, 40)
_GRID = (225, 225, 225)


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _panel(draw, box, series, *, title: str, xlabel: str, ylabel: str, log_y: bool) -> None:
    x0, y0, x1, y1 = box
    font = _font(13)
    small = _font(11)
    left, bottom, top, right = 62, 38, 26, 12
    px0, py0, px1, py1 = x0 + left, y0 + top, x1 - right, y1 - bottom
    draw.text((x0 + left, y0 + 4), title, fill=_FG, font=font)
    pts = [(np.asarray(xs, float), np.asarray(ys, float)) for _, xs, ys, _ in series]
    ally = np.concatenate([ys[np.isfinite(ys)] for _, ys in pts]) if pts else np.array([])
    allx = np.concatenate([xs for xs, _ in pts]) if pts else np.array([])
    if log_y:
        ally = ally[ally > 0]
    if ally.size == 0 or allx.size == 0:
        draw.rectangle((px0, py0, px1, py1), outline=_FG)
        draw.text((px0 + 10, py0 + 10), "no data", fill=_FG, font=font)
        return

    def ty(v):
        return np.log10(np.maximum(v, 1e-12)) if log_y else v

    ylo, yhi = float(ty(ally).min()), float(ty(ally).max())
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = ylo - pad, yhi + pad
    xlo, xhi = float(allx.min()), float(allx.max())
    if xhi <= xlo:
        xhi = xlo + 1

    def sx(v):
        return px0 + (np.asarray(v, float) - xlo) / (xhi - xlo) * (px1 - px0)

    def sy(v):
        return py1 - (ty(np.asarray(v, float)) - ylo) / (yhi - ylo) * (py1 - py0)

    for t in _nice_ticks(ylo, yhi):
        yy = float(py1 - (t - ylo) / (yhi - ylo) * (py1 - py0))
        draw.line((px0, yy, px1, yy), fill=_GRID)
        label = _fmt(10 ** t) if log_y else _fmt(t)
        draw.text((x0 + 4, yy - 7), label, fill=_FG, font=small)
    for t in _nice_ticks(xlo, xhi):
        xx = float(sx(t))
        draw.line((xx, py0, xx, py1), fill=_GRID)
        draw.text((xx - 10, py1 + 4), _fmt(t), fill=_FG, font=small)
    draw.rectangle((px0, py0, px1, py1), outline=_FG)
    draw.text(((px0 + px1) / 2 - 15, y1 - 18), xlabel, fill=_FG, font=small)
    draw.text((x0 + 4, y0 + 8), "", fill=_FG, font=small)
    legend_y = py0 + 6
    for (label, xs, ys, color), (fx, fy) in zip(series, pts):
        ok = np.isfinite(fy) & ((fy > 0) if log_y else True)
        if ok.sum() >= 2:
            coords = list(zip(sx(fx[ok]).tolist(), sy(fy[ok]).tolist()))
            draw.line(coords, fill=color, width=2)
        elif ok.sum() == 1:
            cx, cy = float(sx(fx[ok])[0]), float(sy(fy[ok])[0])
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=color)
        if label:
            draw.line((px1 - 150, legend_y + 7, px1 - 130, legend_y + 7), fill=color, width=3)
            draw.text((px1 - 125, legend_y), label, fill=_FG, font=small)
            legend_y += 16
    if ylabel:
        draw.text((px0 + 4, py1 - 16), ylabel, fill=(120, 120, 120), font=small)


def line_plot_png(path: str | os.PathLike, panels: Sequence[dict], *, width: int = 900,
                  panel_height: int = 300) -> None:
    """Write stacked line-plot panels to a PNG.

    Each panel is a dict with ``series`` (list of ``(label, xs, ys, rgb)``),
    ``title``, and optionally ``xlabel``, ``ylabel``, ``log_y``.
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, panel_height * max(len(panels), 1)), _BG)
    draw = ImageDraw.Draw(img)
    for i, p in enumerate(panels):
        _panel(draw, (0, i * panel_height, width, (i + 1) * panel_height), p["series"], title=p.get("title", ""),
               xlabel=p.get("xlabel", ""), ylabel=p.get("ylabel", ""), log_y=bool(p.get("log_y", False)))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def to_uint8(image: np.ndarray, *, percentiles: tuple[float, float] = (0.5, 99.8)) -> np.ndarray:
    """Contrast-stretch a 2D image to uint8 between two percentiles."""
    a = np.asarray(image, np.float32)
    lo, hi = np.percentile(a, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def label_colors(labels: np.ndarray, *, seed: int = 1) -> np.ndarray:
    """RGB uint8 image with a random colour per label (background black)."""
    lab = np.asarray(labels).astype(np.int64)
    n = int(lab.max()) + 1 if lab.size else 1
    rng = np.random.default_rng(seed)
    lut = rng.integers(60, 256, size=(n, 3)).astype(np.uint8)
    lut[0] = 0
    return lut[lab]


def _tile(im: np.ndarray, size: int):
    from PIL import Image

    a = np.asarray(im)
    if a.ndim == 2:
        a = a if a.dtype == np.uint8 else to_uint8(a)
        a = np.repeat(a[..., None], 3, axis=2)
    pil = Image.fromarray(a)
    w = max(1, round(pil.width * size / pil.height))
    return pil.resize((w, size), Image.NEAREST)


def image_grid_png(path: str | os.PathLike, rows: Sequence[Sequence[np.ndarray]],
                   titles: Sequence[Sequence[str]], *, size: int = 512) -> None:
    """Write rows of images (each resized to ``size`` pixels high) with a title above each.

    Each image is 2D (grey, stretched with :func:`to_uint8` unless uint8) or
    (y, x, 3) uint8 RGB.
    """
    from PIL import Image, ImageDraw

    head, gap = 28, 8
    tiled = [[_tile(im, size) for im in row] for row in rows]
    width = max(sum(t.width for t in row) + gap * (len(row) + 1) for row in tiled)
    height = len(tiled) * (size + head + gap)
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    font = _font(16)
    for r, (row, row_titles) in enumerate(zip(tiled, titles)):
        y = r * (size + head + gap)
        x = gap
        for tile, title in zip(row, row_titles):
            canvas.paste(tile, (x, y + head))
            draw.text((x, y + 5), title, fill=_FG, font=font)
            x += tile.width + gap
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def image_row_png(path: str | os.PathLike, images: Sequence[np.ndarray], titles: Sequence[str], *,
                  size: int = 512) -> None:
    """Write images side by side (each resized to ``size`` pixels high) with titles above."""
    image_grid_png(path, [images], [titles], size=size)
