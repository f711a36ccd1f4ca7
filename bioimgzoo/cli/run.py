"""``bioimgzoo predict`` and ``bioimgzoo info``."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


def _parse_tile(value: str | None):
    """``512`` or ``y=256,x=512`` -> int or dict."""
    if not value:
        return None
    try:
        if "=" not in value:
            return int(value)
        out = {}
        for part in value.split(","):
            k, v = part.split("=")
            out[k.strip()] = int(v)
        return out
    except ValueError:
        raise InputError(f"--tile {value!r} is not understood: use one number (512) or per axis (y=256,x=512)")


def _writable_out_dir(out_dir: str) -> Path:
    """The -o folder, created and proven writable before any model is loaded or image predicted."""
    import os
    import tempfile

    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"-o {path} is a file, not a folder: name a folder for the outputs (it is created "
                         "if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a real write, not os.access: that misjudges read-only mounts, ACLs and root
        fd, probe = tempfile.mkstemp(prefix=".bioimgzoo-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"-o {path}: cannot write there ({e.strerror or e}): choose a folder you can "
                         "write to") from None
    return path


_HUB_OPTIONS = [
    click.option("--hub", default=None, help="Zoo server or mirror URL (default $BIOIMGZOO_HUB or bioimage.io)."),
    click.option("--offline", is_flag=True, default=None, help="Never touch the network; use the cache only."),
]


def _hub_opts(f):
    for opt in reversed(_HUB_OPTIONS):
        f = opt(f)
    return f


def _hub_kwargs(hub, offline) -> dict:
    out = {}
    if hub:
        out["hub"] = hub
    if offline:
        out["offline"] = True
    return out


@click.command()
@click.argument("source")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Output folder (created if missing).")
@click.option("--weights", default=None, help="Weight format: onnx, torchscript or pytorch_state_dict.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--axes", default=None, help="Layout of the images, e.g. yx, cyx, zyx (default: from the file).")
@click.option("--tile", default=None, help="Window size: 512, or per axis y=256,x=512 (default: automatic).")
@click.option("--halo", type=int, default=None, help="Input pixels dropped at inner window edges (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Windows per engine call (default: automatic).")
@click.option("--format", "fmt", type=click.Choice(["tif", "npy"]), default=None,
              help="Output file type (default: tif, npy for .npy inputs).")
@click.option("--nan-policy", type=click.Choice(["warn", "fail", "zero"]), default="warn", show_default=True,
              help="NaN/inf pixels: warn (statistics skip them), fail, or zero (replace by 0).")
@click.option("--trust-code", is_flag=True, help="Allow running Python code shipped in the package.")
@_hub_opts
def predict(source, inputs, out_dir, weights, device, axes, tile, halo, batch_size, fmt, nan_policy, trust_code,
            hub, offline):
    """Run model SOURCE (folder, rdf.yaml, .zip, URL or zoo id) on INPUTS (files, folders, globs).

    Writes OUT/{image}_{output_id}.tif for every image and output.
    """
    import logging

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .. import load
    from ..descr.weights import runnable_formats
    from ..io import find_images, output_path, read_image, write_image

    # every check of the command line before the model is loaded (a download) or anything predicted
    tile_arg = _parse_tile(tile)
    files = find_images(inputs)
    out_root = _writable_out_dir(out_dir)
    logging.getLogger("bioimgzoo").setLevel(logging.WARNING)
    model = load(source, weights=weights, device=device, trust_code=trust_code, **_hub_kwargs(hub, offline))
    if weights is None:
        avail = runnable_formats(model.descr)
        click.echo(f"Using {model.weights_format} weights on {model.device} "
                   f"(available: {', '.join(avail)}; choose with --weights).", err=True)

    class Images:
        """Re-iterable, so per-dataset statistics can take a first pass without holding every image."""

        def __iter__(self):
            return _read_all()

    def _read_all():
        import xarray as xr

        for f in files:
            array, file_axes = read_image(f)
            ax = axes or file_axes
            if ax is None:
                yield array
            else:
                from ..descr.axes import parse_axes

                yield xr.DataArray(array, dims=parse_axes(ax, ndim=array.ndim, what=f"image {f.name}"))

    written = []
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True, disable=None) as bar:
        task = bar.add_task("Predicting", total=len(files))
        results = model.iter_predict(Images(), tile=tile_arg, halo=halo, batch_size=batch_size,
                                     nan_policy=nan_policy, names=[f.name for f in files])
        for f, result in zip(files, results):
            outs = result if isinstance(result, dict) else {model.outputs[0].id: result}
            for oid, arr in outs.items():
                dims = tuple(arr.dims) if hasattr(arr, "dims") else model.output_axes(oid)
                dest = output_path(out_root, f, oid, fmt=fmt)
                write_image(dest, np.asarray(arr), axes=dims)
                written.append(dest)
            bar.advance(task)
    click.echo(f"Wrote {len(written)} file(s) for {len(files)} image(s) to {out_root}")


def _axis_text(spec, a) -> str:
    from ..descr.sizes import AxisSizes, SizeRef

    sz = spec.sizes.get(a.id)
    if a.kind == "batch":
        return "batch" + ("=1" if a.size == 1 else "")
    if a.kind == "channel":
        names = ",".join(spec.channel_names)
        return f"channel={sz.min}" + (f" ({names})" if names else "")
    if isinstance(sz, AxisSizes):
        text = f"{a.id}={sz.min}" if sz.step == 0 else f"{a.id}={sz.min}+k*{sz.step}"
    elif isinstance(sz, SizeRef):
        f = spec.scale.get(a.id, 1.0)
        text = f"{a.id}={sz.tensor_id}.{sz.axis_id}"
        text += f"*{1 / f:g}" if f != 1 else ""
        text += f"{sz.offset:+d}" if sz.offset else ""
    else:
        text = f"{a.id}=?"
    h = spec.halo.get(a.id)
    return text + (f" (halo {h})" if h else "")


def _proc_text(descrs) -> str:
    parts = []
    for p in descrs:
        kw = getattr(p, "kwargs", None)
        args = ""
        if kw is not None:
            d = {k: v for k, v in kw.model_dump(exclude_unset=False).items() if v is not None}
            args = "(" + ", ".join(f"{k}={v}" for k, v in d.items()) + ")"
        parts.append(f"{p.id}{args}")
    return " -> ".join(parts) or "none"


@click.command()
@click.argument("source")
@_hub_opts
def info(source, hub, offline):
    """Show a model's inputs, outputs, axes, valid sizes, halo, weights and processing."""
    from rich.console import Console

    from .._text import rich_safe
    from ..package import open_package
    from ..descr.weights import RUNNABLE, runnable_formats
    from ..descr.tensors import tensor_specs

    pkg = open_package(source, **_hub_kwargs(hub, offline))
    d = pkg.descr
    ins, outs = tensor_specs(d)
    con = Console(soft_wrap=True, highlight=False)
    # every text below comes from the package's author: shown escaped, never as markup or control codes
    con.print(f"[bold]{rich_safe(d.name, single_line=True)}[/bold]  (format {rich_safe(pkg.original_format_version)}"
              f"{', read as 0.5' if not pkg.original_format_version.startswith('0.5') else ''}; "
              f"{rich_safe(pkg.source.name, single_line=True)})")
    if d.description:
        con.print(rich_safe(d.description))
    for title, specs, attr in (("Inputs", ins, "preprocessing"), ("Outputs", outs, "postprocessing")):
        con.print(f"\n[bold]{title}[/bold]")
        for spec in specs:
            axes_text = ", ".join(_axis_text(spec, a) for a in spec.axes)
            con.print(f"  [cyan]{rich_safe(spec.id)}[/cyan] ({rich_safe(spec.dtype)}): {rich_safe(axes_text)}")
            con.print(f"    {attr}: {rich_safe(_proc_text(getattr(spec, attr)))}")
    con.print("\n[bold]Weights[/bold]")
    for fmt, entry in d.weights:
        if entry is None:
            continue
        details = [f"{key}={getattr(entry, key)}" for key in ("opset_version", "pytorch_version", "parent")
                   if getattr(entry, key, None) is not None]
        runnable = "" if fmt in RUNNABLE else " (not runnable by bioimgzoo)"
        line = f"  {fmt}{runnable}: {entry.source}" + (f" ({', '.join(details)})" if details else "")
        con.print(rich_safe(line, single_line=True))
    avail = runnable_formats(d)
    if avail:
        con.print(f"Default weights: {avail[0]} (order: {', '.join(RUNNABLE)}; choose with --weights)")
    con.print("Sizes: 'y=64+k*16' accepts 64, 80, 96, ...; larger images are tiled automatically "
              "(predict --tile to choose); outputs drop 'halo' pixels at inner tile edges.")


COMMANDS = [predict, info]
