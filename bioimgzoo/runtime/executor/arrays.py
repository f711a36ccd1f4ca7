"""In-memory sources and sinks: numpy arrays behind the :mod:`executor protocol <.protocol>`."""

from __future__ import annotations

import numpy as np

from ..plan import Region

__all__ = ["NumpySource", "NumpySink"]


class NumpySource:
    """An :class:`~.protocol.ArraySource` over an array in memory: reads are views, never copies."""

    def __init__(self, array: np.ndarray):
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, region: Region) -> np.ndarray:
        return self.array[region]


class NumpySink:
    """An :class:`~.protocol.ArraySink` that stitches an output in memory; the result is :attr:`array`.

    The buffer is made at the first write, not at ``allocate``: when that
    write covers the whole output (one window, nothing cropped) the window's
    own array is kept instead, with no buffer and no copy.
    """

    def __init__(self) -> None:
        self.array: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._shape, self._dtype = tuple(shape), np.dtype(dtype)
        self.array = None

    def write(self, region: Region, data: np.ndarray) -> None:
        if self.array is None:
            if self._shape is None:
                raise RuntimeError("NumpySink.write before allocate")
            # a contiguous window that is the whole output: keep it (a crop is copied, so the
            # result stays compact and does not pin the network's padded batch output)
            if data.shape == self._shape and data.dtype == self._dtype and data.flags.c_contiguous:
                self.array = data
                return
            self.array = np.empty(self._shape, self._dtype)
        self.array[region] = data
