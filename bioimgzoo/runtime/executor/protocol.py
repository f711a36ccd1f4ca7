"""The executor protocol: what an executor takes, what it calls, what it gives back.

See the package docstring (:mod:`bioimgzoo.runtime.executor`) for how the
pieces fit together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ...descr.tensors import TensorSpec
from ..engines import Engine
from ..plan import Region, SamplePlan
from ..processing import Chain, Measure

__all__ = ["ArraySource", "ArraySink", "Network", "Sample", "Executor", "whole"]


class ArraySource(Protocol):
    """One input of one sample, in the model's axis order (batch 1): read a box at a time.

    ``read`` gets regions inside ``shape`` (every slice has a start and a
    stop) and returns an array of exactly that box; it may be a view, which
    the executor never writes to.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def read(self, region: Region) -> np.ndarray: ...


class ArraySink(Protocol):
    """One output of one sample: allocated once, then written a box at a time.

    The executor calls ``allocate(shape, dtype)`` once, before the first
    ``write`` (the dtype is the network's, known from its first window),
    then ``write(region, data)`` with ``data`` of exactly the region's
    shape.  Regions never overlap and together cover ``shape``; ``data``
    may be a view of the network's batch output, valid for keeping but not
    for writing to.  A sink on disk that a resumed run may skip returns
    from ``write`` the digest of what it stored and offers
    ``stored_digest(region)`` (see :class:`~.record.UnitRecord`).
    """

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> None: ...

    def write(self, region: Region, data: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class Network:
    """What an executor runs: the engine, the tensors it takes and gives, the inputs' preprocessing.

    ``preprocessing[i]`` belongs to ``inputs[i]``; ``batch_limit`` is the
    most samples one engine call may hold (1 for a fixed batch axis).
    """

    engine: Engine
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    preprocessing: Sequence[Chain]
    batch_limit: int


@dataclass(eq=False)
class Sample:
    """One sample to predict: sources in, sinks out, its plan, and the statistics known so far.

    Attributes
    ----------
    inputs : mapping of input id to ArraySource
    outputs : mapping of output id to ArraySink
    plan : SamplePlan
        From :func:`bioimgzoo.runtime.plan.plan_sample` for the inputs' shapes.
    stats : dict
        Statistics the processing needs: the caller's (per-dataset ones);
        the executor adds the per-sample ones of the preprocessing, computed
        on the whole raw inputs, before any window is cut.
    nonfinite : frozenset of str
        Inputs that keep NaN or inf values: their statistics skip them.
    index : int
        The sample's number in the run (0, 1, ...): what a record of finished work
        units is keyed by, and what progress callbacks name.
    context : any
        The caller's, untouched and never read by an executor (e.g. which image and part the sample is).
    """

    inputs: Mapping[str, ArraySource]
    outputs: Mapping[str, ArraySink]
    plan: SamplePlan
    stats: dict[Measure, Any] = field(default_factory=dict)
    nonfinite: frozenset[str] = frozenset()
    index: int = 0
    context: Any = None


class Executor(Protocol):
    """Runs samples through a :class:`Network`, window by window, into their sinks.

    ``run`` consumes ``samples`` lazily and yields each sample, in the order
    given, once every output element of it is written (its ``stats`` then
    include the per-sample statistics of the preprocessing).
    """

    def run(self, samples: Iterable[Sample]) -> Iterator[Sample]: ...


def whole(shape: Sequence[int]) -> Region:
    """The region covering all of ``shape``."""
    return tuple(slice(0, n) for n in shape)
