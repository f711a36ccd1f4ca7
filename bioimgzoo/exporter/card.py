"""Model cards: a small YAML file per model, rendered into the package README.

The schema is documented in ``model_cards/README.md``; :data:`CARD_KEYS`
lists every key.  :func:`load_card` reads and checks a card (path or dict);
:func:`render_readme` renders the package's ``README.md`` from it, with a
``# Validation`` section carrying the metrics the card (or the caller)
supplies and the reproducibility numbers measured at export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ExportError

__all__ = ["CARD_KEYS", "load_card", "render_readme", "normalise_metrics"]

#: key -> short description (the README in model_cards/ documents them in full)
CARD_KEYS: dict[str, str] = {
    "name": "human-readable model name (letters, digits, spaces, _+-() ; 5-64 characters)",
    "id": "zoo id, lower case with hyphens (default: derived from name)",
    "version": "SemVer of this model (default 0.1.0)",
    "description": "one paragraph: what the model does (<= 512 characters)",
    "authors": "list of names or of {name, affiliation, orcid, github_user}",
    "maintainers": "list of {name, github_user} (default: authors with a github_user)",
    "license": "SPDX id (default CC-BY-4.0)",
    "tags": "list of tags; add one per bioimage.io category (modality, dims, content, framework, software, "
            "network, task)",
    "cite": "list of {text, doi} or {text, url}",
    "git_repo": "URL of the source repository",
    "intended_use": "who should use it on what data",
    "out_of_scope_use": "uses the model is not made for",
    "limitations": "known failure modes (text or list)",
    "training_data": "text, or {description, source, size}",
    "training": "text, or mapping of training details (epochs, loss, optimizer, ...)",
    "validation": "{dataset, description, metrics: {name: value} or [{name, value, description}]}",
    "task": "e.g. semantic-segmentation, denoising",
    "modality": "e.g. fluorescence-light-microscopy",
    "target_structure": "list, e.g. [nuclei]",
    "architecture_type": "short architecture name, <= 32 characters (e.g. 2D U-Net)",
    "export": "for `bioimgzoo export --card`: module, kwargs, checkpoint, example, axes, out, preprocessing, "
              "postprocessing, weights, ...",
}


def load_card(card: Any) -> tuple[dict, Path | None]:
    """Read a card from a YAML path or take a mapping; returns (card, folder of the card file or None)."""
    if card is None:
        return {}, None
    base: Path | None = None
    if isinstance(card, (str, os.PathLike)):
        import yaml

        path = Path(card).expanduser()
        if not path.is_file():
            raise ExportError(f"model card {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ExportError(f"model card {path} is not valid YAML: {e}") from e
        base = path.resolve().parent
        where = str(path)
    elif isinstance(card, Mapping):
        data, where = card, "model card"
    else:
        raise ExportError(f"card= must be a YAML file path or a mapping, got {type(card).__name__}")
    if not isinstance(data, Mapping):
        raise ExportError(f"{where} does not hold a mapping of card fields")
    unknown = sorted(set(data) - set(CARD_KEYS))
    if unknown:
        raise ExportError(f"{where}: unknown card key(s) {unknown}; known keys: {', '.join(CARD_KEYS)} "
                          "(see model_cards/README.md)")
    for key in ("name", "description", "intended_use", "out_of_scope_use", "license", "id", "version"):
        if key in data and data[key] is not None and not isinstance(data[key], (str, int, float)):
            raise ExportError(f"{where}: {key} must be text")
    for key in ("tags", "authors", "cite"):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise ExportError(f"{where}: {key} must be a list")
    return dict(data), base


def normalise_metrics(metrics: Any) -> list[dict]:
    """``{name: value}`` or ``[{name, value, description}]`` -> list of rows."""
    if metrics is None:
        return []
    if isinstance(metrics, Mapping):
        rows = []
        for k, v in metrics.items():
            if isinstance(v, Mapping):
                rows.append({"name": str(k), **{kk: vv for kk, vv in v.items()}})
            else:
                rows.append({"name": str(k), "value": v})
        return rows
    if isinstance(metrics, Sequence) and not isinstance(metrics, str):
        rows = []
        for m in metrics:
            if not isinstance(m, Mapping) or "name" not in m:
                raise ExportError(f"validation metrics: each entry needs a 'name' (and 'value'), got {m!r}")
            rows.append(dict(m))
        return rows
    raise ExportError(f"validation metrics must be a mapping or a list, got {type(metrics).__name__}")


def _fmt_value(v: Any) -> str:
    if v is None or v == "":
        return "not measured yet"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


#: units of the training section's numbers (bioimageio.spec's TrainingDetails and bioimgzoo.train's keys)
_UNITS = {"training_steps": "optimisation steps", "best_step": "(optimisation step)", "patch_size": "pixels",
          "training_batch_size": "patches per step", "training_epochs": "epochs",
          "initial_learning_rate": "(per optimisation step)", "seed": "(random seed)"}


def _duration(hours: Any) -> str:
    """``training_duration`` (the spec's hours) with its unit, and in seconds or minutes when short."""
    try:
        h = float(hours)
    except (TypeError, ValueError):
        return str(hours)
    seconds = h * 3600.0
    if seconds < 120:
        return f"{h:.4g} h ({seconds:.0f} s)"
    if seconds < 7200:
        return f"{h:.4g} h ({seconds / 60:.1f} min)"
    return f"{h:.4g} h"


def _with_unit(key: str, value: Any) -> str:
    if key == "training_duration":
        return _duration(value)
    unit = _UNITS.get(key)
    if unit and isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool):
        text = " x ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        return f"{text} {unit}"
    return str(value)


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "\n".join(f"- {x}" for x in v)
    if isinstance(v, Mapping):
        return "\n".join(f"- **{k}**: {_with_unit(str(k), x)}" for k, x in v.items())
    return str(v).strip()


