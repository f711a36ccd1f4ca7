"""The tile plan a measured receptive field calls for (or one window, or a refusal naming why)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

from ...descr.sizes import AxisSizes, valid_size_at_least
from ...descr.tensors import TensorSpec
from .cache import cache_key, cached_measure, describe, read_cached
from .measure import FieldMeasure

log = logging.getLogger("bioimgzoo")

__all__ = ["fitted_plan", "tiling_note"]


# ----------------------------------------------------------------------------- plan
def fitted_plan(model: Any, shapes: Mapping[str, tuple[int, ...]], *, tile: Any, plan: Any,
                outputs: Sequence[TensorSpec], plan_sample: Callable) -> Any:
    """The plan for one sample, with tiles overlapped by the measured receptive field.

    ``plan`` is the plan by the declared sizes; it is returned unchanged
    when the sample fits one window, the package declares a halo on a
    tiled axis or no tiled axis of fixed size (trusted), or the model has
    several inputs.  ``plan`` may instead be the
    :class:`~bioimgzoo.errors.InputError` the declared sizes gave for the
    caller's ``tile``: raised again unless the network takes that size.
    """
    from ..plan import grid_period, output_links, pow2_divisor

    failed = isinstance(plan, Exception)
    if len(model.inputs) != 1 or (not failed and not plan.tiled):
        if failed:
            raise plan
        return plan
    primary = model.inputs[0]
    links = {out.id: output_links(primary, out) for out in outputs}
    tileable = [a.id for a in primary.axes if a.kind in ("space", "time") and isinstance(primary.sizes.get(a.id),
                                                                                         AxisSizes)]
    tiled = tileable if failed else plan.tiled
    if not any(primary.sizes[a].step == 0 for a in tiled):
        # sizes min + k*step: the author chose the windows and the halo together; tiles keep to them
        if failed:
            raise plan
        return plan
    if any(out.halo.get(oa, 0) for out in outputs for oa, (ia, _f, _o) in links[out.id].items() if ia in tiled):
        if failed:
            raise plan
        return plan  # a declared halo: the package's word on its network
    measure = cached_measure(model, tileable, links, outputs)
    if not measure.equivariant:
        return _one_window(model, shapes, tile=tile, plan=plan, outputs=outputs, plan_sample=plan_sample,
                           measure=measure, tileable=tileable)
    if failed and not all(measure.accepted.get(a) and AxisSizes(*measure.accepted[a]).is_valid(int(w))
                          for a in tileable
                          if (w := (tile.get(a) if isinstance(tile, Mapping) else tile)) is not None):
        raise plan
    radius = {a: r for a, r in measure.radius.items() if a in tileable}
    sizes = dict(primary.sizes)
    if (tile is None and measure.faster) or failed:
        sizes.update({a: AxisSizes(*acc) for a, acc in measure.accepted.items() if acc and a in sizes})
    wider = replace(primary, sizes=sizes)
    halo = {}
    for a in tileable:
        r = radius.get(a, 0)
        if r < 0:  # global context: no overlap makes tiles exact; overlap as far as windows allow
            r = 1 << 30
        sz = sizes[a]
        longest = (valid_size_at_least(sz, shapes[primary.id][primary.axis_ids.index(a)]) if sz.step
                   else sz.min)
        if tile is not None:
            want = tile.get(a) if isinstance(tile, Mapping) else tile
            longest = int(want) if want is not None else longest
        # a halo near half the window leaves a stride of a few pixels: beyond that, overlap by a quarter
        halo[a] = r if 2 * r < longest else longest // 4
        if halo[a] < r:
            log.warning("the receptive field of %r on axis '%s' (%s) is wider than its windows allow: tiles "
                        "overlap by %d pixels and seams may remain; pass a larger tile= if the network takes it",
                        model.name, a, "global" if radius.get(a, 0) < 0 else f"{r} px", halo[a])
    # the network's period (a U-Net pooling by 4 gives the same output only for shifts of 4): windows start at
    # multiples of the step of the sizes it accepts, however short the stride its radius leaves
    period = {a: AxisSizes(*measure.accepted[a]).step for a in tileable if measure.accepted.get(a)}
    for a in tileable:  # windows of one size: their own alignment, or a divisor of it the stride leaves
        if not period.get(a) and not sizes[a].step:
            period[a] = grid_period(sizes[a].min, halo[a], pow2_divisor(sizes[a].min, 64))
    new = plan_sample([wider], outputs, shapes, tile=tile, halo=halo, align={a: p for a, p in period.items() if p})
    window = "x".join(str(new.window_shapes[primary.id][primary.axis_ids.index(a)]) for a in tileable)
    if new.tiled:
        log.info("%r declares no halo: tiles of %s overlap by the measured receptive field (%s) "
                 "(strict_sizes=True keeps to the declared sizes and halo)", model.name, window,
                 ", ".join(f"{a}={h}" for a, h in halo.items()))
    else:
        log.info("%r declares no halo and %s windows: the network takes larger ones, so the image runs as one "
                 "%s window (strict_sizes=True keeps to the declared sizes)", model.name,
                 "x".join(str(primary.sizes[a].min) for a in tileable), window)
    return new


def _one_window(model: Any, shapes: Mapping[str, tuple[int, ...]], *, tile: Any, plan: Any,
                outputs: Sequence[TensorSpec], plan_sample: Callable, measure: FieldMeasure,
                tileable: Sequence[str]) -> Any:
    """A network that is not translation-equivariant: the whole image as one window, or a refusal naming why."""
    from ...errors import InputError

    primary = model.inputs[0]
    shape = shapes[primary.id]
    length = {a: shape[primary.axis_ids.index(a)] for a in tileable}
    sizes = dict(primary.sizes)
    fits = True
    for a in tileable:
        acc = measure.accepted.get(a)
        if acc is not None:
            sizes[a] = AxisSizes(*acc)
        elif primary.sizes[a].min < length[a]:
            fits = False
    asked = {a: (tile.get(a) if isinstance(tile, Mapping) else tile) for a in tileable} if tile is not None else {}
    if any(w is not None and int(w) < length[a] for a, w in asked.items()):
        fits = False
    why = (f"the network of {model.name!r} is not translation-equivariant: {measure.reason}. Tiles of it cannot "
           "equal its whole-image prediction")
    if fits:
        whole = {a: valid_size_at_least(sizes[a], length[a]) for a in tileable}
        try:
            new = plan_sample([replace(primary, sizes=sizes)], outputs, shapes, tile=whole, halo=0)
        except InputError as e:  # too large for one window (memory), or a size it refuses
            raise InputError(f"{why}, and the image does not fit in one window ({e}): crop the image, or pass "
                             "strict_sizes=True (CLI --strict-sizes) to tile by the declared sizes, accepting "
                             "seams") from e
        if not new.tiled:
            log.info("%s: the image runs as one %s window", why, "x".join(map(str, whole.values())))
            return new
    raise InputError(f"{why}: predict the image in one window (tile= at least its size, when the network takes "
                     "it), crop it, or pass strict_sizes=True (CLI --strict-sizes) to tile by the declared sizes, "
                     "accepting seams")


def tiling_note(package: Any) -> str | None:
    """One line for ``info``: how tiles of this package overlap when it declares no halo (None: it declares one,
    or nothing tiles).  Reads the cache only: nothing is downloaded or run."""
    from ...descr.tensors import tensor_specs
    from ...descr.weights import runnable_formats
    from ..plan import output_links

    ins, outs = tensor_specs(package.descr)
    if len(ins) != 1:
        return None
    primary = ins[0]
    tileable = [a.id for a in primary.axes if a.kind in ("space", "time") and isinstance(primary.sizes.get(a.id),
                                                                                         AxisSizes)]
    links = {out.id: output_links(primary, out) for out in outs}
    if not tileable or not any(links.values()):
        return None
    if any(out.halo.get(oa, 0) for out in outs for oa in links[out.id]) \
            or not any(primary.sizes[a].step == 0 for a in tileable):
        return None
    found = None
    for fmt in runnable_formats(package.descr):
        found = read_cached(cache_key(package, fmt, primary, tileable, fetch=False), primary, tileable)
        if found is not None:
            break
    how = (f"measured receptive field {describe(found)}" if found is not None
           else "the network's receptive field, measured once at the first tiled prediction and cached")
    return (f"the package declares no halo: tiles of larger images overlap by {how} "
            "(predict --strict-sizes keeps to the declared sizes and halo)")
