"""Valid sizes of an axis, as a description declares them: fixed, ``min + k * step``, or a reference.

Pure arithmetic on integers, shared by the runtime's tile plan, the exporter's
probe, validation and training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AxisSizes", "SizeRef", "valid_size_at_least", "valid_size_at_most"]


@dataclass(frozen=True)
class AxisSizes:
    """The sizes a model accepts along one input axis: ``min + k * step`` (step 0: fixed)."""

    min: int
    step: int = 0

    def is_valid(self, size: int) -> bool:
        if self.step == 0:
            return size == self.min
        return size >= self.min and (size - self.min) % self.step == 0


def valid_size_at_least(sizes: AxisSizes, n: int) -> int:
    """Smallest valid size >= ``n`` (the fixed size when the axis is fixed)."""
    if sizes.step == 0 or n <= sizes.min:
        return sizes.min
    return sizes.min + math.ceil((n - sizes.min) / sizes.step) * sizes.step


def valid_size_at_most(sizes: AxisSizes, n: int) -> int:
    """Largest valid size <= ``n``, or ``min`` when ``n`` is below it."""
    if sizes.step == 0 or n <= sizes.min:
        return sizes.min
    return sizes.min + ((n - sizes.min) // sizes.step) * sizes.step


@dataclass(frozen=True)
class SizeRef:
    """``size = ref_size * ref_scale / scale + offset`` (bioimageio.spec's SizeReference)."""

    tensor_id: str
    axis_id: str
    offset: int = 0
