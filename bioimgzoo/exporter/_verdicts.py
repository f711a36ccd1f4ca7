"""Each consumer tool's verdict on the written package, read from the package itself.

:func:`tool_verdicts` opens the zip the export just wrote and asks the consumer
checkers of :mod:`bioimgzoo.validation.consumers` (the rules of
``shared/docs/consumer-rules.md``) what DeepImageJ, ilastik, QuPath, BiaPy, ...
will make of it.  The verdicts are :meth:`ConsumerVerdict.to_dict` summaries
(``{tool, status, failed_rules, fixes, reasons, failures}``), so that the result
can be printed and serialised.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tool_verdicts", "reviewer_warnings", "normalisation_warnings"]


def tool_verdicts(zip_path: Path) -> tuple[list[dict], str | None, list[dict]]:
    """``([verdict summary], note, readers)`` for the package at ``zip_path``.

    ``readers`` are the deployed readers' verdicts (``{reader, title, version, status, message, field}``).
    A checker's own failure does not lose the written package: the note says what failed.
    """
    from ..package import open_package
    from ..validation.consumers import consumer_verdicts

    package = open_package(zip_path)
    try:
        verdicts = consumer_verdicts(package)
    except Exception as e:  # noqa: BLE001 -- a checker's own failure must not lose the written package
        return [], f"the consumer checkers failed ({type(e).__name__}: {e}): no tool verdicts", []
    readers = [{"reader": f.details.get("reader"), "title": f.details.get("title", ""),
                "version": f.details.get("version", ""), "status": f.status, "message": f.message,
                "field": f.details.get("field", "")}
               for f in (verdicts["readers"].findings if "readers" in verdicts else ())]
    out = [v.to_dict(findings=False) for v in verdicts.values() if v.tool != "readers"]
    if any(v["failed_rules"] == ["Q1"] for v in out):
        try:
            out = _unzipped_qupath(zip_path, out, consumer_verdicts)
        except Exception:  # noqa: BLE001 -- the zip's own verdict stands
            pass
    return out, None, readers


def _unzipped_qupath(zip_path: Path, verdicts: list[dict], consumer_verdicts) -> list[dict]:
    """QuPath opens an unpacked package only (rule Q1): judge the unzipped files too, and say so."""
    import tempfile
    import zipfile

    from ..package import open_package

    with tempfile.TemporaryDirectory(prefix="bioimgzoo-unzipped-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        unzipped = consumer_verdicts(open_package(Path(tmp)), tools=["qupath"])["qupath"]
    out = []
    for v in verdicts:
        if v["tool"] == "qupath" and v["failed_rules"] == ["Q1"] and unzipped.status == "passed":
            v = {**v, "status": "passed", "failed_rules": [], "unzipped": True,
                 "reasons": {}, "note": "once unzipped (QuPath opens a folder's rdf.yaml, not a zip)"}
        out.append(v)
    return out


_PLACEHOLDERS = ("todo", "tbd", "fixme", "lorem ipsum", "placeholder", "xxx", "your name", "describe your model",
                 "add a description")


def reviewer_warnings(*, module, meta, card: dict) -> list[str]:
    """What a zoo reviewer flags: an untrained module, no maintainers, placeholder text."""
    warnings = []
    if _looks_untrained(module):
        warnings.append("the module looks untrained (its weights are as the constructor left them: random "
                        "initialisation, no update): train it, or load the checkpoint, before sharing")
    if not meta.maintainers:
        warnings.append("no maintainers: the zoo asks for at least one maintainer with a github_user "
                        "(maintainers=[{'name': ..., 'github_user': ...}] or an author's github_user)")
    texts = {"name": meta.name, "description": meta.description,
             **{k: v for k, v in card.items() if isinstance(v, str)},
             **{f"author {a['name']}": a["name"] for a in meta.authors}}
    for key, text in texts.items():
        low = str(text).strip().lower()
        hits = [p for p in _PLACEHOLDERS if p in low]
        if hits or len(low) < 3:
            warnings.append(f"{key} looks like placeholder text ({str(text).strip()[:60]!r}): write the real one")
    return warnings


_NORMALISING = {"zero_mean_unit_variance", "fixed_zero_mean_unit_variance", "scale_range", "scale_linear",
                "scale_mean_variance"}


def normalisation_warnings(inputs: dict, preprocessing: dict) -> list[str]:
    """An input whose example looks raw (integer pixels, or values far from a normalised range) while no
    normalising preprocessing is declared: the package would feed the network raw values.

    Most networks are trained on normalised images; packaging one without its normalisation gives wrong
    results in every consumer, silently.  The statistics only *suggest* it (a network may normalise inside
    itself), so this is a warning.
    """
    import numpy as np

    out = []
    for tid, example in inputs.items():
        ops = {str(getattr(p, "id", "")) for p in preprocessing.get(tid, [])}
        if ops & _NORMALISING:
            continue
        arr = np.asarray(example)
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size == 0:
            continue
        lo, hi = float(finite.min()), float(finite.max())
        mean, std = float(finite.mean()), float(finite.std())
        raw = (arr.dtype.kind in "ui" and hi > 1) or hi - lo > 20 or abs(mean) > 10 or std > 10
        if not raw:
            continue
        out.append(
            f"input {tid!r}: the example is {arr.dtype} with values {lo:g}..{hi:g} (mean {mean:.4g}, std {std:.4g}) "
            "and no normalisation is declared, so every consumer will feed the network these raw values. If it "
            "was trained on normalised images, declare it: --preprocessing '[{\"id\": \"zero_mean_unit_variance\", "
            "\"kwargs\": {\"axes\": [\"x\", \"y\"]}}]' (Python: preprocessing=[...]); if the network "
            "normalises inside itself, ignore this")
    return out


def _looks_untrained(module) -> bool:
    """True when the module's weights still look like PyTorch's default initialisation.

    After ``reset_parameters`` every bias of a conv/linear layer lies in ``±1/sqrt(fan_in)`` and every norm
    layer has weight 1 and bias 0 with running mean 0 and variance 1.  Training moves norm layers at once;
    without norm layers, a module is called untrained only when it equals a freshly initialised copy of
    itself in distribution of every weight's bound (a cheap proxy: every parameter inside the init bound).
    """
    import math

    import torch

    norms = [m for m in module.modules()
             if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm,
                               torch.nn.modules.instancenorm._InstanceNorm))]
    affine = [m for m in norms if getattr(m, "weight", None) is not None]
    if affine:
        return all(bool(torch.all(m.weight == 1)) and bool(torch.all(m.bias == 0)) for m in affine)
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    if not layers:
        return False
    for m in layers:
        w = m.weight.detach()
        fan_in = w[0].numel()
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and the bias share this bound
        if float(w.abs().max()) > bound * 1.0001:
            return False
        if m.bias is not None and float(m.bias.detach().abs().max()) > bound * 1.0001:
            return False
    return True
