"""Prediction of images larger than memory: lazy sources in, zarr / OME-Zarr out.

:func:`predict_lazy` is what :meth:`bioimgzoo.runtime.model.Model.predict`
calls for a zarr / OME-Zarr / TIFF path, a zarr or dask array, or any
``out=PATH``:

1. the image is opened lazily (:func:`bioimgzoo.io.zarr.open_image`) and
   mapped onto the model's axes without reading pixels (axes the model lacks
   fold into separate samples, as in memory);
2. a streaming pre-pass counts non-finite values (``nan_policy``) and takes
   the per-sample statistics of the preprocessing;
3. the in-memory tile plan is cut into work units (whole output chunks) run
   by the :class:`~.executor.streaming.StreamingExecutor`, or by a
   dask.distributed cluster (:mod:`.executor.distributed`);
4. outputs are written to an OME-Zarr store (:class:`~bioimgzoo.io.zarr.OmeZarrWriter`),
   keeping the input's physical pixel sizes; integer outputs as label
   images; the pyramid and the metadata come last.  Without ``out`` the
   output is stitched in memory (the input still streams).
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..descr.axes import axis_letter, parse_axes
from ..errors import InputError
from ..io.zarr import (AXIS_TYPES, LazyImage, OmeZarrWriter, check_output_store, check_pixels, is_zarr_path,
                       open_image)
from .axes import default_layout, to_model_layout
from .executor.protocol import Sample
from .engines import set_threads
from .executor.record import UnitRecord, array_digest, package_key
from .executor.streaming import StreamingExecutor
from .executor.units import default_work_unit, plan_work_units
from .progress import Progress
from .plan import Region

log = logging.getLogger("bioimgzoo")

__all__ = ["predict_lazy", "is_lazy", "LayoutSource"]

#: chunk edge of outputs per number of tiled axes
_CHUNK_EDGE = {1: 1 << 16, 2: 512, 3: 64}


def is_lazy(data: Any) -> bool:
    """Whether ``data`` is read lazily: a zarr/TIFF path, a LazyImage, a zarr or dask array."""
    if isinstance(data, LazyImage):
        return True
    if isinstance(data, (str, os.PathLike)):
        p = str(data).lower().rstrip("/")
        return is_zarr_path(p) or p.endswith((".tif", ".tiff")) or Path(data).is_dir()
    mod = type(data).__module__
    return mod.startswith(("zarr", "dask")) and hasattr(data, "shape") and hasattr(data, "dtype")


def _array_location(array: Any) -> Path | None:
    """The folder of a zarr array on a local store (what an output must not be, nor be inside), else None."""
    root = getattr(getattr(array, "store", None), "root", None)
    if not isinstance(root, (str, os.PathLike)):
        return None
    inner = str(getattr(array, "path", "") or "")
    return Path(root) / inner if inner else Path(root)


class _ArrayImage:
    """A zarr or dask array (or any sliceable array) as a lazy image."""

    def __init__(self, array: Any):
        self.array, self.shape, self.dtype = array, tuple(int(n) for n in array.shape), np.dtype(array.dtype)
        self.axes, self.scale, self.units, self.path = None, {}, {}, _array_location(array)
        chunks = getattr(array, "chunks", None)
        check_pixels(self.path or f"the {type(array).__name__}", self.shape, self.dtype,
                     chunks if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks) else None)

    def read(self, region: Sequence[Any]) -> np.ndarray:
        try:
            part = self.array[tuple(region)]
            return np.asarray(part.compute() if hasattr(part, "compute") else part)
        except InputError:
            raise
        except Exception as e:  # a zarr chunk that does not decode, a dask graph that fails
            raise InputError(f"the input array cannot be read over {[(r.start, r.stop) for r in region]} "
                             f"({type(e).__name__}: {str(e)[:200]}): its storage is damaged") from e


def _stored_chunks(image: Any) -> tuple[int, ...] | None:
    """Chunk sizes of a zarr (or dask: its largest chunk per axis) image; None for others."""
    try:
        chunks = image.array.chunks
    except Exception:  # memory-mapped or tile-read TIFFs, plain arrays: no chunks to align to
        return None
    if not isinstance(chunks, tuple) or len(chunks) != len(image.shape):
        return None
    try:
        return tuple(int(max(c)) if isinstance(c, tuple) else int(c) for c in chunks)
    except (TypeError, ValueError):
        return None


def as_image(data: Any) -> Any:
    if isinstance(data, LazyImage):
        return data
    if isinstance(data, (str, os.PathLike)):
        return open_image(data)
    return _ArrayImage(data)


class LayoutSource:
    """One sample of a lazy image, seen in the model's axis order (batch 1): an ArraySource."""

    def __init__(self, image: Any, image_ids: Sequence[str], model_ids: Sequence[str],
                 fixed: Mapping[int, int], model_shape: Sequence[int], dtype: np.dtype):
        self.image, self.image_ids, self.model_ids = image, list(image_ids), list(model_ids)
        self.fixed = dict(fixed)  # image axis -> index (folded axes and squeezed singletons)
        self.shape = tuple(model_shape)
        self.dtype = np.dtype(dtype)
        self._present = [a for a in self.image_ids if a in self.model_ids and
                         self.image_ids.index(a) not in self.fixed]

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The storage chunks of the image, in this layout (None: not chunked, or unknown)."""
        stored = _stored_chunks(self.image)
        if stored is None:
            return None
        by_axis = {a: stored[i] for i, a in enumerate(self.image_ids) if i not in self.fixed}
        return tuple(by_axis.get(a, 1) for a in self.model_ids)

    def read(self, region: Region) -> np.ndarray:
        index = []
        for i, a in enumerate(self.image_ids):
            if i in self.fixed:
                index.append(self.fixed[i])
            else:
                index.append(region[self.model_ids.index(a)])
        x = np.asarray(self.image.read(index))
        order = sorted(self._present, key=self.model_ids.index)
        x = np.transpose(x, [self._present.index(a) for a in order])
        x = x.reshape(tuple(r.stop - r.start for r in region))
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Layout:
    image_ids: list[str]
    model_ids: list[str]
    folded: list[int]  # image axes iterated as samples (C order)
    squeezed: list[int]
    sample_shape: tuple[int, ...]  # model layout, batch 1
    had_batch: bool


def _layout(image: Any, axes: Any, spec: Any) -> _Layout:
    what = f"image for input '{spec.id}'"
    ids = list(parse_axes(axes, ndim=len(image.shape), what=what)) if axes is not None else \
        list(default_layout(len(image.shape), spec.axes, what))
    # every check of the in-memory mapping, on a zero-stride stand-in of the image: no pixel is read
    dummy = np.broadcast_to(np.zeros((), image.dtype), image.shape)
    arr, folding = to_model_layout(dummy, ids, spec.axes, tensor_id=spec.id)
    model_ids = [a.id for a in spec.axes]
    folded = [ids.index(a) for a in folding.folded_axes]
    if folding.had_batch:
        folded.append(ids.index("batch"))
    squeezed = [i for i, a in enumerate(ids) if i not in folded and (a not in model_ids or
                                                                    (a == "batch" and not folding.had_batch))]
    shape = tuple(1 if a.kind == "batch" else n for a, n in zip(spec.axes, arr.shape))
    return _Layout(ids, model_ids, folded, squeezed, shape, folding.had_batch)


class _ZarrSink:
    """Writes one sample's output (model layout, batch 1) into the arrays of an output store."""

    def __init__(self, arrays: Sequence[Any], prefix: Sequence[int], perm: Sequence[int], has_batch: bool):
        self.arrays, self.prefix, self.perm, self.has_batch = list(arrays), list(prefix), list(perm), has_batch

    def allocate(self, shape: tuple[int, ...], dtype: Any) -> None:  # the arrays exist already
        pass

    def _target(self, region: Region) -> tuple:
        if self.has_batch:
            region = region[1:]
        target = [slice(i, i + 1) for i in self.prefix] + list(region)
        return tuple(target[p] for p in self.perm)

    def write(self, region: Region, data: np.ndarray) -> str:
        """Store ``data`` over ``region``; returns the :func:`array_digest` of what the store now holds there."""
        if self.has_batch:
            data = data[0]
        data = data.reshape((1,) * len(self.prefix) + data.shape)
        data = np.transpose(data, self.perm)
        target = self._target(region)
        for a in self.arrays:
            a[target] = data
        return array_digest(np.asarray(data, dtype=self.arrays[0].dtype)) if self.arrays else ""

    def stored_digest(self, region: Region) -> str | None:
        """The :func:`array_digest` of what every array holds over ``region`` (None: the arrays differ)."""
        target = self._target(region)
        digests = {array_digest(np.asarray(a[target])) for a in self.arrays}
        return digests.pop() if len(digests) == 1 else None


