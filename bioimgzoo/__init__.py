"""bioimgzoo: run, pull, package and validate BioImage Model Zoo models.

The public API is what ``__all__`` lists; everything else is internal.
Heavy libraries (torch, onnxruntime, bioimageio.spec) load on first use.
"""

import typing as _typing

from ._version import __version__

__all__ = [
    "__version__",
    "load",
    "open_package",
    "errors",
    "export",
    "validate",
]

from . import errors
from . import hub as _hub  # noqa: F401  (registers the zoo's URL and id resolvers with .package)
# the exporter's own function: its options, return type and docstring are export's (torch loads when called)
from .exporter import export_model as export
from .package import open_package

if _typing.TYPE_CHECKING:  # pragma: no cover
    from .runtime.model import Model


def load(source: _typing.Any, *, weights: str | None = None, device: str | None = None,
         trust_code: bool = False, **hub_options: _typing.Any) -> "Model":
    """Open a zoo model package and load it for prediction.

    Parameters
    ----------
    source : str or os.PathLike
        Folder, ``rdf.yaml`` path, ``.zip``, http(s) URL or zoo id.
    weights : str, optional
        Weight format to use (``"onnx"``, ``"torchscript"``,
        ``"pytorch_state_dict"``).  Default: the first available of
        onnx, torchscript, pytorch_state_dict (the choice is logged and
        stored in ``model.weights_format``).
    device : {"cpu", "cuda", "auto"}, optional
        Default ``"auto"``: cuda when available, else cpu.
    trust_code : bool
        Allow running Python code shipped in the package (needed for
        ``pytorch_state_dict`` weights with an architecture file).
    isolated : bool
        Run ``pytorch_state_dict`` weights in a cached virtual environment
        holding the packages the model's dependency file lists (installing
        them runs their code: needs ``trust_code=True``); requirement
        specifiers only, from the package index, or from ``wheels``.
    wheels : str or os.PathLike, optional
        With ``isolated``: a folder of wheels to install from instead of the
        index (``pip --no-index --find-links``).

    Returns
    -------
    Model
        Call ``model.predict(image)`` as often as needed; nothing reloads.
    """
    from .runtime.model import Model

    return Model.load(source, weights=weights, device=device, trust_code=trust_code, **hub_options)


def validate(source: _typing.Any, *, weights: str | None = None, trust_code: bool = False, static: bool = False,
             reference: str | None = None, require: _typing.Any = (), strict: bool = False,
             **hub_options: _typing.Any) -> _typing.Any:
    """Validate a model package as a reviewer would; returns a report.

    Thin wrapper of :func:`bioimgzoo.validation.check_package`: format, files, safety,
    reproduction through bioimgzoo's runtime and agreement checks decide ``report.passed``;
    the consumer tools' verdicts (``report.consumers``) fail it only when named in
    ``require`` (e.g. ``["deepimagej", "ilastik"]``).  ``static=True`` checks the
    description alone; ``reference="core"`` also runs bioimageio.core.  The report
    renders itself: ``to_dict()``, ``to_markdown()``, ``to_html()``.

    A broken package is a report that did not pass, never an exception, unless
    ``strict=True``: then :class:`~bioimgzoo.errors.ValidationFailed` is raised, naming
    the failing families and tools (its ``report`` attribute holds the whole report).
    """
    from .validation import check_package

    report = check_package(source, weights=weights, trust_code=trust_code, static=static, reference=reference,
                           require=list(require), **hub_options)
    if strict and not report.passed:
        failing = [n for n in report.own_families if report.family_status(n) not in ("passed", "warning",
                                                                                     "not-applicable")]
        failing += [t for t in report.required if report.consumers.get(t, {}).get("status") != "passed"]
        error = errors.ValidationFailed(f"{report.meta.get('name') or source} fails validation "
                                        f"({', '.join(failing) or 'see the report'}): run bioimgzoo validate "
                                        f"{source} for each failure and its fix")
        error.report = report
        raise error
    return report
