"""The processing ops that need a whole sample: ``stardist_postprocessing``, ``cellpose_flow_dynamics``, ``custom``.

bioimageio.spec 0.5 defines three postprocessing ops beyond the arithmetic
ones of :mod:`.processing`.  They are whole-sample operations: non-maximum
suppression and flow tracking look across the image, so they run on the
*stitched* output of a sample (:meth:`bioimgzoo.runtime.model.Model.predict`
applies postprocessing only there), never on a tile.

* ``stardist_postprocessing`` delegates to the ``stardist`` package's own
  decoders (``non_maximum_suppression`` + ``polygons_to_label`` in 2D,
  ``non_maximum_suppression_3d`` + ``polyhedron_to_label`` +
  ``relabel_sequential`` in 3D) exactly as bioimageio.core 0.11 calls them
  (``_ops_stardist.py``).  Optional extra: ``pip install bioimgzoo[stardist]``.
* ``cellpose_flow_dynamics`` delegates to ``cellpose.dynamics.compute_masks``
  and ``cellpose.utils.fill_holes_and_remove_small_masks`` as core does
  (``_ops_cellpose.py``).  Optional extra: ``pip install bioimgzoo[cellpose]``.
* ``config.stardist`` (what StarDist's ``export_bioimageio`` writes, and the
  zoo's StarDist models, which declare no postprocessing op): the network
  output (probability + distances, upsampled to the input's size by
  ``export_TF``) decoded to labels as StarDist's own ``predict_instances``
  does (:func:`stardist_instances`, with the thresholds the package
  declares), on the stitched whole sample.
* ``custom`` runs the Python file the package ships: ``op = callable(**kwargs)``
  once, then ``op(array)`` per sample (core's ``CustomProcessing``).  It runs
  only through the loader :mod:`bioimgzoo.trust` hands out after the trust
  check (``trust_code=True``); without one it is refused.

The step classes follow the protocol of :mod:`.ops`'s steps
(``from_descr(descr, ctx)``, ``apply(x, stat, owned=, final_dtype=)``) and
register themselves with the same decorator, :func:`.ops.register_op`.

Layouts: the network of a StarDist or Cellpose model outputs ``n_rays + 1``
or 3 channels, while the description declares the *labels* (one channel), as
core reads it (``digest_spec.get_axes_infos``).  :func:`network_output_spec`
gives the tensor the network really produces, which is what tiles are
stitched into.  Labels come back in the described axis order with one
channel (core transposes StarDist's result to ``batch, spatial..., channel``;
the values are the same).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ...descr.axes import AxisInfo
from ...descr.sizes import AxisSizes, SizeRef
from ...descr.tensors import TensorSpec
from ...errors import InputError, UntrustedCodeError, WeightsError
from .ops import register_op

__all__ = ["StardistPostprocessing", "CellposeFlowDynamics", "CustomProcessing", "EXTRAS", "network_output_spec",
           "extra_missing_message", "StardistConfig", "stardist_config", "stardist_instances"]

#: optional extra of bioimgzoo -> the package its op delegates to
EXTRAS = {"stardist": "stardist", "cellpose": "cellpose"}


def extra_missing_message(op: str, extra: str, where: str) -> str:
    """The one message for an op whose decoder package is not installed."""
    return (f"{where}: the model's postprocessing {op!r} needs the {EXTRAS[extra]!r} package, which is not "
            f"installed: pip install 'bioimgzoo[{extra}]' (or pip install {EXTRAS[extra]}), then load the model "
            "again")


def _require(extra: str, op: str, where: str) -> None:
    if importlib.util.find_spec(EXTRAS[extra]) is None:
        raise WeightsError(extra_missing_message(op, extra, where))


def _spatial_layout(x_axes: tuple[str, ...], spatial: tuple[str, ...]) -> tuple[list[int], bool]:
    """Axis indices putting ``x`` in core's order (batch, spatial..., channel), and whether it has a batch."""
    has_batch = "batch" in x_axes
    order = ([x_axes.index("batch")] if has_batch else []) + [x_axes.index(a) for a in spatial]
    order.append(x_axes.index("channel"))
    return order, has_batch


