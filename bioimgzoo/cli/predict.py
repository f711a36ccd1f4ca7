"""``bioimgzoo predict``: run a model on image files."""

from __future__ import annotations

import click

from ._options import _hub_kwargs, _hub_opts, _parse_tile, _writable_out_dir


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


COMMANDS = [predict]