def predict_lazy(model: Any, data: Any, *, out: str | os.PathLike | None = None, axes: Any = None,
                 tile: Any = None, halo: Any = None, batch_size: int | None = None, pad_mode: str = "reflect",
                 nan_policy: str = "warn", progress: bool = False, work_unit: int | Mapping[str, int] | None = None,
                 ngff: str = "0.4", overwrite: bool = False, resume: bool = False, scheduler: str | None = None,
                 workers: int | None = None, threads: int | None = None, on_unit: Any = None,
                 raw_output: bool = False) -> Any:
    """Predict an image larger than memory (see the module docstring); returns the opened output.

    Returns the zarr array of level 0 of the output (a dict by output id
    for several outputs) with ``out``, else numpy arrays as
    :meth:`~bioimgzoo.runtime.model.Model.predict` returns them.

    ``raw_output=True`` writes what the network gives, before any
    postprocessing (stardist: probability and distances at the grid's
    resolution; cellpose: the 3 flow channels): the way to stream a model
    whose postprocessing needs the whole sample (an instance decoder),
    which is refused otherwise; decode the result afterwards.
    """
    model.check_streamable(raw_output=raw_output)
    outputs = list(model.network_outputs) if raw_output else list(model.outputs)
    post = [] if raw_output else list(model.postprocessing)
    spec = model.inputs[0]
    image = as_image(data)
    if out is not None:  # before any pass over the input: an output that would destroy it, or a stranger's folder
        if overwrite and resume:
            raise InputError("overwrite=True and resume=True contradict each other (--overwrite, --resume): give one")
        given = [data] if isinstance(data, (str, os.PathLike)) else []
        check_output_store(out, inputs=[image, *given], overwrite=overwrite, resume=resume)
    lay = _layout(image, axes if axes is not None else getattr(image, "axes", None), spec)
    dtype = image.dtype
    if dtype.kind == "f" and dtype.itemsize < 4:
        dtype = np.dtype(np.float64 if spec.dtype == "float64" else np.float32)
    # the in-memory executor's plan (declared sizes, or a measured receptive field): streamed == in memory
    plan = model.plan({spec.id: lay.sample_shape}, tile=tile, halo=halo)
    folded_shape = [image.shape[i] for i in lay.folded]
    samples_idx = list(itertools.product(*[range(n) for n in folded_shape]))
    network = model.network()
    unit = work_unit or default_work_unit(len(plan.image_len))
    units = plan_work_units(plan, unit, output_axes={o.id: o.axis_ids for o in outputs})
    out_dtypes = _output_dtypes(outputs, post, dict(model.dataset_statistics or {}))

    def source(k: int) -> LayoutSource:
        fixed = {i: 0 for i in lay.squeezed}
        fixed.update(dict(zip(lay.folded, samples_idx[k])))
        return LayoutSource(image, lay.image_ids, lay.model_ids, fixed, lay.sample_shape, dtype)

    # outputs: the stores (or arrays), and how a sample's output lands in them
    fold_letters = [axis_letter(lay.image_ids[i]) for i in lay.folded]
    writer = record = None
    if out is not None:
        writer, arrays, perms = _create_outputs(outputs, plan, image, lay, fold_letters, out, out_dtypes, unit=unit,
                                                ngff=ngff, overwrite=overwrite, resume=resume)
        signature = {"model": package_key(model), "input": str(getattr(image, "path", None) or "array"),
                     "shape": list(image.shape), "dtype": str(image.dtype), "axes": lay.image_ids,
                     "tile": tile, "halo": halo, "pad_mode": pad_mode, "work_unit": unit, "ngff": ngff,
                     "nan_policy": nan_policy, "raw_output": bool(raw_output)}
        record = UnitRecord(Path(out) / ".bioimgzoo", signature, resume=resume)
    else:
        arrays, perms = _memory_outputs(outputs, plan, lay, folded_shape, out_dtypes)

    def sinks(k: int) -> dict:
        return {o.id: _ZarrSink(arrays[o.id], samples_idx[k], perms[o.id], o.has_batch) for o in outputs}

    total_units = len(units) * len(samples_idx)
    with Progress(enabled=progress) as shown:
        bar = shown.task("Predicting", total=total_units, unit="units",
                         pixels_total=len(samples_idx) * sum(u.pixels for u in units))

        def advance(sample_number: int, u: Any, computed: bool) -> None:
            bar.advance(1, pixels=u.pixels)
            if on_unit is not None:
                on_unit(sample_number, u, computed)

        samples = [_sample(k, source(k), sinks(k), plan, model, nan_policy, len(samples_idx))
                   for k in range(len(samples_idx))]
        if scheduler is not None or workers is not None:
            from .executor.distributed import DistributedExecutor

            executor: Any = DistributedExecutor(model, out=out, record=record, work_unit=unit, batch_size=batch_size,
                                                pad_mode=pad_mode, scheduler=scheduler, workers=workers,
                                                threads=threads, on_unit=advance, postprocess=not raw_output)
        else:
            if str(model.device) == "cpu":
                # all cores, no spin-waiting (the reader and writer threads need CPU too); once per engine
                set_threads(model.engine, getattr(model.engine, "threads", None) or os.cpu_count() or 1)
            executor = StreamingExecutor(network, work_unit=unit, postprocessing=post, batch_size=batch_size,
                                         pad_mode=pad_mode, record=record, on_unit=advance)
        for _ in executor.run(samples):
            pass
    computed = executor.units_computed
    log.info("computed %d of %d work units (%d were done already)", computed, total_units, total_units - computed)
    if writer is None:
        result = {o.id: arrays[o.id][0] for o in outputs}
        return result[outputs[0].id] if len(outputs) == 1 else result
    return _finish_store(writer, record, outputs, out_dtypes, units, len(samples_idx), out)


