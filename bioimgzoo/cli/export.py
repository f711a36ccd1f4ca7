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
                   "architecture", "architecture_kwargs", "format_version"}


def _json_option(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ExportError(f"{what} is not valid JSON ({e.msg} at position {e.pos}): {text!r}") from e


def _load_factory(spec: str):
    """``pkg.mod:Callable`` or ``path/file.py:Callable`` -> (the callable, the architecture option, a folder to
    remove after the export or None).

    A ``.py`` file is never run: the callable is extracted from its source with the imports, helpers and
    constants it uses (a training script would otherwise train again), and only that extract is loaded.
    """
    import importlib

    if ":" not in spec:
        raise ExportError(f"--module {spec!r}: write 'package.module:Callable' or 'path/to/file.py:Callable'")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        from ..exporter import SourceUnavailable, extract_from_file
        from ..trust import load_callable_from_file

        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ExportError(f"--module: {path} does not exist")
        try:
            extracted = extract_from_file(path, name)
        except SourceUnavailable as e:
            raise ExportError(f"--module {spec!r}: {name} cannot be taken from {path.name} without running the "
                              f"file: {e}. Move it to a module of its own") from e
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="bioimgzoo-cli-arch-"))
        arch = folder / f"{path.stem}_architecture.py"
        arch.write_text(extracted.text, encoding="utf-8")
        try:
            factory = load_callable_from_file(arch, name)
        except Exception as e:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise ExportError(f"--module {spec!r}: the definition of {name} taken from {path.name} does not load "
                              f"on its own ({type(e).__name__}: {e})") from e
        return factory, {"callable": name, "source": str(path)}, folder
    try:
        # like `python -m`, resolve modules of the project the command runs in
        import os
        import sys

        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(where)
    except Exception as e:
        raise ExportError(f"--module {spec!r}: cannot import {where} ({type(e).__name__}: {e})") from e
    try:
        return getattr(module, name), spec, None
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


def _example_layout(array, path: Path, axes: str | None) -> tuple[Any, str, str | None]:
    """The example with batch and channel axes added where an image lacks them: (array, axes, what was done).

    A 2D image is ``yx``; a 3D TIFF is ``zyx``, a 3D PNG (or a TIFF whose last axis holds 3-4 values) is
    ``yxc``; ``--axes`` names what the file holds (``yx``, ``zyx``, ``cyx``, ...).  Batch and channel axes
    are added in front, channels moved before the spatial axes (``bcyx``, ``bczyx``).
    """
    import numpy as np

    image = path.suffix.lower() in (".tif", ".tiff", ".png", ".jpg", ".jpeg")
    if axes is None:
        if not image or array.ndim not in (2, 3):
            return array, "bcyx", None
        if array.ndim == 2:
            axes = "yx"
        elif path.suffix.lower() not in (".tif", ".tiff"):
            axes = "yxc"  # PNG/JPEG: colour channels last
        else:
            axes = "yxc" if array.shape[-1] in (3, 4) and array.shape[0] > 4 else "zyx"
    axes = axes.lower()
    if len(axes) != array.ndim:
        raise ExportError(f"--axes {axes}: {len(axes)} letters for an example with {array.ndim} axes "
                          f"{tuple(array.shape)}")
    if set(axes) - set("bctzyx") or len(set(axes)) != len(axes):
        raise ExportError(f"--axes {axes}: use each of the letters b, c, z, y, x at most once")
    added = []
    if "c" not in axes:
        array, axes = array[None], "c" + axes
        added.append("channel")
    if "b" not in axes:
        array, axes = array[None], "b" + axes
        added.append("batch")
    target = "bc" + "".join(a for a in axes if a not in "bc")
    if axes != target:
        array = np.transpose(array, [axes.index(a) for a in target])
    what = None
    if added or axes != target:
        what = (f"--example {path.name}: {tuple(np.shape(array))} as {target}"
                + (f" (added {' and '.join(reversed(added))} axes of size 1)" if added else "")
                + (f" (moved the channel axis from {axes})" if axes != target and not added else ""))
    return np.ascontiguousarray(array), target, what


