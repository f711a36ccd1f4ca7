"""Work units: region geometry and how a sample's output is cut into boxes of whole chunks.

Used by every executor that streams (:mod:`.streaming`, :mod:`.distributed`): a
:class:`WorkUnit` lists the tiles of the plan whose trusted output falls in its
box, the one input box it reads, and the output box it writes.  Pure geometry:
no I/O.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from ...errors import InputError
from ..plan import Region, SamplePlan

__all__ = ["WorkUnit", "default_work_unit", "plan_work_units", "unit_out_region", "overlap", "intersect", "shift",
           "union"]


def default_work_unit(n_tiled: int) -> int:
    """Input pixels per tiled axis of a work unit: 1024 (2D) / 128 (3D).

    Small units keep memory flat; tiles shared by neighbouring units are
    computed once, in one process and on a cluster alike (there the owner
    of a shared tile saves its output for the neighbour: see
    :mod:`.distributed`), so a cluster gains nothing from larger units.
    """
    return {1: 1 << 20, 2: 1024, 3: 128}.get(n_tiled, 32)


@dataclass(frozen=True)
class WorkUnit:
    """One work unit: the tiles it runs, the input box it reads, the output box it writes."""

    index: int
    tiles: tuple[int, ...]  # indices into plan.tiles
    reads: Mapping[str, Region]  # input id -> box read once (union of the tiles' windows)
    writes: Mapping[str, Region]  # output id -> box of the output (model layout) it writes
    pixels: int  # input pixels of the unit's own box (for throughput)


def plan_work_units(plan: SamplePlan, unit: int | Mapping[str, int], *,
                    output_axes: Mapping[str, Sequence[str]]) -> list[WorkUnit]:
    """Cut a sample's output into work units of ``unit`` input pixels per tiled axis (row-major order).

    ``output_axes``: the axis ids of each output (the plan keeps only shapes).
    """
    if any(w is None for t in plan.tiles for w in t.writes.values()):
        raise InputError("the model's output size depends on the data, so it cannot be streamed in work units: "
                         "predict this image in memory")
    tiled = list(plan.image_len)
    size = {a: int(unit.get(a, plan.image_len[a]) if isinstance(unit, Mapping) else unit) for a in tiled}
    for a in tiled:
        if size[a] < 1:
            raise InputError(f"work unit {size[a]} on axis '{a}' is not valid: pass at least 1 pixel")
        for out, links in plan.out_links.items():
            for _oa, (ia, f, _off) in links.items():
                if ia == a and (size[a] * f).denominator != 1:
                    raise InputError(f"work unit {size[a]} on axis '{a}' does not map onto whole pixels of output "
                                     f"'{out}' (scale {f}): pass a multiple of {f.denominator}")
    bounds = {a: list(range(0, plan.image_len[a], size[a])) + [plan.image_len[a]] for a in tiled}
    units = []
    for combo in itertools.product(*[range(len(bounds[a]) - 1) for a in tiled]):
        box = {a: (bounds[a][k], bounds[a][k + 1]) for a, k in zip(tiled, combo)}
        writes = {oid: unit_out_region(plan, oid, box, output_axes[oid]) for oid in plan.out_shapes}
        tiles = tuple(i for i, t in enumerate(plan.tiles)
                      if any(overlap(t.writes[oid].target, writes[oid]) for oid in writes))
        reads = {iid: union([plan.tiles[i].reads[iid].region for i in tiles]) for iid in plan.window_shapes}
        units.append(WorkUnit(len(units), tiles, reads, writes, math.prod(hi - lo for lo, hi in box.values())))
    return units


def unit_out_region(plan: SamplePlan, oid: str, box: Mapping[str, tuple[int, int]],
                     axis_ids: Sequence[str]) -> Region:
    full = plan.out_shapes[oid]
    links = plan.out_links[oid]
    region = []
    for aid, n in zip(axis_ids, full):
        link = links.get(aid)
        if link is None or link[0] not in box:
            region.append(slice(0, n))
            continue
        ia, f, _off = link
        lo, hi = box[ia]
        stop = n if hi >= plan.image_len[ia] else int(hi * f)
        region.append(slice(int(lo * f), stop))
    return tuple(region)


def overlap(a: Region, b: Region) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b))


def intersect(a: Region, b: Region) -> Region:
    return tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))


def shift(region: Region, origin: Sequence[int]) -> Region:
    return tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, origin))


def union(regions: Sequence[Region]) -> Region:
    return tuple(slice(min(r[i].start for r in regions), max(r[i].stop for r in regions))
                 for i in range(len(regions[0])))