def _memory_outputs(outputs: Sequence[Any], plan: Any, lay: "_Layout", folded_shape: Sequence[int],
                    out_dtypes: Mapping[str, np.dtype]) -> tuple[dict, dict]:
    """Without ``out``: each output stitched into one array in memory (the input still streams)."""
    arrays, perms = {}, {}
    for o in outputs:
        shape = tuple(folded_shape) + tuple(n for a, n in zip(o.axes, plan.out_shapes[o.id])
                                            if a.kind != "batch" or lay.had_batch)
        arrays[o.id] = [np.empty(shape, out_dtypes[o.id])]
        perms[o.id] = list(range(len(shape)))
    return arrays, perms


def _finish_store(writer: Any, record: UnitRecord, outputs: Sequence[Any], out_dtypes: Mapping[str, np.dtype],
                  units: Sequence[Any], n_samples: int, out: Any) -> Any:
    """The store's metadata once every unit is computed or verified, then the record goes; the opened output."""
    missing = [(k, u.index) for k in range(n_samples) for u in units if not record.is_done(k, u.index)]
    if missing:  # never a store that looks finished with units nobody wrote
        raise InputError(f"{len(missing)} work unit(s) of {out} were neither computed nor verified (first: unit "
                         f"{missing[0][1]} of sample {missing[0][0] + 1}); the output is incomplete (no OME-Zarr "
                         "metadata written): rerun with --resume")
    writer.finish()
    record.remove()  # only now: the store is complete and its metadata written
    opened = {o.id: writer.array(name) for o, name in zip(outputs, _names(outputs, out_dtypes)[0])}
    return opened[outputs[0].id] if len(outputs) == 1 else opened