def render_readme(*, name: str, description: str, card: Mapping, validation: Mapping | None,
                  technical: Sequence[str], reproducibility: Sequence[dict], cite: Sequence[Mapping],
                  authors: Sequence[str], license: str) -> str:
    """Markdown README for the package.

    ``validation`` is ``{dataset, description, metrics}`` (card's merged with the caller's);
    ``technical`` lines describe inputs/outputs/weights; ``reproducibility`` rows
    ``{format, max_abs_diff, rtol, atol}`` are the numbers measured at export.
    """
    parts = [f"# {name}", "", description.strip(), ""]

    def section(title: str, body: str) -> None:
        if body:
            parts.extend([f"# {title}", "", body, ""])

    section("Intended use", _as_text(card.get("intended_use")) or
            "Not stated by the authors: check that your data resembles the training data before relying on it.")
    section("Out-of-scope use", _as_text(card.get("out_of_scope_use")) or
            "Not stated by the authors. Do not use the outputs for decisions without validating them on your "
            "own annotated data.")
    section("Limitations", _as_text(card.get("limitations")) or
            "Not stated by the authors. Like every learned model it may fail silently on images unlike its "
            "training data (other modality, magnification, noise level or staining).")
    section("Training data", _as_text(card.get("training_data")) or "Not stated by the authors.")
    if card.get("training"):
        section("Training", _as_text(card.get("training")))
    section("Technical specification", "\n".join(f"- {t}" for t in technical))

    # '# Validation' (the spec looks for a heading with 'Validation')
    parts.extend(["# Validation", ""])
    val = dict(validation or {})
    if val.get("dataset"):
        parts.extend([f"Dataset: {_as_text(val['dataset'])}", ""])
    if val.get("description"):
        parts.extend([_as_text(val["description"]), ""])
    rows = normalise_metrics(val.get("metrics"))
    if rows:
        parts.extend(["| metric | value | notes |", "|---|---|---|"])
        for r in rows:
            parts.append(f"| {r['name']} | {_fmt_value(r.get('value'))} | {r.get('description', '') or ''} |")
        parts.append("")
    else:
        parts.extend(["No accuracy metrics were supplied for this model. Validate it on annotated images "
                      "from your own experiment before use.", ""])
    if reproducibility:
        parts.extend(["Reproducibility: every weights format was run on several input sizes and compared with "
                      "the original PyTorch module at export time (elementwise "
                      "`|difference| <= atol + rtol * |expected|`).", "",
                      "| weights format | max abs difference | rtol | atol |", "|---|---|---|---|"])
        for r in reproducibility:
            parts.append(f"| {r['format']} | {r['max_abs_diff']:.3g} | {r['rtol']:.3g} | {r['atol']:.3g} |")
        parts.append("")

    if cite:
        parts.extend(["# Citations", ""])
        for c in cite:
            ref = c.get("doi") and f"https://doi.org/{c['doi']}" or c.get("url") or ""
            parts.append(f"- {c['text']}" + (f" {ref}" if ref else ""))
        parts.append("")
    parts.extend(["# Authors and license", "", f"{', '.join(authors)}. License: {license}.", ""])
    return "\n".join(parts)
