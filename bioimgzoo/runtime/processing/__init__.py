"""Pre- and postprocessing of the bioimage.io model format, in plain numpy.

Every standard op of format 0.5 (``binarize``, ``clip``, ``ensure_dtype``,
``fixed_zero_mean_unit_variance``, ``scale_linear``, ``scale_mean_variance``,
``scale_range``, ``sigmoid``, ``softmax``, ``zero_mean_unit_variance``, and the
whole-sample ops of :mod:`.whole_sample`: ``stardist_postprocessing``,
``cellpose_flow_dynamics``, ``custom``) is compiled once per tensor into a
:class:`Chain` of vectorized steps.  As in bioimageio.core, each op builds
itself from its description: :data:`OPS` maps an op id to its step class
(registered by :func:`register_op`), whose ``from_descr(descr, ctx)`` checks
the kwargs against the tensor (:class:`OpContext`) and returns the step.

Modules, by concern: :mod:`.measures` (what a statistic is, and the
reductions), :mod:`.ops` (the arithmetic ops and the registry),
:mod:`.whole_sample` (the ops that need a whole stitched sample),
:mod:`.compile` (descriptions to a :class:`Chain`), :mod:`.statistics`
(per-sample and per-dataset statistics).  Format
0.4 descriptions reach this module upgraded to 0.5 by bioimageio.spec (which
is what :func:`bioimgzoo.package.open_package` returns), so the 0.5 classes
cover both generations.

The numbers match bioimageio.core 0.11 (``proc_ops.py``, ``proc_setup.py``,
``stat_calculators.py``, ``stat_measures.py``, ``_prediction_pipeline.py``)
within float rounding, *including the dtypes of intermediate results*: every
parameter and statistic carries the dtype core gives it, so numpy's type
promotion makes the same choice of float32 or float64 arithmetic as core's
xarray code.

Usage
-----
::

    chain = compile_processing(tensor_descr.preprocessing, tensor_id="raw",
                               tensor_axes=["batch", "channel", "y", "x"])
    stats = compute_sample_measures(chain.required_measures, {"raw": raw}, axes)
    stats |= dataset_stats            # from DatasetStatistics, if any measure has scope "dataset"
    ready = chain(raw, stats)

Which data a statistic is computed on
------------------------------------
bioimageio.core computes *all* statistics in one ``UpdateStats`` step that
``setup_pre_and_postprocessing`` inserts at position 0 of the
preprocessing, i.e. on the **raw input sample, before any op of any chain**.
So ``zero_mean_unit_variance`` placed after ``scale_linear`` (or after an
``ensure_dtype``) still uses the mean/std of the unscaled raw input; the
statistics of a ``reference_tensor`` are those of the raw input too.  This
module follows that rule: pass the raw tensors to
:func:`compute_sample_measures` / :meth:`DatasetStatistics.update`.

For measures of *output* tensors (``zero_mean_unit_variance``,
``scale_range``, ``clip`` percentiles or ``scale_mean_variance`` in
postprocessing) core 0.11 fails (``KeyError``: its stats step runs before the
model, when outputs do not exist yet).  The analogous rule is implemented
here: an output's measures are computed on the **raw model output, before any
postprocessing op**, and reference tensors (inputs) on the raw inputs.

Core computes the statistics on the whole sample, then applies the (blockwise)
ops to each block with those statistics.  :meth:`Chain.__call__` is pure
broadcasting arithmetic, so applying it per tile with whole-sample statistics
gives exactly the whole-image result (``softmax`` along an axis that is tiled
would be the exception; core treats it as blockwise as well).  Note that
core's *non-blockwise* ``predict`` pads the input by the halo before the
statistics step, so there the statistics include the padded border.

Sample vs. dataset scope (core's ``_get_axes`` and the op classes)
-----------------------------------------------------------------
* ``zero_mean_unit_variance``, ``scale_range`` and ``clip`` (percentiles):
  dataset scope when ``axes`` is None **or** contains ``"batch"``, else
  sample scope.  So the 0.5 default "``axes`` not given" means *dataset*
  statistics over all axes.  A 0.4 ``mode: per_dataset`` becomes
  ``axes: [batch, ...]`` in the upgrade, i.e. dataset scope.
* ``scale_mean_variance``: dataset scope only when ``axes`` contains
  ``"batch"``; ``axes`` None means sample statistics over all axes.
* Sample measures never reduce over ``batch`` explicitly (arrays hold one
  sample); dataset measures with ``batch`` in their axes reduce each sample
  over the other listed axes and combine samples.  A dataset measure may name
  ``batch`` for a tensor without a batch axis (each sample is one element).

Numerics (as core)
------------------
* mean/var/std of one sample (``MeanVarStdCalculator.compute``): mean in the
  data's own float dtype (float64 for integer data), ``var = sum((x-mean)**2)
  / n`` (population variance, ddof 0) in that dtype, ``std = sqrt(var)``.
  A mean requested *without* var/std of the same tensor and axes is computed
  in float64 (core's ``MeanCalculator``).
* eps is added to the std (``(x - mean) / (std + eps)``), never inside the
  square root; ``scale_mean_variance`` is ``(x - mean) / (std + eps) *
  (ref_std + eps) + ref_mean``; ``scale_range`` is ``(x - lower) / (upper -
  lower + eps)``.  Core 0.11 ignores the described ``eps`` of
  ``zero_mean_unit_variance`` and ``scale_range`` and always uses 1e-6 (as
  does ``fixed_zero_mean_unit_variance``); see :data:`.ops.FOLLOW_CORE_EPS`.
* sample quantiles: ``numpy.quantile`` with ``method="linear"`` for
  ``scale_range`` and ``method="inverted_cdf"`` for ``clip`` percentiles, with
  q given as a float64 array (so linear quantiles of float32 data are
  float64); NaNs are skipped like xarray's ``nanquantile``.
* dataset mean/var/std: float64, per-sample mean and sum of squared
  deviations combined exactly with Chan's parallel formula (core's
  ``MeanVarStdCalculator.update``); std = sqrt(var), ddof 0.
* NaN in the data: quantiles skip it (as above); mean/var/std skip it only
  with ``ignore_nan=True`` (the runtime sets non-finite input values to NaN
  for its statistics, see :meth:`bioimgzoo.runtime.model.Model.predict`),
  else a NaN makes them NaN, as in core.
* dataset quantiles: core (without the optional ``crick`` package, which is
  not a dependency) averages the per-sample ``linear`` quantiles weighted by
  the number of reduced values (``MeanQuantilesCalculator``) -- an estimate,
  not the true dataset quantile.  Reproduced here.
* ``binarize`` along an axis compares with the thresholds laid out along that
  axis.  (Core 0.11 broadcasts the threshold list against the *last* axis
  instead, which fails or is wrong unless the axis is the last one.)
* ``clip`` with percentiles replaces values below/above the quantile by it
  (NaNs become the bound, like core's ``where``); fixed bounds use
  ``numpy.clip`` (NaN stays NaN).

Dataset statistics in core
--------------------------
``create_prediction_pipeline(dataset_for_initial_statistics=...,
keep_updating_initial_dataset_statistics=False, fixed_dataset_statistics=...)``:

1. measures found in ``fixed_dataset_statistics`` are taken as given;
2. the others are computed once from ``dataset_for_initial_statistics`` (raw
   samples) and then frozen -- unless that dataset is empty (the default), or
   ``keep_updating_initial_dataset_statistics`` is True: then *each sample
   processed updates the running dataset statistics before it is processed*,
   so sample k is normalized with statistics over samples 1..k.
3. ``bioimageio.core.predict`` builds a fresh pipeline per call, so a single
   prediction uses the dataset statistics of that one sample;
   ``predict_many`` shares one pipeline, giving the running statistics.

:class:`DatasetStatistics` implements the accumulation; a runtime matching
core calls ``update(raw_sample)`` then ``finalize()`` before processing each
sample when no dataset was given, or ``update`` over a dataset once and
reuses ``finalize()`` for every sample when one was.
"""


from .compile import Chain, compile_processing
from .measures import Measure
from .ops import OPS, OpContext, register_op
from .statistics import DatasetStatistics, compute_sample_measures, nan_for_nonfinite
from . import whole_sample  # noqa: F401  (registers the whole-sample ops)

__all__ = [
    "Measure",
    "Chain",
    "compile_processing",
    "OPS",
    "OpContext",
    "register_op",
    "compute_sample_measures",
    "nan_for_nonfinite",
    "DatasetStatistics",
    "SUPPORTED_OPS",
]

#: the op ids compile_processing builds (the keys of OPS)
SUPPORTED_OPS = tuple(sorted(OPS))