def _sample(k: int, src: LayoutSource, sinks: dict, plan: Any, model: Any, nan_policy: str, n: int) -> Sample:
    """One sample, its non-finite values screened in a streaming pass (``nan_policy``).

    When the preprocessing needs per-sample statistics, the screening rides
    on their first pass (one read of the image less) and the sample carries
    them; if the image holds non-finite values they are dropped and the
    executor computes them again as ``nan_policy`` says.
    """
    from .executor.statistics import iter_blocks, streaming_sample_measures

    spec = model.inputs[0]
    bad = frozenset()
    stats = dict(model.dataset_statistics or {})
    if src.dtype.kind == "f":
        screen = _Screening(src, iter_blocks(src.shape, chunks=src.chunks))
        measures = {m for c in model.preprocessing for m in c.required_measures
                    if m.scope == "sample" and m.tensor_id == spec.id}
        if measures:
            got = streaming_sample_measures(measures, {spec.id: screen}, {spec.id: spec.axis_ids})
        for region in screen.unseen():  # what the statistics did not read (or all of it, without statistics)
            screen.read(region)
        n_bad, n_nan = screen.non_finite, screen.nan
        if measures and not n_bad:
            stats.update(got)
        if n_bad:
            where = f"input '{spec.id}'" + (f" of sample {k + 1}" if n > 1 else "")
            what = f"{n_bad:,} non-finite values ({n_nan:,} NaN, {n_bad - n_nan:,} inf)"
            if nan_policy == "fail":
                raise InputError(f"{where} holds {what}: clean the image, or pass nan_policy='zero' (CLI: "
                                 "--nan-policy zero) to replace them by 0, or nan_policy='warn' to go on")
            if nan_policy == "zero":
                src = _ZeroNonFinite(src)
            else:
                bad = frozenset({spec.id})
                log.warning("%s holds %s: the statistics of preprocessing skip them, but the output is not "
                            "finite where they reach", where, what)
    return Sample({spec.id: src}, sinks, plan, stats, nonfinite=bad, index=k)


