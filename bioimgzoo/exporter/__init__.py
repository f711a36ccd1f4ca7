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

__all__ = ["export_model", "export_package", "ExportResult", "EXPORT_OPTIONS", "load_card", "extract_from_file",
           "SourceUnavailable"]

if TYPE_CHECKING:  # pragma: no cover
    from ._export import ExportResult


def export_model(module: Any, example_input: Any, out: Any, *, name: str | None = None,
                 description: str | None = None, authors: Any = None, license: str | None = None,
                 axes: Any = "bcyx", preprocessing: Any = None, postprocessing: Any = None, card: Any = None,
                 id: Any = None,
                 version: Any = None,
                 tags: Any = None,
                 cite: Any = None,
                 maintainers: Any = None,
                 git_repo: Any = None,
                 parent: Any = None,
                 input_ids: Any = None,
                 output_ids: Any = None,
                 output_axes: Any = None,
                 input_description: Any = None,
                 output_description: Any = None,
                 channel_names: Any = None,
                 sizes: Any = None,
                 halo: Any = None,
                 weights: Any = None,
                 architecture: Any = None,
                 architecture_kwargs: Any = None,
                 opset_version: Any = None,
                 tolerance: Any = None,
                 validation: Any = None,
                 test: Any = None,
                 format_version: Any = None,
                 progress: Any = None,
                 intended_use: Any = None,
                 out_of_scope_use: Any = None,
                 limitations: Any = None,
                 training_data: Any = None,
                 training: Any = None,
                 task: Any = None,
                 modality: Any = None,
                 target_structure: Any = None,
                 architecture_type: Any = None) -> "ExportResult":
    """Export a PyTorch module as a bioimage.io model package (a ``.zip``).

    The module's class is never imported from a script, notebook or function (that would run the program
    again): when it is not in an installed package, an architecture file is written from its source and
    checked to rebuild the module in a fresh process; when that is impossible, only TorchScript and ONNX
    are written and the result and README say why.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network.  It is run in eval mode (its mode is restored).
    example_input : numpy.ndarray or dict of them
        A typical raw input laid out as ``axes`` (several inputs: ``{input_id: array}``,
        in the order ``forward`` takes them).  It becomes the package's test input.
    out : str or Path
        The ``.zip`` to write.  Nothing is written there unless every step succeeds.
    name, description : str
        Model name (5-64 characters: letters, digits, spaces, ``_+-()``) and a short
        description.  May come from ``card``.
    authors : list of str or dict
        Names, or mappings with ``name``, ``affiliation``, ``orcid``, ``github_user``.
    license : str
        SPDX identifier; default ``"CC-BY-4.0"`` (or the card's).
    axes : str or dict
        Layout of the example(s), letters ``b``, ``c``, ``t``, ``z``, ``y``, ``x``.
    preprocessing, postprocessing : list or dict, optional
        bioimage.io processing steps, e.g. ``[{"id": "zero_mean_unit_variance",
        "kwargs": {"axes": ["x", "y"]}}]``; a dict by tensor id for several tensors.
    card : str, Path or dict, optional
        Model card (see ``model_cards/README.md``): metadata and the README's sections.
    id, version, tags, cite, maintainers, git_repo, parent, input_ids, output_ids, output_axes,
    input_description, output_description, channel_names, sizes, halo, weights, architecture,
    architecture_kwargs, opset_version, tolerance, validation, test, format_version, progress,
    intended_use, out_of_scope_use, limitations, training_data, training, task, modality,
    target_structure, architecture_type :
        Each as :data:`EXPORT_OPTIONS` describes it; None (the default) leaves it to the
        card or to bioimgzoo's default.

    Returns
    -------
    ExportResult
        What was written and checked; ``print(result)`` shows :meth:`ExportResult.summary` (weights and
        their tolerance, valid sizes, halo, test tensors, each consumer tool's verdict, the path).  It is
        also path-like: ``os.fspath(result)`` is ``out``.

    Raises
    ------
    ExportError
        The module rejects the example, returns NaN, cannot be traced or scripted, is not
        deterministic, a weights format does not reproduce it, or the description does not
        validate.  The message names what failed and how to fix it.
    """
    from ._export import EXPORT_OPTIONS, export_package

    given = locals()
    options = {k: given[k] for k in EXPORT_OPTIONS if given.get(k) is not None}
    return export_package(module, example_input, out, name=name, description=description, authors=authors,
                          license=license, axes=axes, preprocessing=preprocessing, postprocessing=postprocessing,
                          card=card, **options)


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
    if name in ("extract_from_file", "SourceUnavailable"):  # a class's source read from a file, never run
        from . import _source

        return getattr(_source, name)
    raise AttributeError(name)

