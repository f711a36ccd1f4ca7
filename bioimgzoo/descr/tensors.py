"""Plain views of a description's tensors and axes: :class:`TensorSpec`, read once from bioimageio.spec.

bioimageio.spec's classes are rich but slow to walk on a hot path; the
runtime reads them once, at load time, into these small frozen records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Mapping

from .axes import AxisInfo
from .sizes import AxisSizes, SizeRef

_KIND = {
    "BatchAxis": "batch", "ChannelAxis": "channel", "IndexInputAxis": "index", "IndexOutputAxis": "index",
    "SpaceInputAxis": "space", "SpaceOutputAxis": "space", "SpaceOutputAxisWithHalo": "space",
    "TimeInputAxis": "time", "TimeOutputAxis": "time", "TimeOutputAxisWithHalo": "time",
}


@dataclass(frozen=True)
class TensorSpec:
    id: str
    axes: tuple[AxisInfo, ...]
    #: per axis: AxisSizes (fixed or min/step), SizeRef, or None (batch / data dependent)
    sizes: Mapping[str, Any]
    scale: Mapping[str, float]
    halo: Mapping[str, int]
    dtype: str
    description: str = ""
    channel_names: tuple[str, ...] = ()
    preprocessing: tuple = field(default=(), repr=False)
    postprocessing: tuple = field(default=(), repr=False)

    @property
    def axis_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.axes)

    @property
    def has_batch(self) -> bool:
        return bool(self.axes) and self.axes[0].kind == "batch"

    def batch_limit(self) -> int | None:
        """Fixed batch size (1) or None when any batch size works."""
        for a in self.axes:
            if a.kind == "batch":
                return a.size
        return 1


def _axis_size(axis: Any) -> Any:
    size = getattr(axis, "size", None)
    kind = _KIND.get(type(axis).__name__, "space")
    if kind == "channel":
        return AxisSizes(len(axis.channel_names))
    if size is None:
        return None
    if isinstance(size, int):
        return AxisSizes(int(size))
    name = type(size).__name__
    if name == "ParameterizedSize":
        return AxisSizes(int(size.min), int(size.step))
    if name == "SizeReference":
        return SizeRef(str(size.tensor_id), str(size.axis_id), int(size.offset))
    return None  # DataDependentSize


def _tensor_spec(t: Any, *, is_input: bool) -> TensorSpec:
    axes, sizes, scale, halo = [], {}, {}, {}
    for a in t.axes:
        kind = _KIND.get(type(a).__name__, "space")
        aid = str(a.id)
        sz = _axis_size(a)
        sizes[aid] = sz
        fixed = sz.min if isinstance(sz, AxisSizes) and sz.step == 0 else None
        if kind == "batch":
            fixed = a.size  # None or 1
        axes.append(AxisInfo(aid, kind, fixed))
        scale[aid] = float(getattr(a, "scale", 1.0) or 1.0)
        h = getattr(a, "halo", 0) or 0
        if h:
            halo[aid] = int(h)
    channel_names = ()
    for a in t.axes:
        if type(a).__name__ == "ChannelAxis":
            channel_names = tuple(str(c) for c in a.channel_names)
    dtype = str(getattr(getattr(t, "data", None), "type", "float32"))
    return TensorSpec(
        id=str(t.id), axes=tuple(axes), sizes=sizes, scale=scale, halo=halo, dtype=dtype,
        description=str(getattr(t, "description", "") or ""), channel_names=channel_names,
        preprocessing=tuple(getattr(t, "preprocessing", ()) or ()) if is_input else (),
        postprocessing=tuple(getattr(t, "postprocessing", ()) or ()) if not is_input else (),
    )


def tensor_specs(descr: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of a 0.5 model description, in declaration order.

    An output whose fixed sizes equal an input's fixed sizes on every space
    and time axis (a fixed-size export: 64x64 in, 64x64 out) follows that
    input with scale 1: its axes read as references to the input's, so a
    larger image is tiled as for any same-size output.
    """
    inputs = [_tensor_spec(t, is_input=True) for t in descr.inputs]
    return inputs, [_follow_fixed_input(_tensor_spec(t, is_input=False), inputs) for t in descr.outputs]


def _fixed(sz: Any) -> int | None:
    return sz.min if isinstance(sz, AxisSizes) and sz.step == 0 else None


def _follow_fixed_input(out: TensorSpec, inputs: list[TensorSpec]) -> TensorSpec:
    spatial = [a.id for a in out.axes if a.kind in ("space", "time")]
    fixed = [a for a in spatial if _fixed(out.sizes.get(a)) is not None]
    if not fixed or any(not isinstance(out.sizes.get(a), SizeRef) for a in spatial if a not in fixed):
        return out
    for spec in inputs:
        if all(_fixed(spec.sizes.get(a)) == _fixed(out.sizes[a]) for a in fixed):
            sizes = {**out.sizes, **{a: SizeRef(spec.id, a, 0) for a in fixed}}
            scale = {**out.scale, **{a: spec.scale.get(a, 1.0) for a in fixed}}  # pixel for pixel
            return replace(out, sizes=sizes, scale=scale)
    return out


def output_scale(spec_in: TensorSpec, spec_out: TensorSpec, out_axis: str) -> tuple[str, str, Fraction, int] | None:
    """For an output axis referencing an input axis: (input id, input axis, factor, offset)."""
    ref = spec_out.sizes.get(out_axis)
    if not isinstance(ref, SizeRef) or ref.tensor_id != spec_in.id:
        return None
    factor = Fraction(spec_in.scale.get(ref.axis_id, 1.0) / spec_out.scale.get(out_axis, 1.0)).limit_denominator(64)
    return ref.tensor_id, ref.axis_id, factor, ref.offset
