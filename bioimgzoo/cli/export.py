"""``bioimgzoo export``: package a trained PyTorch network for the zoo.

Two ways to name the network:

* ``bioimgzoo export --module pkg.mod:Factory [--kwargs JSON] --checkpoint ckpt.pt
  --example ex.npy --axes bcyx --name NAME --description TEXT --author NAME --out model.zip``
* ``bioimgzoo export --card model_cards/x.yaml`` where the card's ``export:`` section names
  ``module``, ``kwargs``, ``checkpoint``, ``example``, ``axes``, ``out`` (paths relative to the card);
  command-line options win over the card.

Prints what probing found, the weights checks and the DeepImageJ rules table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import ExportError

_EXPORT_SECTION = {"module", "kwargs", "checkpoint", "example", "axes", "out", "preprocessing", "postprocessing",
                   "weights", "sizes", "halo", "output_axes", "channel_names", "input_ids", "output_ids",
                   "opset_version", "tolerance", "test", "input_description", "output_description",
                   "architecture", "architecture_kwargs"}


def _json_option(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ExportError(f"{what} is not valid JSON ({e.msg} at position {e.pos}): {text!r}") from e


def _load_factory(spec: str):
    """``pkg.mod:Callable`` or ``path/file.py:Callable`` -> the callable."""
    import importlib
    import importlib.util

    if ":" not in spec:
        raise ExportError(f"--module {spec!r}: write 'package.module:Callable' or 'path/to/file.py:Callable'")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            if not path.is_file():
                raise ExportError(f"--module: {path} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"_bioimgzoo_cli_{path.stem}", str(path))
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            # like `python -m`, resolve modules of the project the command runs in
            import os
            import sys

            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"--module {spec!r}: cannot import {where} ({type(e).__name__}: {e})") from e
    try:
        return getattr(module, name)
    except AttributeError as e:
        raise ExportError(f"--module {spec!r}: {where} has no {name!r}") from e


def _load_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ExportError(f"--checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExportError(f"--checkpoint {path} cannot be read as tensors only ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}): save module.state_dict() with torch.save"
                          ) from e
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return state
    raise ExportError(f"--checkpoint {path} holds no state dict (a mapping of parameter names to tensors, "
                      "directly or under 'model' / 'state_dict')")


def _load_example(path: Path):
    import numpy as np

    if not path.is_file():
        raise ExportError(f"--example {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        import imageio.v3 as iio

        return iio.imread(path)
    except Exception as e:
        raise ExportError(f"--example {path} cannot be read ({type(e).__name__}: {e})") from e


@click.command("export")
@click.option("--card", "card_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Model card YAML (metadata, README sections; its export: section may name everything else).")
@click.option("--module", "module_spec", help="Factory of the network: package.module:Callable or file.py:Callable.")
@click.option("--kwargs", "kwargs_json", help="JSON object of keyword arguments for the factory.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="State dict (.pt).")
@click.option("--example", type=click.Path(dir_okay=False, path_type=Path),
              help="Example input (.npy, .tif, .png); becomes the test input.")
@click.option("--axes", help="Axes of the example, e.g. bcyx (default bcyx).")
@click.option("--name", help="Model name.")
@click.option("--description", help="One-paragraph description.")
@click.option("--author", "authors", multiple=True, help="Author name (repeat for several).")
@click.option("--license", "license_", help="SPDX license id (default CC-BY-4.0).")
@click.option("--preprocessing", help="JSON list of preprocessing steps.")
@click.option("--postprocessing", help="JSON list of postprocessing steps.")
@click.option("--weights", help="Comma-separated formats (default pytorch_state_dict,torchscript,onnx).")
@click.option("--test/--no-test", "run_test", default=None,
              help="Also run bioimageio.core's test_model before writing the package.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The .zip to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_cmd(card_path, module_spec, kwargs_json, checkpoint, example, axes, name, description, authors,
               license_, preprocessing, postprocessing, weights, run_test, out, as_json):
    """Export a trained PyTorch network as a bioimage.io model package (.zip)."""
    from ..exporter import export_package
    from ..exporter.card import load_card

    card, base = load_card(card_path) if card_path else ({}, None)
    section = dict(card.pop("export", None) or {})
    unknown = sorted(set(section) - _EXPORT_SECTION)
    if unknown:
        raise ExportError(f"{card_path}: unknown key(s) {unknown} in export:; known: {sorted(_EXPORT_SECTION)}")

    def rel(value: Any) -> Path | None:
        if value is None:
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() or base is None else base / p

    module_spec = module_spec or section.get("module")
    factory_kwargs = _json_option(kwargs_json, "--kwargs") if kwargs_json else section.get("kwargs") or {}
    checkpoint = checkpoint or rel(section.get("checkpoint"))
    example = example or rel(section.get("example"))
    out = out or rel(section.get("out"))
    axes = axes or section.get("axes") or "bcyx"
    for key in ("module", "kwargs", "checkpoint", "example", "out", "axes"):
        section.pop(key, None)
    if module_spec is None:
        raise ExportError("name the network: --module package.module:Factory (or export: module: in the card)")
    if example is None:
        raise ExportError("give an example input: --example image.npy (or export: example: in the card)")
    if out is None:
        raise ExportError("give the package to write: --out model.zip (or export: out: in the card)")
    if not isinstance(factory_kwargs, dict):
        raise ExportError("--kwargs must be a JSON object")
    if module_spec.split(":")[0].endswith(".py") and base is not None and not Path(module_spec).is_absolute() \
            and not Path(module_spec.split(":")[0]).exists():
        module_spec = f"{base / module_spec.split(':')[0]}:{module_spec.rsplit(':', 1)[1]}"

    factory = _load_factory(module_spec)
    try:
        module = factory(**factory_kwargs)
    except Exception as e:
        raise ExportError(f"calling {module_spec}(**{factory_kwargs}) failed: {type(e).__name__}: {e}") from e
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"{module_spec} returned a {type(module).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        state = _load_state_dict(checkpoint)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ExportError(f"--checkpoint {checkpoint} does not fit {module_spec}({factory_kwargs}): "
                              f"{str(e).splitlines()[0]} ... (check --kwargs)") from e
    example_array = _load_example(example)

    options = dict(section)
    options.setdefault("architecture", module_spec)
    options.setdefault("architecture_kwargs", factory_kwargs)
    if preprocessing is not None:
        options["preprocessing"] = _json_option(preprocessing, "--preprocessing")
    if postprocessing is not None:
        options["postprocessing"] = _json_option(postprocessing, "--postprocessing")
    if weights:
        options["weights"] = [w.strip() for w in weights.split(",") if w.strip()]
    if run_test is not None:
        options["test"] = run_test
    result = export_package(module, example_array, out, name=name, description=description,
                            authors=list(authors) or None, license=license_, axes=axes,
                            card=card or None, **options)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(result.summary())


COMMANDS = [export_cmd]