def _back_to_layout(labels: np.ndarray, order: list[int], has_batch: bool) -> np.ndarray:
    """``labels`` of shape (batch, spatial..., 1) laid out like the processed tensor again."""
    if not has_batch:
        labels = labels[0]
    return np.transpose(labels, np.argsort(order))


@dataclass
class _WholeSampleStep:
    """What every step of :mod:`.ops` has; these need the whole sample."""

    op: str
    where: str
    axes: tuple[str, ...] = ()
    measures: tuple = ()
    fusable: ClassVar[bool] = False
    #: postprocessing that looks across the sample: never apply per tile
    whole_sample: ClassVar[bool] = True
    op_id: ClassVar[str] = ""  # set by @register_op
    descr_class: ClassVar[str] = ""  # set by @register_op


# ----------------------------------------------------------------------- stardist
@register_op("stardist_postprocessing", "StardistPostprocessingDescr")
@dataclass
class StardistPostprocessing(_WholeSampleStep):
    """Star-convex polygons (2D) or polyhedra (3D) with non-maximum suppression, by ``stardist``."""

    grid: tuple[int, ...] = (1, 1)
    prob_threshold: float = 0.5
    nms_threshold: float = 0.4
    b: Any = 2
    n_rays: int = 32
    anisotropy: tuple[float, ...] | None = None  # 3D only
    overlap_label: int | None = None  # 3D only

    @property
    def spatial(self) -> tuple[str, ...]:
        return ("y", "x") if len(self.grid) == 2 else ("z", "y", "x")

    @classmethod
    def from_descr(cls, descr: Any, ctx: Any) -> "StardistPostprocessing":
        from bioimageio.spec.model import v0_5

        kw = descr.kwargs
        if not isinstance(kw, (v0_5.StardistPostprocessingKwargs2D, v0_5.StardistPostprocessingKwargs3D)):
            raise ctx.bad(f"kwargs {kw!r} are not supported: give the 2D (grid, b, ...) or 3D (grid, b, "
                          "anisotropy, ...) kwargs of bioimageio.spec 0.5")
        three_d = isinstance(kw, v0_5.StardistPostprocessingKwargs3D)
        spatial = ("z", "y", "x") if three_d else ("y", "x")
        allowed = set(spatial) | {"batch", "channel"}
        if "channel" not in ctx.axes or not set(spatial) <= set(ctx.axes) or not set(ctx.axes) <= allowed:
            raise ctx.bad(f"needs a tensor with a channel axis (probability, then {kw.n_rays} distances) and "
                          f"the spatial axes {', '.join(spatial)} (batch allowed), but tensor {ctx.tensor_id!r} "
                          f"has axes ({', '.join(ctx.axes)}); fix the output's axes in the description")
        _require("stardist", cls.op_id, ctx.where)
        b = kw.b if isinstance(kw.b, int) else tuple(tuple(int(v) for v in p) for p in kw.b)
        return cls(ctx.op, ctx.where, ctx.axes, grid=tuple(int(g) for g in kw.grid),
                   prob_threshold=float(kw.prob_threshold), nms_threshold=float(kw.nms_threshold), b=b,
                   n_rays=int(kw.n_rays), anisotropy=tuple(float(a) for a in kw.anisotropy) if three_d else None,
                   overlap_label=kw.overlap_label if three_d else None)

    def apply(self, x: np.ndarray, stat: Any, *, owned: bool, final_dtype: Any) -> np.ndarray:
        order, has_batch = _spatial_layout(self.axes, self.spatial)
        t = np.transpose(x, order)
        if not has_batch:
            t = t[None]
        if t.shape[-1] != self.n_rays + 1:
            raise InputError(f"{self.where}: the network gave {t.shape[-1]} channels, but n_rays {self.n_rays} "
                             f"needs {self.n_rays + 1} (probability + one distance per ray); the description "
                             "does not fit its weights")
        shape = tuple(int(n) * g for n, g in zip(t.shape[1:-1], self.grid))
        labels = [self._decode(t[i, ..., 0], t[i, ..., 1:], shape) for i in range(t.shape[0])]
        return _back_to_layout(np.stack(labels)[..., None], order, has_batch)

    def _decode(self, prob: np.ndarray, dist: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        # the very calls (and arguments) of bioimageio.core 0.11's StardistPostprocessing2D/3D
        if len(self.grid) == 2:
            from stardist import non_maximum_suppression, polygons_to_label

            points, probi, disti = non_maximum_suppression(dist, prob, grid=self.grid, prob_thresh=self.prob_threshold,
                                                           nms_thresh=self.nms_threshold, b=self.b)
            return polygons_to_label(disti, points, prob=probi, shape=shape)
        from stardist import Rays_GoldenSpiral, non_maximum_suppression_3d, polyhedron_to_label
        from stardist.matching import relabel_sequential

        rays = Rays_GoldenSpiral(self.n_rays, anisotropy=self.anisotropy)
        points, probi, disti = non_maximum_suppression_3d(dist, prob, rays, grid=self.grid,
                                                          prob_thresh=self.prob_threshold,
                                                          nms_thresh=self.nms_threshold, b=self.b)
        labels = polyhedron_to_label(disti, points, rays=rays, prob=probi, shape=shape,
                                     overlap_label=self.overlap_label)
        labels, _, _ = relabel_sequential(labels)
        return labels

    def network_axes(self, spec: TensorSpec) -> TensorSpec:
        """The tensor the network gives: ``n_rays + 1`` channels, spatial axes at 1/grid."""
        spec = _with_channels(spec, self.n_rays + 1)
        if all(g == 1 for g in self.grid):
            return spec
        grid = dict(zip(self.spatial, self.grid))
        sizes, scale, halo = dict(spec.sizes), dict(spec.scale), dict(spec.halo)
        axes = []
        for a in spec.axes:
            g = grid.get(a.id, 1)
            sz = sizes.get(a.id)
            if g > 1:
                if isinstance(sz, SizeRef):
                    sizes[a.id] = SizeRef(sz.tensor_id, sz.axis_id, sz.offset // g)
                elif isinstance(sz, AxisSizes):
                    sizes[a.id] = AxisSizes(sz.min // g, sz.step // g)
                scale[a.id] = scale.get(a.id, 1.0) * g  # each network pixel covers g label pixels
                if a.id in halo:
                    halo[a.id] = halo[a.id] // g
                a = AxisInfo(a.id, a.kind, None if a.size is None else a.size // g)
            axes.append(a)
        return dataclasses.replace(spec, axes=tuple(axes), sizes=sizes, scale=scale, halo=halo)


# ------------------------------------------------------------- config.stardist (StarDist's own exports)
@dataclass(frozen=True)
class StardistConfig:
    """What a package's ``config.stardist`` says about its network, and the thresholds it declares."""

    grid: tuple[int, ...]
    n_rays: int
    prob_threshold: float
    nms_threshold: float
    #: the output is at the image's size (``export_TF(upsample_grid=True)``, what the Fiji plugin needs), not
    #: at 1/grid
    upsampled: bool = True

    @property
    def spatial(self) -> tuple[str, ...]:
        return ("y", "x") if len(self.grid) == 2 else ("z", "y", "x")

    def labels(self, x: np.ndarray, axes: tuple[str, ...], *, where: str) -> np.ndarray:
        """Labels of a whole output laid out as ``axes``, with a channel of size 1 (the layout kept)."""
        _require("stardist", "config.stardist", where)
        if len(self.grid) != 2:
            raise InputError(f"{where}: labels of 3D StarDist exports are not decoded yet (its output is given "
                             "as is): decode it with stardist's non_maximum_suppression_3d")
        order, has_batch = _spatial_layout(axes, self.spatial)
        t = np.transpose(x, order)
        if not has_batch:
            t = t[None]
        if t.shape[-1] != self.n_rays + 1:
            raise InputError(f"{where}: the network gave {t.shape[-1]} channels, but config.stardist's n_rays "
                             f"{self.n_rays} needs {self.n_rays + 1}; the description does not fit its weights")
        labels = [stardist_instances(s[..., 0], s[..., 1:], grid=self.grid, prob_threshold=self.prob_threshold,
                                     nms_threshold=self.nms_threshold, upsampled=self.upsampled) for s in t]
        return _back_to_layout(np.stack(labels)[..., None], order, has_batch)


def stardist_config(raw: Any) -> StardistConfig | None:
    """The :class:`StardistConfig` of a description (its raw mapping), or None when it has no ``config.stardist``."""
    cfg = raw.get("config") if isinstance(raw, dict) else None
    sd = cfg.get("stardist") if isinstance(cfg, dict) else None
    if not isinstance(sd, dict):
        return None
    net = sd.get("config") if isinstance(sd.get("config"), dict) else {}
    thresholds = sd.get("thresholds") if isinstance(sd.get("thresholds"), dict) else {}
    try:
        n_dim = int(net.get("n_dim", 2))
        grid = tuple(int(g) for g in (net.get("grid") or (1,) * n_dim))
        return StardistConfig(grid, int(net["n_rays"]), float(thresholds.get("prob", 0.5)),
                              float(thresholds.get("nms", 0.4)))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"config.stardist is incomplete ({e!r}): it needs config.n_rays (and grid, thresholds "
                         "prob and nms) as StarDist's export_bioimageio writes them") from None


def stardist_instances(prob: np.ndarray, dist: np.ndarray, *, grid: tuple[int, int], prob_threshold: float,
                       nms_threshold: float, border: int = 2, upsampled: bool = True) -> np.ndarray:
    """2D StarDist labels from a probability map and distances, as ``StarDist2D.predict_instances`` makes them.

    ``prob`` (Y, X) and ``dist`` (Y, X, n_rays) are either at the network's
    grid resolution (``upsampled=False``: the image is ``grid`` times larger)
    or upsampled to the image's size the way ``export_TF`` does (probability by a transposed convolution that
    leaves it only at one pixel of each grid cell, distances repeated):
    upsampled maps are reduced to one value per grid cell (the cell's
    non-zero probability and the distances there), which is exact for
    windows aligned to the grid.  Then predict_instances' sparse path:
    distances clamped at 1e-3, candidates above ``prob_threshold`` away
    from a ``border`` of grid cells, ``non_maximum_suppression_sparse`` and
    ``polygons_to_label`` on the image's shape.
    """
    from stardist import polygons_to_label
    from stardist.nms import non_maximum_suppression_sparse

    prob = np.asarray(prob, np.float32)
    dist = np.asarray(dist, np.float32)
    shape = tuple(int(n) * (1 if upsampled else g) for n, g in zip(prob.shape, grid))
    if upsampled and any(g > 1 for g in grid):
        prob, dist = _per_grid_cell(prob, dist, grid)
    dist = np.maximum(1e-3, dist)
    keep = prob > prob_threshold
    if border:
        inner = np.zeros_like(keep)
        inner[tuple(slice(border, -border) for _ in keep.shape)] = True
        keep &= inner
    points = np.stack(np.nonzero(keep), axis=1) * np.asarray(grid).reshape(1, 2)
    inside = np.all(points < np.asarray(shape).reshape(1, 2), axis=1)
    points, probs, dists = points[inside], prob[keep][inside], dist[keep][inside]
    points, probs, dists, _ = non_maximum_suppression_sparse(dists, probs, points, nms_thresh=nms_threshold)
    return polygons_to_label(dists, points, prob=probs, shape=shape).astype(np.int32)


def _per_grid_cell(prob: np.ndarray, dist: np.ndarray, grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Full-size maps to one value per grid cell: where the probability is largest in the cell."""
    gy, gx = grid
    h, w = prob.shape
    hc, wc = -(-h // gy), -(-w // gx)
    p = np.zeros((hc * gy, wc * gx), prob.dtype)
    p[:h, :w] = prob
    d = np.zeros((hc * gy, wc * gx, dist.shape[-1]), dist.dtype)
    d[:h, :w] = dist
    cells = p.reshape(hc, gy, wc, gx).transpose(0, 2, 1, 3).reshape(hc, wc, gy * gx)
    best = np.argmax(cells, axis=-1)
    dy, dx = np.divmod(best, gx)
    rows = np.arange(hc)[:, None] * gy + dy
    cols = np.arange(wc)[None, :] * gx + dx
    return p[rows, cols], d[rows, cols]


# ----------------------------------------------------------------------- cellpose
@register_op("cellpose_flow_dynamics", "CellposeFlowDynamicsDescr")
@dataclass
class CellposeFlowDynamics(_WholeSampleStep):
    """Cellpose's flows (y, x) and cell probability to instance labels, by ``cellpose``."""

    cellprob_threshold: float = 0.0
    flow_threshold: float = 0.4
    do_3D: bool = False
    min_size: int = 15
    output_dtype: str = "uint16"

    @classmethod
    def from_descr(cls, descr: Any, ctx: Any) -> "CellposeFlowDynamics":
        from bioimageio.spec.model import v0_5

        kw = descr.kwargs
        if not isinstance(kw, v0_5.CellposeFlowDynamicsKwargs):
            raise ctx.bad(f"kwargs {kw!r} are not supported: give those of bioimageio.spec 0.5 "
                          "(cellprob_threshold, flow_threshold, do_3D, ...)")
        if "channel" not in ctx.axes:
            raise ctx.bad(f"needs a channel axis holding flow_y, flow_x and cellprob, but tensor {ctx.tensor_id!r} "
                          f"has axes ({', '.join(ctx.axes)}); fix the output's axes in the description")
        _require("cellpose", cls.op_id, ctx.where)
        return cls(ctx.op, ctx.where, ctx.axes, cellprob_threshold=float(kw.cellprob_threshold),
                   flow_threshold=float(kw.flow_threshold), do_3D=bool(kw.do_3D), min_size=int(kw.min_size),
                   output_dtype=str(kw.output_dtype))

    def apply(self, x: np.ndarray, stat: Any, *, owned: bool, final_dtype: Any) -> np.ndarray:
        from cellpose.dynamics import compute_masks
        from cellpose.utils import fill_holes_and_remove_small_masks

        c = self.axes.index("channel")
        has_batch = "batch" in self.axes
        # core's layout: batch, channel, then the other axes in their own order
        order = ([self.axes.index("batch")] if has_batch else []) + [c] + \
            [i for i, a in enumerate(self.axes) if a not in ("batch", "channel")]
        t = np.transpose(x, order)
        if not has_batch:
            t = t[None]
        if t.shape[1] != 3:
            raise InputError(f"{self.where}: the network gave {t.shape[1]} channels, but cellpose flow dynamics "
                             "needs 3 (flow_y, flow_x, cellprob); the description does not fit its weights")
        masks = []
        for sample in t:  # core: one call per batch entry, on (channel, spatial...)
            *flows, cellprob = sample
            mask = compute_masks(np.stack(flows, axis=0), cellprob, cellprob_threshold=self.cellprob_threshold,
                                 flow_threshold=self.flow_threshold, do_3D=self.do_3D)
            mask = fill_holes_and_remove_small_masks(mask, min_size=self.min_size)
            masks.append(mask[None].astype(np.dtype(self.output_dtype)))
        out = np.stack(masks, axis=0)
        if not has_batch:
            out = out[0]
        return np.transpose(out, np.argsort(order))

    def network_axes(self, spec: TensorSpec) -> TensorSpec:
        return _with_channels(spec, 3)


# ------------------------------------------------------------------------- custom
@register_op("custom", "CustomProcessingDescr")
@dataclass
class CustomProcessing(_WholeSampleStep):
    """A callable from a Python file the package ships (only after the trust check)."""

    target: str = ""
    fn: Callable[[np.ndarray], Any] | None = None

    @classmethod
    def from_descr(cls, descr: Any, ctx: Any) -> "CustomProcessing":
        target = f"{descr.source}:{descr.callable}"
        load = getattr(ctx, "load_code", None)
        if load is None:
            raise UntrustedCodeError(
                f"{ctx.where} runs the package's Python file {target}; only a loaded model runs it "
                "(bioimgzoo.load(..., trust_code=True), CLI --trust-code), never compile_processing alone")
        factory = load(descr)
        kwargs = dict(descr.kwargs or {})
        try:
            fn = factory(**kwargs)  # core: once, at construction
        except Exception as e:
            raise WeightsError(f"{ctx.where}: {descr.callable}(**{kwargs}) from {descr.source} failed: "
                               f"{(str(e).strip() or type(e).__name__).splitlines()[0][:300]}") from e
        if not callable(fn):
            raise WeightsError(f"{ctx.where}: {descr.callable}(**{kwargs}) from {descr.source} returned a "
                               f"{type(fn).__name__}, not a callable; the package's custom op is broken")
        return cls(ctx.op, ctx.where, ctx.axes, target=target, fn=fn)

    def apply(self, x: np.ndarray, stat: Any, *, owned: bool, final_dtype: Any) -> np.ndarray:
        try:
            y = self.fn(x)  # core: custom_callable(tensor.to_numpy()), once per sample
        except Exception as e:
            raise InputError(f"{self.where}: the package's custom op {self.target} failed on data of shape "
                             f"{x.shape}: {(str(e).strip() or type(e).__name__).splitlines()[0][:300]}") from e
        y = np.asarray(y)
        if y.shape != x.shape:
            raise InputError(f"{self.where}: the package's custom op {self.target} returned shape {y.shape} for "
                             f"input shape {x.shape}; a custom op may not change the shape (as in bioimageio.core)")
        return y

    def network_axes(self, spec: TensorSpec) -> TensorSpec:
        return spec




def _with_channels(spec: TensorSpec, n: int) -> TensorSpec:
    sizes = dict(spec.sizes)
    axes = []
    for a in spec.axes:
        if a.kind == "channel":
            sizes[a.id] = AxisSizes(n)
            a = AxisInfo(a.id, a.kind, n)
        axes.append(a)
    return dataclasses.replace(spec, axes=tuple(axes), sizes=sizes, channel_names=())


def network_output_spec(spec: TensorSpec) -> TensorSpec:
    """The output the network produces before ``spec``'s postprocessing (what tiles are stitched into).

    As bioimageio.core reads it: the first ``cellpose_flow_dynamics`` (3
    channels) or ``stardist_postprocessing`` (``n_rays + 1`` channels, and 1/grid
    resolution) in the postprocessing sets it; other outputs are as declared.
    """
    if "channel" not in spec.axis_ids:
        return spec
    for descr in spec.postprocessing:
        op = str(getattr(descr, "id", ""))
        if op == CellposeFlowDynamics.op_id:
            return _with_channels(spec, 3)
        if op == StardistPostprocessing.op_id:
            kw = descr.kwargs
            step = StardistPostprocessing(op, "", spec.axis_ids, grid=tuple(int(g) for g in kw.grid),
                                          n_rays=int(kw.n_rays))
            return step.network_axes(spec)
    return spec
