"""``bioimgzoo demo``: the whole flow on synthetic data, in a few minutes on a laptop."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", "out_dir", default="bioimgzoo-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the package, predictions, check results and overview.")
@click.option("--steps", type=int, default=None, help="Training steps (default: enough for IoU >= 0.8).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--size", "big_size", type=int, default=None, help="Side of the image predicted with tiling (2048).")
def demo(out_dir, steps, device, big_size):
    """Train a nuclei U-Net on synthetic images, export and check it, publish it in a local zoo,
    load it back by id and predict a 2048x2048 image with tiling."""
    from ..train.demo import run_demo

    result = run_demo(out_dir, steps=steps, device=device, big_size=big_size, progress=True)
    click.echo(result.summary())


COMMANDS = [demo]
