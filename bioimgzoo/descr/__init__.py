"""One vocabulary over bioimageio.spec's classes, with no I/O.

* :mod:`.axes` -- axis letters and ids, :func:`~.axes.parse_axes`, :class:`~.axes.AxisInfo`;
* :mod:`.sizes` -- valid sizes (fixed, ``min + k * step``, references);
* :mod:`.tensors` -- :class:`~.tensors.TensorSpec`: a tensor's axes, sizes, halos, processing;
* :mod:`.weights` -- weight formats, their aliases and the default priority.

The runtime, the hub, the exporter, validation and training all speak it;
none keeps a copy of its own.
"""
