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
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--weights", default=None, help="Weight format: onnx, torchscript or pytorch_state_dict.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--axes", default=None, help="Layout of the images, e.g. yx, cyx, zyx (default: from the file).")
@click.option("--tile", default=None, help="Window size: 512, or per axis y=256,x=512 (default: automatic).")
@click.option("--halo", type=int, default=None, help="Input pixels dropped at inner window edges (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Windows per engine call (default: automatic).")
@click.option("--format", "fmt", type=click.Choice(["tif", "npy"]), default=None,
              help="Output file type (default: tif, npy for .npy inputs).")
@click.option("--trust-code", is_flag=True, help="Allow running Python code shipped in the package.")
@_hub_opts
def predict(source, inputs, out_dir, weights, device, axes, tile, halo, batch_size, fmt, trust_code, hub, offline):
    """Run model SOURCE (folder, rdf.yaml, .zip, URL or zoo id) on INPUTS (files, folders, globs).

    Writes OUT/{image}_{output_id}.tif for every image and output.
    """
    import logging

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .. import load
    from ..io import find_images, output_path, read_image, write_image
    from ..runtime import engines

    files = find_images(inputs)
    logging.getLogger("bioimgzoo").setLevel(logging.WARNING)
    model = load(source, weights=weights, device=device, trust_code=trust_code, **_hub_kwargs(hub, offline))
    if weights is None:
        avail = engines.available_formats(model.descr)
        click.echo(f"Using {model.weights_format} weights on {model.device} "
                   f"(available: {', '.join(avail)}; choose with --weights).", err=True)
    tile_arg = _parse_tile(tile)
    out_root = Path(out_dir)

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
                from ..runtime.axes import parse_axes

                yield xr.DataArray(array, dims=parse_axes(ax, ndim=array.ndim, what=f"image {f.name}"))

    written = []
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True, disable=None) as bar:
        task = bar.add_task("Predicting", total=len(files))
        results = model.iter_predict(Images(), tile=tile_arg, halo=halo, batch_size=batch_size)
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
    from ..runtime.specs import SizeRef
    from ..runtime.tiling import AxisSizes

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

    from ..package import open_package
    from ..runtime import engines
    from ..runtime.specs import tensor_specs

    pkg = open_package(source, **_hub_kwargs(hub, offline))
    d = pkg.descr
    ins, outs = tensor_specs(d)
    con = Console(soft_wrap=True, highlight=False)
    con.print(f"[bold]{d.name}[/bold]  (format {pkg.original_format_version}"
              f"{', read as 0.5' if not pkg.original_format_version.startswith('0.5') else ''}; {pkg.source.name})")
    if d.description:
        con.print(str(d.description))
    for title, specs, attr in (("Inputs", ins, "preprocessing"), ("Outputs", outs, "postprocessing")):
        con.print(f"\n[bold]{title}[/bold]")
        for spec in specs:
            con.print(f"  [cyan]{spec.id}[/cyan] ({spec.dtype}): " + ", ".join(_axis_text(spec, a) for a in spec.axes))
            con.print(f"    {attr}: {_proc_text(getattr(spec, attr))}")
    con.print("\n[bold]Weights[/bold]")
    for fmt, entry in d.weights:
        if entry is None:
            continue
        details = [f"{key}={getattr(entry, key)}" for key in ("opset_version", "pytorch_version", "parent")
                   if getattr(entry, key, None) is not None]
        runnable = "" if fmt in engines.SUPPORTED else " (not runnable by bioimgzoo)"
        con.print(f"  {fmt}{runnable}: {entry.source}" + (f" ({', '.join(details)})" if details else ""))
    avail = engines.available_formats(d)
    if avail:
        con.print(f"Default weights: {avail[0]} (order: {', '.join(engines.WEIGHTS_PRIORITY)}; choose with --weights)")
    con.print("Sizes: 'y=64+k*16' accepts 64, 80, 96, ...; larger images are tiled automatically "
              "(predict --tile to choose); outputs drop 'halo' pixels at inner tile edges.")


COMMANDS = [predict, info]
