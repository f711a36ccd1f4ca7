"""``bioimgzoo convert``: add weight formats (ONNX, TorchScript) to an existing package."""

from __future__ import annotations

import click


@click.command("convert")
@click.argument("package")
@click.option("--to", "to", default="onnx,torchscript", show_default=True,
              help="Formats to add, comma-separated: onnx (from a state dict, TorchScript, or TensorFlow weights "
                   "with the tensorflow extra), torchscript (from a state dict).")
@click.option("-o", "--out", "out", required=True, help="The new package: a .zip file, else a folder.")
@click.option("--trust-code", is_flag=True, help="Allow running code the package names (a state-dict architecture).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def convert(package, to, out, trust_code, overwrite):
    """Add weight formats to PACKAGE (folder, rdf.yaml or .zip), each checked; everything else kept as it is."""
    from ..exporter.convert import convert_package

    click.echo(convert_package(package, out, to=to, trust_code=trust_code, overwrite=overwrite).summary())


COMMANDS = [convert]