class _Screening:
    """A source that counts the non-finite values of the blocks of one partition (``regions``) read through it."""

    def __init__(self, source: Any, regions: Any):
        self.source, self.shape, self.dtype = source, source.shape, source.dtype
        self.chunks = getattr(source, "chunks", None)
        self._todo = {tuple((r.start, r.stop) for r in region): region for region in regions}
        self.non_finite = self.nan = 0

    def read(self, region: Region) -> np.ndarray:
        x = np.asarray(self.source.read(region))
        key = tuple((r.start, r.stop) for r in region)
        if self._todo.pop(key, None) is not None:  # a block of the partition, seen for the first time
            finite = np.isfinite(x)
            if not finite.all():
                self.non_finite += int(finite.size - np.count_nonzero(finite))
                self.nan += int(np.count_nonzero(np.isnan(x)))
        return x

    def unseen(self) -> list[Region]:
        return list(self._todo.values())


class _ZeroNonFinite:
    def __init__(self, source: Any):
        self.source, self.shape, self.dtype = source, source.shape, source.dtype
        self.chunks = getattr(source, "chunks", None)

    def read(self, region: Region) -> np.ndarray:
        x = self.source.read(region)
        return np.where(np.isfinite(x), x, np.zeros((), x.dtype))


def _output_dtypes(outputs: Sequence[Any], post: Sequence[Any], stats: Mapping) -> dict[str, np.dtype]:
    """Each output's dtype after postprocessing (none: ``post`` empty): the chain run on one value of the declared type."""
    dtypes = {}
    for spec, chain in itertools.zip_longest(outputs, post[:len(outputs)]):
        if chain is None:
            dtypes[spec.id] = np.dtype(spec.dtype)
            continue
        probe = np.zeros((1,) * len(spec.axes), np.dtype(spec.dtype))
        try:
            d = chain(probe, stats).dtype if chain.steps else probe.dtype
        except Exception:  # statistics this probe lacks: keep the network's type
            d = probe.dtype
        dtypes[spec.id] = np.dtype(np.uint8) if d == np.bool_ else np.dtype(d)
    return dtypes


