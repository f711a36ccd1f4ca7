"""Weight formats: their names, the aliases users type, and the default choice.

One place decides what ``weights="ts"`` means, for ``load``, ``predict``,
``pull``, ``mirror``, ``export`` and ``finetune`` alike:

=========================  ===============================================
canonical name             aliases (case and ``-``/``_`` do not matter)
=========================  ===============================================
``onnx``                   —
``torchscript``            ``ts``, ``pt``, ``jit``
``pytorch_state_dict``     ``pytorch``, ``state_dict``, ``torch``, ``pth``
=========================  ===============================================

bioimgzoo runs these three directly (:data:`RUNNABLE`, in the default
priority order: the fastest engine first), and TensorFlow weights
(:data:`TENSORFLOW`: ``tensorflow_saved_model_bundle``, ``keras_hdf5``)
through ONNX: converted once, with the ``tensorflow`` extra, then run by
onnxruntime (:mod:`bioimgzoo.runtime.tensorflow`).  :data:`RUN_ORDER` is the
default choice among all of them; ``keras_v3`` and ``tensorflow_js`` can be
named, pulled and mirrored, but not run.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import BioimgzooError, WeightsError

__all__ = ["RUNNABLE", "TENSORFLOW", "RUN_ORDER", "SPEC_FORMATS", "ALIASES", "canonical_format", "canonical_formats",
           "present_formats", "runnable_formats", "choose_weights"]

#: formats bioimgzoo runs, in the default order of preference
RUNNABLE = ("onnx", "torchscript", "pytorch_state_dict")
#: TensorFlow formats bioimgzoo runs after converting them to ONNX (the ``tensorflow`` extra, once per weights)
TENSORFLOW = ("tensorflow_saved_model_bundle", "keras_hdf5")
#: every format a prediction may use, in the default order (native engines first)
RUN_ORDER = RUNNABLE + TENSORFLOW
#: every format bioimageio.spec 0.5 knows (those after RUNNABLE are named and copied, not run)
SPEC_FORMATS = RUNNABLE + ("keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")
ALIASES = {"ts": "torchscript", "pt": "torchscript", "jit": "torchscript",
           "pytorch": "pytorch_state_dict", "state_dict": "pytorch_state_dict", "torch": "pytorch_state_dict",
           "pth": "pytorch_state_dict", "keras": "keras_hdf5", "h5": "keras_hdf5",
           "tensorflow": "tensorflow_saved_model_bundle", "tf": "tensorflow_saved_model_bundle"}


def canonical_format(name: str, *, among: Sequence[str] = SPEC_FORMATS, option: str = "weights",
                     error: type[BioimgzooError] = WeightsError) -> str:
    """The canonical name of a weight format a user typed (``"TS"`` -> ``"torchscript"``).

    ``among`` limits the accepted formats (e.g. :data:`RUNNABLE`); ``option``
    names the argument in the message (``"--weights"`` for the CLI).
    """
    if not isinstance(name, str) or not name.strip():
        raise error(f"{option}={name!r} is not a weight format: use one of {', '.join(among)}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in among:
        known = "" if key not in SPEC_FORMATS else f" ({key}) for this use"
        raise error(f"{option}: unknown weight format {name!r}{known}: choose from "
                    f"{', '.join(among)} (or an alias: {', '.join(sorted(a for a, c in ALIASES.items() if c in among))})")
    return key


def canonical_formats(names: str | Sequence[str], *, among: Sequence[str] = SPEC_FORMATS, option: str = "weights",
                      error: type[BioimgzooError] = WeightsError) -> list[str]:
    """Several formats (a list, or a comma-separated string), canonical and without repeats."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out = [canonical_format(n, among=among, option=option, error=error) for n in items if str(n).strip()]
    return list(dict.fromkeys(out))


def present_formats(descr: Any) -> list[str]:
    """Every weight format a (0.5) description carries: runnable ones in priority order, then the rest."""
    weights = descr.weights
    names = list(type(weights).model_fields) if hasattr(type(weights), "model_fields") else list(SPEC_FORMATS)
    present = [n for n in names if getattr(weights, n, None) is not None]
    rank = {n: i for i, n in enumerate(SPEC_FORMATS)}
    return sorted(present, key=lambda n: (rank.get(n, len(rank)), present.index(n)))


def runnable_formats(descr: Any) -> list[str]:
    """The formats of ``descr`` bioimgzoo can run (TensorFlow ones through ONNX), in the default order."""
    present = present_formats(descr)
    return [f for f in RUN_ORDER if f in present]


def choose_weights(descr: Any, requested: str | None, *, runnable: bool = True, option: str = "weights") -> str:
    """The weight format to use: ``requested`` (any alias) when the package has it, else the default.

    ``runnable=False`` (pulling, mirroring) also accepts formats bioimgzoo cannot run.
    """
    present = runnable_formats(descr) if runnable else present_formats(descr)
    everything = present_formats(descr)
    if requested is not None:
        fmt = canonical_format(requested, among=RUN_ORDER if runnable else SPEC_FORMATS, option=option)
        if fmt not in present:
            raise WeightsError(f"this package has no {fmt} weights; available: {', '.join(everything) or 'none'}. "
                               f"Pass one of {', '.join(present) or '(none usable)'} ({option}=FORMAT)")
        return fmt
    if not present:
        if everything:
            raise WeightsError(f"this package has only {', '.join(everything)} weights, which bioimgzoo cannot "
                               f"run; it runs {', '.join(RUN_ORDER)}")
        raise WeightsError("the package lists no weights: it cannot be used for prediction")
    return present[0]
