"""A loaded model: one engine, many predictions.

:meth:`Model.load` opens the package, picks the weights, fetches only that
weights file and builds the engine once.  :meth:`Model.predict` and
:meth:`Model.iter_predict` then run any number of images:

1. each image is mapped onto the model's axes (:mod:`.axes`); axes the
   model lacks (a z stack through a 2D model) become separate samples;
2. each sample is planned (:func:`.plan.plan_sample`: windows, halo,
   padding, where each window's output goes; one plan per input shape);
3. an executor (:mod:`.executor`) computes the per-sample statistics of
   preprocessing over the *whole* sample, on the raw input (as
   bioimageio.core does), cuts and preprocesses the windows, runs them
   through the engine in batches (windows of equal shape, from one image or
   many) and stitches each window's trusted part into the sample's output;
4. postprocessing runs here on the whole stitched output, and the samples
   of an image are unfolded back into the image's layout.

Nothing reloads between images, and results stream out in input order.

Hostile or odd inputs end in one :class:`~bioimgzoo.errors.InputError`
naming the argument (or a :class:`~bioimgzoo.errors.LimitExceededError` for
a description declaring absurd sizes), never in numpy's ValueError or
MemoryError: options are checked before any work, images are cast to
float32 before statistics (float16 sums overflow; integer images keep their type, their
statistics are float64), non-finite values are
counted once per image (``nan_policy``), and no window or output buffer
larger than :data:`.plan.MAX_WINDOW_ELEMENTS` / this machine's memory is
allocated.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from ..descr.axes import parse_axes
from ..descr.tensors import TensorSpec, output_scale, tensor_specs
from ..descr.weights import TENSORFLOW, choose_weights, runnable_formats
from ..errors import InputError
from ..package import Package, open_package
from .. import trust
from . import engines as _engines
from . import processing
from .processing import whole_sample
from .processing.whole_sample import network_output_spec
from .axes import Folding, from_model_layout, output_axes_ids, to_model_layout
from .channels import with_channels
from .checks import (NAN_POLICIES, as_array, check_choice, check_declared_sizes, check_dtype, check_options,
                     image_label, is_xarray, memory_error, memory_guard, screen_nonfinite, warn_if_padded)
from .devices import resolve_device
from .executor import InMemoryExecutor, Network, NumpySink, NumpySource, Sample
from .executor.memory import MAX_BATCH
from .plan import SamplePlan, plan_sample

log = logging.getLogger("bioimgzoo")

__all__ = ["Model", "predict_test_inputs"]



#: :meth:`Model._streamed`'s answer for data that is predicted in memory
_IN_MEMORY = object()


@dataclass
class _ImageJob:
    """One image of a predict call: how it was folded into samples, and the finished ones."""

    index: int
    foldings: dict[str, Folding]
    n_samples: int
    done: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    was_xarray: bool = False
    single: bool = True  # the caller passed a bare array (not a dict)


class Model:
    """A zoo model ready to predict.  Create with :func:`bioimgzoo.load`."""

    def __init__(self, package: Package, engine: _engines.Engine, *, weights_format: str, device: str,
                 trust_code: bool = False):
        self.package = package
        self.descr = package.descr
        self.engine = engine
        self.weights_format = weights_format
        self.device = device
        #: keep to the declared window sizes and halo (else tiles of a package declaring no halo overlap by
        #: the network's measured receptive field: :mod:`.receptive_field`)
        self.strict_sizes = False
        self.inputs, self.outputs = tensor_specs(self.descr)
        ref_axes = {t.id: t.axis_ids for t in self.inputs + self.outputs}
        #: the compiled preprocessing, one :class:`~.processing.Chain` per input (what executors apply per window)
        self.preprocessing = tuple(processing.compile_processing(t.preprocessing, tensor_id=t.id,
                                                                 tensor_axes=t.axis_ids, reference_axes=ref_axes)
                                   for t in self.inputs)
        # a custom op runs the package's file: only through trust's loader, which checks trust_code
        load_code = functools.partial(trust.load_custom_op, package=package, trust_code=trust_code, where=self.name)
        #: the compiled postprocessing, one Chain per output (run on each stitched whole sample: :meth:`postprocess`)
        self.postprocessing = tuple(processing.compile_processing(t.postprocessing, tensor_id=t.id,
                                                                  tensor_axes=t.axis_ids, reference_axes=ref_axes,
                                                                  load_code=load_code)
                                    for t in self.outputs)
        #: what the network gives before postprocessing (stardist/cellpose: more channels than declared);
        #: tiles are stitched into these, and postprocessing runs once on each stitched whole sample
        self.network_outputs = tuple(network_output_spec(t) for t in self.outputs)
        measures = {m for c in self.preprocessing + self.postprocessing for m in c.required_measures}
        self._dataset_measures = {m for m in measures if m.scope == "dataset"}
        self._post_sample = {m for c in self.postprocessing for m in c.required_measures if m.scope == "sample"}
        #: StarDist's own exports (config.stardist, no postprocessing op): decoded to labels with labels=True
        self.stardist = _stardist_of(package, self.inputs, self.outputs)
        #: per-dataset statistics fixed by set_dataset_statistics (else computed per predict call)
        self._dataset_stats: dict | None = None
        #: the most samples one engine call may hold (1 for a fixed batch axis)
        self.batch_limit = min((t.batch_limit() or MAX_BATCH) for t in self.inputs) if self.inputs else 1
        check_declared_sizes(self.inputs, self.outputs, self.name)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, source: Any, *, weights: str | None = None, device: str | None = None,
             trust_code: bool = False, isolated: bool = False, strict_sizes: bool = False,
             wheels: Any = None, **hub_options: Any) -> "Model":
        if wheels is not None and not isolated:
            raise InputError("wheels=DIR (CLI: --wheels DIR) names the wheel folder an isolated environment installs "
                             "from: pass it together with isolated=True (CLI: --isolated)")
        package = source if isinstance(source, Package) else open_package(source, **hub_options)
        if isolated and weights is None:
            weights = "pytorch_state_dict"  # the only format whose code needs the package's dependencies
        fmt = choose_weights(package.descr, weights)
        if weights is None:
            avail = runnable_formats(package.descr)
            log.info("using %s weights (available: %s; choose with weights=)", fmt, ", ".join(avail))
        dev = resolve_device(device, "onnx" if fmt in TENSORFLOW else fmt)
        if isolated:  # the network runs in a virtual environment with the package's own dependencies
            from .isolated import create_isolated_engine

            engine = create_isolated_engine(package, fmt, device=dev, trust_code=trust_code, wheels=wheels)
        elif fmt in TENSORFLOW:  # converted to ONNX once (cached), else TensorFlow itself in a worker
            from .tf_weights import create_tensorflow_engine

            for ref in trust.code_refs(package.descr, weights_format=fmt):  # custom ops, before any work
                trust.check_trusted(ref, trust_code=trust_code, what=package.name)
            engine = create_tensorflow_engine(package, fmt, device=dev, n_outputs=len(package.descr.outputs),
                                              predict_test=predict_test_inputs)
        else:
            engine = _engines.create_engine(package, fmt, device=dev, trust_code=trust_code,
                                            n_outputs=len(package.descr.outputs))
        model = cls(package, engine, weights_format=fmt, device=dev, trust_code=trust_code)
        model.strict_sizes = bool(strict_sizes)
        return model

    @property
    def name(self) -> str:
        return self.package.name

    def __repr__(self) -> str:
        return f"<Model {self.name!r} weights={self.weights_format} device={self.device}>"

    # ------------------------------------------------------- the execution interface
    # What executors (in memory, streaming, dask, the server) need of a model, and nothing else.
    def network(self) -> Network:
        """What an executor runs: the engine, the tensors it takes and gives, the inputs' preprocessing.

        Built per call, so a swapped :attr:`engine` (a public attribute: the server's
        batching wrapper, a test's fake) is the one used.  Its outputs are
        :attr:`network_outputs`: what the network gives before postprocessing.
        """
        return Network(self.engine, tuple(self.inputs), self.network_outputs, self.preprocessing, self.batch_limit)

    @property
    def dataset_statistics(self) -> dict | None:
        """The per-dataset statistics fixed by :meth:`set_dataset_statistics` (None: computed per predict call)."""
        return self._dataset_stats

    def whole_sample_steps(self) -> tuple[str, ...]:
        """Postprocessing ops that look across a whole sample (instance decoders, custom ops): never run per tile."""
        return tuple(dict.fromkeys(st for c in self.postprocessing if c.whole_sample for st in c.steps))

    def check_streamable(self, *, raw_output: bool = False) -> None:
        """Refuse, with one message, what prediction work unit by work unit cannot do for this model.

        ``raw_output=True``: the network's raw output is streamed, so postprocessing that needs the
        whole sample (``raw_output`` exists for it) is not run and not in the way.
        """
        if len(self.inputs) != 1:
            raise InputError(f"this model has {len(self.inputs)} inputs: streaming prediction takes models with one "
                             "input; predict in memory with a dict of arrays")
        whole = [str(c.tensor_id) for c in self.postprocessing if c.whole_sample]
        if whole and not raw_output:
            raise InputError(f"this model's postprocessing of output '{whole[0]}' ({', '.join(self.whole_sample_steps())}) "
                             "decodes the whole sample at once (instances spanning work units would be cut), so it is "
                             "never run work unit by work unit: predict the image in memory (model.predict(array)), or "
                             "stream the network's raw output with raw_output=True (CLI: --raw-output) and decode that "
                             "afterwards")
        if self._post_sample and not raw_output:
            raise InputError("this model's postprocessing needs statistics over the whole output (e.g. an instance "
                             "decoder or a per-image normalisation of the output), which a streamed image cannot "
                             "give: predict the image in memory, or crop it")
        if self._dataset_measures and self._dataset_stats is None:
            raise InputError("this model needs per-dataset statistics: compute them first with "
                             "model.set_dataset_statistics(images) (a representative sample that fits in memory)")

    def output_axes(self, output_id: str | None = None, *, input_axes: str | None = None) -> tuple[str, ...]:
        """Axis ids of what :meth:`predict` returns for an output (image without batch axis by default)."""
        spec = self._output_spec(output_id)
        had_batch = input_axes is not None and "batch" in parse_axes(input_axes)
        return output_axes_ids(Folding((), (), had_batch), spec.axes)

    def _output_spec(self, output_id: str | None) -> TensorSpec:
        if output_id is None:
            return self.outputs[0]
        for t in self.outputs:
            if t.id == output_id:
                return t
        raise InputError(f"the model has no output {output_id!r}; outputs: {', '.join(t.id for t in self.outputs)}")

    # --------------------------------------------------------------- statistics
    def set_dataset_statistics(self, images: Iterable[Any] | None, *, axes: Any = None,
                               nan_policy: str = "warn") -> None:
        """Fix the per-dataset statistics the model's processing needs, computed from ``images``.

        Without this, each :meth:`predict` call computes them over all of
        its own images before predicting any.  ``None`` returns to that.
        ``nan_policy`` treats non-finite values as :meth:`predict` does.
        """
        if images is None:
            self._dataset_stats = None
            return
        check_choice("nan_policy", nan_policy, NAN_POLICIES)
        self._dataset_stats = memory_guard(lambda: self._compute_dataset_statistics(
            images, axes, nan_policy=nan_policy, report=True, labelled=True))

    def _compute_dataset_statistics(self, images: Iterable[Any], axes: Any, *, nan_policy: str = "warn",
                                    report: bool = False, labelled: bool = True,
                                    names: Any = None) -> dict:
        if not self._dataset_measures:
            return {}
        inputs_only = {m for m in self._dataset_measures if m.tensor_id in {t.id for t in self.inputs}}
        if inputs_only != self._dataset_measures:
            raise InputError("this model's postprocessing needs per-dataset statistics of its outputs, which "
                             "bioimgzoo does not compute yet: predict one image at a time")
        acc = processing.DatasetStatistics(self._dataset_measures, {t.id: t.axis_ids for t in self.inputs})
        for index, image in enumerate(images):
            label = image_label(names, index) if labelled else None
            job_inputs, _ = self._map_inputs(image, axes, label=label)
            job_inputs, bad = screen_nonfinite(job_inputs, nan_policy, label, report=report)
            n = next(iter(job_inputs.values())).shape[0] if self.inputs[0].has_batch else 1
            for i in range(n):
                sample = self._sample_slice(job_inputs, i)
                acc.update(processing.nan_for_nonfinite(sample, bad), ignore_nan=bool(bad))
        return acc.finalize()

    # --------------------------------------------------------------- prediction
    def predict(self, data: Any, *, axes: Any = None, tile: int | Mapping[str, int] | None = None,
                halo: int | Mapping[str, int] | None = None, batch_size: int | None = None,
                pad_mode: str = "reflect", nan_policy: str = "warn", progress: bool = False,
                channels: Any = None, labels: bool = False, out: Any = None, **out_options: Any) -> Any:
        """Predict one image (array, DataArray, or dict by input id) or a list of them.

        Parameters
        ----------
        data : ndarray, xarray.DataArray, dict or list
            One image for a single-input model, a dict ``{input_id: image}``,
            or a list of either (then a list is returned).
        axes : str or dict, optional
            Layout of the image(s), e.g. ``"yx"``, ``"cyx"``, ``"tczyx"``;
            a dict by input id for several inputs.  Default: the dims of a
            DataArray, or guessed from the number of dimensions.
        tile : int or dict, optional
            Window size per tiled axis (``{"y": 512, "x": 512}``; an int is
            used for every tiled axis).  Default: the whole image when it
            fits a sensible size, else the largest valid size near 1024 (2D)
            or 128 (3D) pixels.  A tile larger than the image is lowered to
            the smallest valid size that holds the whole image.
        halo : int or dict, optional
            Input pixels discarded at inner window edges (at least 0);
            default from the model's declared output halo.
        batch_size : int, optional
            Windows per engine call, at least 1 (default: fits ~1M voxels;
            1 when the model's batch size is fixed).
        pad_mode : str
            How windows reaching past the image are filled: a numpy.pad
            mode of :data:`.checks.PAD_MODES` (``reflect``, ``symmetric``, ``edge``,
            ``constant``, ...).
        nan_policy : {"warn", "fail", "zero"}
            What to do with NaN and ±inf values in an image; they are
            counted once per image and input (one cheap pass).  ``"warn"``
            (default): log a warning naming how many there are and in which
            input, compute the preprocessing statistics over the *finite*
            values only (so a few bad pixels do not turn the whole output
            into NaN) and pass the values on unchanged: the output is
            non-finite only where they reach.  ``"fail"``: raise
            :class:`~bioimgzoo.errors.InputError`.  ``"zero"``: replace them
            by 0 before anything else (statistics included), so the output
            is finite.
        progress : bool
            Show a progress bar on stderr: tiles done of tiles planned, tiles/s
            and time left (for ``out=``/lazy inputs: work units and MP/s).
        channels : int, sequence of int or dict, optional
            Channels of the image to use, counted from 0 (``[1]``, ``[0, 2]``;
            a dict by input id for several inputs), e.g. one channel of a
            3-channel image for a 1-channel model.  Needs the image's layout
            (``axes=`` or a DataArray's dims).
        labels : bool
            Instance labels instead of the network's output, for a StarDist
            package (``config.stardist``: StarDist's ``export_bioimageio`` and
            the zoo's StarDist models): decoded by the ``stardist`` package as
            ``predict_instances`` does, with the thresholds the package
            declares, on each stitched whole image (never per tile).  The
            output's channel axis is dropped; labels are int32.
        out : str or Path, optional
            Write the prediction to this OME-Zarr store, work unit by work
            unit, and return the opened zarr array(s).  A zarr / OME-Zarr /
            TIFF path or a zarr or dask array as ``data`` is streamed too
            (see :func:`bioimgzoo.runtime.outofcore.predict_lazy`, which
            takes ``out_options``: ``work_unit``, ``ngff``, ``overwrite``,
            ``resume``, ``scheduler``, ``workers``, ``threads``,
            ``raw_output``).


        Returns
        -------
        ndarray, xarray.DataArray or dict
            One array for a single-output model, else a dict by output id.
            Layout: the model output's axes (see :meth:`output_axes`), with
            the batch axis dropped unless the image had one, and folded
            image axes (e.g. ``z`` through a 2D model) leading.
        """
        check_options(tile=tile, halo=halo, batch_size=batch_size, pad_mode=pad_mode, nan_policy=nan_policy,
                       axes=axes)
        if labels:
            self._check_labels()
        # an image on disk (zarr, OME-Zarr, TIFF path; zarr/dask array) or out=PATH: streamed, never loaded whole
        streamed = self._streamed(data, out=out, out_options=out_options, labels=labels, axes=axes, tile=tile,
                                  halo=halo, batch_size=batch_size, pad_mode=pad_mode, nan_policy=nan_policy,
                                  progress=progress)
        if streamed is not _IN_MEMORY:
            return streamed
        from .progress import Progress

        with Progress(enabled=bool(progress)) as shown:
            tiles = shown.task("Predicting", unit="tiles")
            options = dict(axes=axes, tile=tile, halo=halo, batch_size=batch_size, pad_mode=pad_mode,
                           nan_policy=nan_policy, on_window=tiles.advance, on_plan=tiles.add, names=None,
                           labels=labels)
            if isinstance(data, (list, tuple)):
                return list(self._iter_predict(with_channels(data, channels, axes=axes, labelled=True),
                                               labelled=True, **options))
            # one image: messages need not say which
            return next(iter(self._iter_predict(with_channels([data], channels, axes=axes, labelled=False),
                                                labelled=False, **options)))

    def _streamed(self, data: Any, *, out: Any, out_options: Mapping[str, Any], labels: bool,
                  **options: Any) -> Any:
        """The streamed prediction of an image on disk or of ``out=``; :data:`_IN_MEMORY` for the others."""
        from . import outofcore

        if out is None and not out_options and not outofcore.is_lazy(data):
            return _IN_MEMORY
        if labels:
            raise InputError("labels=True (CLI: --labels) needs the whole image in memory (StarDist's decoder "
                             "looks across it): predict an in-memory image to a file, or stream raw_output=True "
                             "(CLI: --raw-output) and decode that afterwards")
        return outofcore.predict_lazy(self, data, out=out, **options, **out_options)

    def predict_many(self, images: Iterable[Any], **options: Any) -> list[Any]:
        """Predict every image of ``images`` with one loaded model (batched, streamed)."""
        return list(self.iter_predict(images, **options))

    def iter_predict(self, images: Iterable[Any], *, axes: Any = None, tile: Any = None, halo: Any = None,
                     batch_size: int | None = None, pad_mode: str = "reflect", nan_policy: str = "warn",
                     progress: bool = False, on_window: Callable[[int], None] | None = None,
                     names: Any = None, channels: Any = None,
                     on_plan: Callable[[int], None] | None = None,
                     on_post: Callable[[str | None], None] | None = None, labels: bool = False) -> Iterator[Any]:
        """Yield the prediction of each image of ``images``, in order, as soon as it is complete.

        Options as for :meth:`predict` (checked here, before any image is
        read).  Windows of consecutive images are batched together;
        ``on_window(n)`` is called after every engine call with the number
        of windows run, ``on_plan(n)`` when an image (sample) is planned with
        its number of windows (a progress total), ``on_post(steps)`` before the
        postprocessing that takes a whole image at once (an instance decoder, named
        by ``steps``) runs on an image, and ``on_post(None)`` after it (work after
        the tiles, for a progress display).  ``names``: a label per image (e.g. its file name)
        for warnings and errors; default ``image 1``, ``image 2``, ...
        ``channels``, ``labels``: as for :meth:`predict`.
        """
        check_options(tile=tile, halo=halo, batch_size=batch_size, pad_mode=pad_mode, nan_policy=nan_policy,
                       axes=axes)
        if isinstance(images, (str, bytes, Mapping)) or not isinstance(images, Iterable):
            raise InputError(f"images must be a list or iterable of images, got {type(images).__name__}: "
                             "use predict() for one image")
        if labels:
            self._check_labels()
        images = with_channels(images, channels, axes=axes, names=names)
        return self._iter_predict(images, axes=axes, tile=tile, halo=halo, batch_size=batch_size,
                                  pad_mode=pad_mode, nan_policy=nan_policy, on_window=on_window, names=names,
                                  labelled=True, on_plan=on_plan, on_post=on_post, labels=labels)

    def _iter_predict(self, images: Iterable[Any], *, axes: Any, tile: Any, halo: Any, batch_size: int | None,
                      pad_mode: str, nan_policy: str, on_window: Callable[[int], None] | None, names: Any,
                      labelled: bool, on_plan: Callable[[int], None] | None = None,
                      on_post: Callable[[str | None], None] | None = None,
                      labels: bool = False) -> Iterator[Any]:
        try:
            dataset_stats = self._dataset_stats
            if self._dataset_measures and dataset_stats is None:
                if iter(images) is images:  # a one-shot iterator: keep the images for the second pass
                    images = list(images)
                # the prediction pass below reports non-finite values; this one only applies the policy
                dataset_stats = self._compute_dataset_statistics(images, axes, nan_policy=nan_policy,
                                                                 labelled=labelled, names=names)
            # built per call: the engine is a public attribute a caller may have swapped
            executor = InMemoryExecutor(self.network(), batch_size=batch_size, pad_mode=pad_mode, on_window=on_window)
            samples = self._samples(images, axes, tile=tile, halo=halo, dataset_stats=dataset_stats or {},
                                    nan_policy=nan_policy, names=names, labelled=labelled, on_plan=on_plan)
            whole = ", ".join(self.whole_sample_steps()) if on_post is not None else ""
            # samples come back in order, so an image is complete when its last sample is
            for sample in executor.run(samples):
                job, part = sample.context
                if whole:
                    on_post(whole)
                job.done[part] = self._postprocess(sample)
                if labels:  # on the stitched whole sample, never per tile
                    job.done[part] = self._labels(job.done[part])
                if whole:
                    on_post(None)
                if len(job.done) == job.n_samples:
                    yield self._unfold(job, labels=labels)
        except MemoryError as e:
            raise memory_error(e) from e

    def _samples(self, images: Iterable[Any], axes: Any, *, tile: Any, halo: Any, dataset_stats: Mapping,
                 nan_policy: str, names: Any, labelled: bool,
                 on_plan: Callable[[int], None] | None = None) -> Iterator[Sample]:
        """The samples of ``images``, one image read at a time, each with its plan."""
        plans: dict[tuple, SamplePlan] = {}
        count = 0
        for index, image in enumerate(images):
            label = image_label(names, index) if labelled else None
            arrays, foldings = self._map_inputs(image, axes, label=label)
            # one pass over each whole input, never per tile
            arrays, bad = screen_nonfinite(arrays, nan_policy, label, report=True)
            n = next(iter(arrays.values())).shape[0] if self.inputs[0].has_batch else 1
            job = _ImageJob(index, foldings, n, was_xarray=is_xarray(image), single=not isinstance(image, Mapping))
            for part in range(n):
                raw = self._sample_slice(arrays, part)
                shapes = {k: a.shape for k, a in raw.items()}
                key = tuple(shapes.items())
                plan = plans.get(key)
                if plan is None:  # plans depend on shapes only: many same-size images share one
                    plan = plans[key] = self.plan(shapes, tile=tile, halo=halo)
                if part == 0:
                    warn_if_padded(plan, self.inputs, label)
                if on_plan is not None:
                    on_plan(len(plan.tiles))
                yield Sample({k: NumpySource(a) for k, a in raw.items()}, {t.id: NumpySink() for t in self.outputs},
                             plan, dict(dataset_stats), nonfinite=bad, index=count, context=(job, part))
                count += 1

    def plan(self, shapes: Mapping[str, tuple], *, tile: Any = None, halo: Any = None) -> SamplePlan:
        """The tile plan of one sample of input ``shapes`` (model layout, by input id).

        The declared-size plan (:func:`.plan.plan_sample`), or one overlapped by the
        measured receptive field (see :attr:`strict_sizes`); what every executor runs.
        """
        try:
            plan = plan_sample(self.inputs, self.network_outputs, shapes, tile=tile, halo=halo)
        except InputError as e:
            if self.strict_sizes or halo is not None or tile is None:
                raise
            plan = e  # a tile the declared sizes refuse: the network may still take it
        if not isinstance(plan, InputError) and (self.strict_sizes or halo is not None or not plan.tiled):
            return plan
        from .receptive_field import fitted_plan

        return fitted_plan(self, shapes, tile=tile, plan=plan, outputs=self.network_outputs, plan_sample=plan_sample)

    def _postprocess(self, sample: Sample) -> dict[str, np.ndarray]:
        """The postprocessed outputs of one completed sample (statistics over its whole outputs)."""
        outputs = {k: sink.array for k, sink in sample.outputs.items()}
        stats = sample.stats
        if self._post_sample:
            tensors = {**{k: src.array for k, src in sample.inputs.items()}, **outputs}
            if sample.nonfinite:  # the outputs are non-finite where the bad inputs reached
                tensors = processing.nan_for_nonfinite(tensors, list(tensors))
            axis_map = {t.id: t.axis_ids for t in self.inputs + self.outputs}
            stats = {**stats, **processing.compute_sample_measures(self._post_sample, tensors, axis_map,
                                                                   ignore_nan=bool(sample.nonfinite))}
        return {spec.id: chain(outputs[spec.id], stats) for spec, chain in zip(self.outputs, self.postprocessing)}

    def _check_labels(self) -> None:
        if self.stardist is None:
            raise InputError(f"labels=True (CLI: --labels) decodes StarDist packages (config.stardist) here; "
                             f"{self.name!r} is not one. For probability outputs use "
                             "bioimgzoo.runtime.labels.output_to_labels (the CLI's --labels does)")

    def labels_of(self, output: Any, axes: Any) -> tuple[np.ndarray, tuple[str, ...]]:
        """Instance labels of a StarDist package's whole output laid out as ``axes`` (what predict returned).

        Returns the labels (int32) and their axes: ``axes`` without the
        channel.  Axes other than the model's space axes (a z stack folded
        through a 2D model, time) are decoded slice by slice.
        """
        self._check_labels()
        axes = tuple(str(a) for a in axes)
        arr = np.asarray(output)
        inner = [a for a in axes if a in self.stardist.spatial or a == "channel"]
        lead = [i for i, a in enumerate(axes) if a not in inner]
        t = np.transpose(arr, lead + [axes.index(a) for a in inner])
        flat = t.reshape((-1,) + t.shape[len(lead):])
        c = inner.index("channel")
        labels = np.stack([np.take(self.stardist.labels(s, tuple(inner), where=self.name), 0, axis=c)
                           for s in flat])
        labels = labels.reshape(t.shape[:len(lead)] + labels.shape[1:])
        rest = [a for a in inner if a != "channel"]
        out_axes = tuple(axes[i] for i in lead) + tuple(rest)
        final = tuple(a for a in axes if a != "channel")
        return np.transpose(labels, [out_axes.index(a) for a in final]), final

    def _labels(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.outputs[0]
        return {**outputs, spec.id: self.stardist.labels(outputs[spec.id], spec.axis_ids, where=self.name)}

    def _unfold(self, job: _ImageJob, *, labels: bool = False) -> Any:
        """One image's result: its samples joined and laid out as the image was."""
        result = {}
        for spec in self.outputs:
            parts = [job.done[i][spec.id] for i in range(job.n_samples)]
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            folding = job.foldings[self.inputs[0].id]
            out = from_model_layout(arr, folding, spec.axes)
            dims = output_axes_ids(folding, spec.axes)
            if labels and spec is self.outputs[0] and "channel" in dims:  # labels: one channel, dropped
                out = np.take(out, 0, axis=dims.index("channel"))
                dims = tuple(d for d in dims if d != "channel")
            if job.was_xarray:
                import xarray as xr

                out = xr.DataArray(out, dims=dims)
            result[spec.id] = out
        if len(self.outputs) == 1:
            return result[self.outputs[0].id]
        return result

    # ------------------------------------------------------------ input mapping
    def _map_inputs(self, data: Any, axes: Any, *, label: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, Folding]]:
        """Arrays in model layout by input id (float16 read as float32); errors name ``label``."""
        try:
            return self._map_inputs_unlabelled(data, axes)
        except InputError as e:
            if label is None:
                raise
            raise InputError(f"{label}: {e}") from e

    def _map_inputs_unlabelled(self, data: Any, axes: Any) -> tuple[dict[str, np.ndarray], dict[str, Folding]]:
        if isinstance(axes, Mapping):
            unknown = set(map(str, axes)) - {t.id for t in self.inputs}
            if unknown:
                raise InputError(f"axes= names input {', '.join(sorted(unknown))}, which the model lacks; its "
                                 f"inputs are {', '.join(t.id for t in self.inputs)}")
        if isinstance(data, Mapping):
            given = dict(data)
            unknown = set(map(str, given)) - {t.id for t in self.inputs}
            if unknown:
                raise InputError(f"the model has no input {', '.join(sorted(unknown))}; its inputs are "
                                 f"{', '.join(t.id for t in self.inputs)}")
        else:
            if len(self.inputs) != 1:
                raise InputError(f"this model has {len(self.inputs)} inputs ({', '.join(t.id for t in self.inputs)}): "
                                 "pass a dict {input_id: image}")
            given = {self.inputs[0].id: data}
        arrays, foldings = {}, {}
        for spec in self.inputs:
            if spec.id not in given:
                raise InputError(f"input '{spec.id}' is missing: the model needs "
                                 f"{', '.join(t.id for t in self.inputs)}")
            value = given[spec.id]
            ax = axes.get(spec.id) if isinstance(axes, Mapping) else axes
            if hasattr(value, "dims") and hasattr(value, "values"):  # xarray.DataArray
                ax = ax or tuple(str(d) for d in value.dims)
                value = value.values
            array = as_array(value, spec)
            check_dtype(array, spec)
            if array.size == 0:
                raise InputError(f"input '{spec.id}' got an empty image (shape {tuple(array.shape)}): pass an "
                                 "image with at least one pixel along every axis")
            if array.dtype.kind == "f" and array.dtype.itemsize < 4:
                # float16 statistics overflow (a sum of squares past 65504 is inf): widen first,
                # to the model's own float type when that is wider still
                array = array.astype(np.float64 if spec.dtype == "float64" else np.float32)
            arrays[spec.id], foldings[spec.id] = to_model_layout(array, ax, spec.axes, tensor_id=spec.id)
        if self.inputs[0].has_batch:
            counts = {k: a.shape[0] for k, a in arrays.items()}
            if len(set(counts.values())) > 1:
                raise InputError(f"inputs hold different numbers of samples {counts}: give each the same")
        return arrays, foldings

    def _sample_slice(self, arrays: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        if not self.inputs[0].has_batch:
            return dict(arrays)
        return {k: a[i:i + 1] for k, a in arrays.items()}


def predict_test_inputs(package: Package, engine: Any, *, trust_code: bool = False) -> dict[str, np.ndarray]:
    """The package's test inputs through its whole pipeline with ``engine`` (declared windows); outputs by id.

    Used to check weights made from other weights (a conversion) before they are trusted.
    """
    model = Model(package, engine, weights_format=getattr(engine, "format", "onnx"), device="cpu",
                  trust_code=trust_code)
    model.strict_sizes = True  # the declared windows: nothing is measured before the weights are known right
    test = {t.id: np.load(package.file(t.test_tensor), allow_pickle=False) for t in package.descr.inputs}
    got = model.predict(test, axes={t.id: list(t.axis_ids) for t in model.inputs})
    return got if isinstance(got, dict) else {model.outputs[0].id: got}


def _stardist_of(package: Package, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Any:
    """The package's config.stardist (its network output, decoded by labels=True), or None."""
    sd = whole_sample.stardist_config(getattr(package, "raw", None))
    op_id = whole_sample.StardistPostprocessing.op_id
    if sd is None or not outputs or not inputs or any(str(getattr(op, "id", "")) == op_id
                                                      for op in outputs[0].postprocessing):
        return None  # a stardist_postprocessing op decodes it already
    # export_TF upsamples the output to the input's size; else it is at 1/grid
    spatial = [a for a in sd.spatial if a in outputs[0].axis_ids]
    links = [output_scale(inputs[0], outputs[0], a) for a in spatial]
    upsampled = all(link is None or link[2] == 1 for link in links)
    return replace(sd, upsampled=upsampled)
