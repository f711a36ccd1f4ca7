"""Export trained PyTorch modules as bioimage.io model packages (``bioimgzoo.export``).

``export_model(module, example_input, out, *, name, description, authors, ...)``
probes the module (valid sizes, output relations, halo), writes
``pytorch_state_dict`` (its architecture from an installed package or written
from the class's source: the user's script is never run again),
``torchscript`` and ``onnx`` weights checked against it, test/sample tensors
made by the declared pipeline, a cover and a README rendered from a model
card, and saves a validated zip laid out as every consumer tool reads it.  It
returns an :class:`ExportResult` (``print`` it: what was written and checked,
each tool's verdict); ``export_package`` is the same function.

Importing this package is cheap; torch and bioimageio load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["export_model", "export_package", "ExportResult", "EXPORT_OPTIONS", "load_card"]

if TYPE_CHECKING:  # pragma: no cover
    from ._export import ExportResult


def export_model(module: Any, example_input: Any, out: Any, **kwargs: Any) -> "ExportResult":
    """Export a PyTorch module as a zoo package; see :func:`bioimgzoo.exporter._export.export_model`."""
    from ._export import export_model as _impl

    return _impl(module, example_input, out, **kwargs)


def export_package(module: Any, example_input: Any, out: Any, **kwargs: Any) -> "ExportResult":
    """Like :func:`export_model` but returns an :class:`ExportResult` (probe, checks, timings)."""
    from ._export import export_package as _impl

    return _impl(module, example_input, out, **kwargs)


def __getattr__(name: str):
    if name in ("ExportResult", "EXPORT_OPTIONS"):
        from . import _export

        return getattr(_export, name)
    if name == "load_card":
        from .card import load_card

        return load_card
    raise AttributeError(name)

