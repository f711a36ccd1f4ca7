"""Arrays as small PNG images for the HTML report (numpy and zlib only)."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

__all__ = ["to_2d", "png_bytes", "data_uri", "MAX_SIDE"]

#: images are shrunk (by striding) to at most this many pixels per side: a report stays small enough to mail
MAX_SIDE = 512


def to_2d(a: np.ndarray) -> np.ndarray:
    """One 2D plane of ``a``: the first index of every axis but the last two (squeezed first)."""
    a = np.asarray(a)
    if a.ndim > 2:
        a = a.reshape([n for n in a.shape if n != 1] or [1]) if a.size else a
    while a.ndim > 2:
        a = a[0]
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim == 0:
        a = a.reshape(1, 1)
    step = max(1, int(np.ceil(max(a.shape) / MAX_SIDE)))
    return a[::step, ::step]


def _scaled(a: np.ndarray, *, symmetric: bool = False) -> np.ndarray:
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = (float(a[finite].min()), float(a[finite].max()))
    if symmetric:
        m = max(abs(lo), abs(hi))
        lo, hi = -m, m
    span = hi - lo if hi > lo else 1.0
    out = np.clip((np.where(finite, a, lo) - lo) / span * 255.0, 0, 255)
    return out.astype(np.uint8)


def png_bytes(a: np.ndarray, *, symmetric: bool = False) -> bytes:
    """An 8-bit greyscale PNG of ``a`` (reduced to 2D, scaled min..max; ``symmetric``: -m..m around grey)."""
    img = _scaled(to_2d(a), symmetric=symmetric)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