def _names(outputs: Sequence[Any], dtypes: Mapping[str, np.dtype]) -> tuple[list[str], dict[str, bool]]:
    """Store names of the outputs (image or label) and whether each is a label image."""
    is_label = {o.id: dtypes[o.id].kind in "iu" for o in outputs}
    return [o.id for o in outputs], is_label


def _create_outputs(outputs: Sequence[Any], plan: Any, image: Any, lay: _Layout, fold_letters: list[str], out: Any,
                    dtypes: Mapping[str, np.dtype], *, unit: Any, ngff: str, overwrite: bool, resume: bool):
    writer = OmeZarrWriter(out, ngff=ngff, overwrite=overwrite, resume=resume, inputs=[image])
    names, is_label = _names(outputs, dtypes)
    root_taken = False
    arrays, perms = {}, {}
    in_scale = getattr(image, "scale", {}) or {}
    in_units = getattr(image, "units", {}) or {}
    n_tiled = len(plan.image_len)
    edge = _CHUNK_EDGE.get(n_tiled, 64)
    order = {"t": 0, "c": 1, "z": 2, "y": 3, "x": 4}
    # the root image: the first intensity output, else the first output (then also written as a label)
    root_id = next((o.id for o in outputs if not is_label[o.id]), outputs[0].id)
    for o in outputs:
        ids = [a.id for a in o.axes if a.kind != "batch" or lay.had_batch]
        letters = fold_letters + [axis_letter(a) for a in ids]
        if any(ch not in AXIS_TYPES for ch in letters):
            raise InputError(f"output '{o.id}' has axes {''.join(letters)!r}: OME-Zarr holds only t, c, z, y, x; "
                             "write plain files instead (-o FOLDER)")
        shape = [image.shape[i] for i in lay.folded] + [n for a, n in zip(o.axes, plan.out_shapes[o.id])
                                                        if a.kind != "batch" or lay.had_batch]
        perm = sorted(range(len(letters)), key=lambda i: order[letters[i]])
        links = plan.out_links[o.id]
        chunks, shards, scale, units = [], [], [], {}
        for i, ch in enumerate(letters):
            aid = ids[i - len(fold_letters)] if i >= len(fold_letters) else None
            link = links.get(aid) if aid else None
            if i < len(fold_letters):
                chunks.append(1)
                shards.append(1)
                scale.append(float(in_scale.get(ch, 1.0)))
            elif link is not None and link[0] in plan.image_len:
                ia, f, _off = link
                u = int((unit.get(ia, plan.image_len[ia]) if isinstance(unit, Mapping) else unit) * f)
                u = min(u, shape[i])
                c = edge if u % edge == 0 else u
                chunks.append(c)
                shards.append(u)
                scale.append(float(in_scale.get(axis_letter(ia), 1.0)) / float(f))
            else:
                chunks.append(shape[i])
                shards.append(shape[i])
                scale.append(float(in_scale.get(ch, 1.0)) if ch != "c" else 1.0)
            if ch in in_units and ch != "c":
                units[ch] = in_units[ch]
        p_letters = "".join(letters[p] for p in perm)
        kw = dict(shape=[shape[p] for p in perm], dtype=dtypes[o.id], chunks=[chunks[p] for p in perm],
                  shards=[shards[p] for p in perm], axes=p_letters, scale=[scale[p] for p in perm], units=units)
        targets = []
        if o.id == root_id and not root_taken:
            targets.append(writer.create(o.id, **kw))
            root_taken = True
        if is_label[o.id]:
            targets.append(writer.create(o.id, label=True, **kw))
        arrays[o.id] = targets
        perms[o.id] = perm
    return writer, arrays, perms