@click.command("export")
@click.option("--card", "card_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Model card YAML (metadata, README sections; its export: section may name everything else).")
@click.option("--module", "module_spec", help="Factory of the network: package.module:Callable or file.py:Callable.")
@click.option("--kwargs", "kwargs_json", help="JSON object of keyword arguments for the factory.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="State dict (.pt).")
@click.option("--example", type=click.Path(dir_okay=False, path_type=Path),
              help="Example input (.npy, .tif, .png); becomes the test input.")
@click.option("--axes", help="Axes of the example, e.g. bcyx (default bcyx; a 2D/3D TIFF or PNG: yx, zyx or yxc, "
                             "batch and channel axes added).")
@click.option("--name", help="Model name.")
@click.option("--description", help="One-paragraph description.")
@click.option("--author", "authors", multiple=True, help="Author name (repeat for several); required here or in "
                                                        "the card.")
@click.option("--maintainer", "maintainers", multiple=True, metavar="NAME:GITHUB_USER",
              help="Maintainer with GitHub user (repeat); default: the authors with a github_user in the card.")
@click.option("--task", help="What the model does, e.g. semantic-segmentation, denoising (sets BiaPy's workflow tag).")
@click.option("--license", "license_", help="SPDX license id (default CC-BY-4.0).")
@click.option("--preprocessing", help="Preprocessing: a JSON list of steps ('[{\"id\": \"zero_mean_unit_variance\", "
                                     "\"kwargs\": {\"axes\": [\"x\", \"y\"]}}]') or op ids separated by commas "
                                     "(zero_mean_unit_variance).")
@click.option("--postprocessing", help="Postprocessing: a JSON list of steps or op ids separated by commas (sigmoid).")
@click.option("--format-version", "format_version",
              help="The 0.5 format to write (default: the oldest that carries the package, which every deployed "
                   "reader reads; 'latest' for bioimageio.spec's newest).")
@click.option("--weights", help="Comma-separated formats (default pytorch_state_dict,torchscript,onnx).")
@click.option("--test/--no-test", "run_test", default=None,
              help="Also run bioimageio.core's test_model before writing the package.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The .zip to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--progress/--no-progress", default=None, help="Show the slow steps on stderr [default: on a terminal].")
def export_cmd(card_path, module_spec, kwargs_json, checkpoint, example, axes, name, description, authors,
               maintainers, task, license_, preprocessing, postprocessing, format_version, weights, run_test, out,
               as_json, progress):
    """Export a trained PyTorch network as a bioimage.io model package (.zip)."""
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
    axes = axes or section.get("axes")
    for key in ("module", "kwargs", "checkpoint", "example", "out", "axes"):
        section.pop(key, None)
    if module_spec is None:
        raise ExportError("name the network: --module package.module:Factory (or export: module: in the card)")
    if example is None:
        raise ExportError("give an example input: --example image.npy (or export: example: in the card)")
    if out is None:
        raise ExportError("give the package to write: --out model.zip (or export: out: in the card)")
    if not authors and not card.get("authors"):  # a package names people, never the login name
        raise ExportError("name the authors: --author 'First Last' (repeat for several), or authors: in --card")
    if not isinstance(factory_kwargs, dict):
        raise ExportError("--kwargs must be a JSON object")
    if module_spec.split(":")[0].endswith(".py") and base is not None and not Path(module_spec).is_absolute() \
            and not Path(module_spec.split(":")[0]).exists():
        module_spec = f"{base / module_spec.split(':')[0]}:{module_spec.rsplit(':', 1)[1]}"

    if format_version:
        section["format_version"] = format_version
    factory, architecture, extracted_to = _load_factory(module_spec)
    try:
        _export(factory, architecture, module_spec, factory_kwargs, checkpoint, example, axes, section, card,
                maintainers, task, progress, preprocessing, postprocessing, weights, run_test, out, name,
                description, authors, license_, as_json)
    finally:  # the extracted definition was needed while exporting (TorchScript reads its source)
        if extracted_to is not None:
            import shutil

            shutil.rmtree(extracted_to, ignore_errors=True)


def _export(factory, architecture, module_spec, factory_kwargs, checkpoint, example, axes, section, card,
            maintainers, task, progress, preprocessing, postprocessing, weights, run_test, out, name, description,
            authors, license_, as_json) -> None:
    """Build the network, load the checkpoint and the example, export; print the result."""
    from ..exporter import export_package

    try:
        module = factory(**factory_kwargs)
    except Exception as e:
        raise ExportError(f"calling {module_spec}(**{factory_kwargs}) failed: {type(e).__name__}: {e}") from e
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"{module_spec} returned a {type(module).__name__}, not a torch.nn.Module")
    if checkpoint is None:
        click.secho(f"WARNING: no --checkpoint given: exporting {module_spec} with the random weights it was "
                    "built with. Pass --checkpoint model.pt (torch.save(model.state_dict(), 'model.pt')) to "
                    "share the trained network.", fg="red", bold=True, err=True)
    else:
        state = _load_state_dict(checkpoint)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ExportError(f"--checkpoint {checkpoint} does not fit {module_spec}({factory_kwargs}): "
                              f"{str(e).splitlines()[0]} ... (check --kwargs)") from e
    example_array, axes, layout = _example_layout(_load_example(example), example, axes)
    if layout:
        click.echo(layout, err=True)

    options = dict(section)
    options.setdefault("architecture", architecture)
    if maintainers:
        options["maintainers"] = [_maintainer(m) for m in maintainers]
    if task:
        options["task"] = task
    if progress is not None:
        options["progress"] = progress
    options.setdefault("architecture_kwargs", factory_kwargs)
    if preprocessing is not None:
        options["preprocessing"] = _steps_option(preprocessing, "--preprocessing")
    if postprocessing is not None:
        options["postprocessing"] = _steps_option(postprocessing, "--postprocessing")
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
    for w in result.warnings:
        if w.startswith("input ") and "no normalisation is declared" in w:
            click.secho(f"WARNING: {w}", fg="yellow", err=True)


def _steps_option(text: str, option: str) -> Any:
    """``--preprocessing``: a JSON list (or mapping by tensor id) of steps, or op ids separated by commas."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        return _json_option(stripped, option)
    ids = [t.strip() for t in stripped.split(",") if t.strip()]
    if not ids or not all(t.replace("_", "").isalnum() for t in ids):
        raise ExportError(f"{option} {text!r}: give a JSON list of steps ('[{{\"id\": \"sigmoid\"}}]') or op ids "
                          "separated by commas (sigmoid)")
    return [{"id": t} for t in ids]


def _maintainer(text: str) -> dict:
    name, sep, user = text.rpartition(":")
    if not sep or not name.strip() or not user.strip():
        raise ExportError(f"--maintainer {text!r}: write NAME:GITHUB_USER, e.g. 'Ada Lovelace:ada'")
    return {"name": name.strip(), "github_user": user.strip()}


COMMANDS = [export_cmd]
