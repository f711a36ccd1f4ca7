"""What a ``bioimgzoo predict`` run takes: its input files, and what ``--labels`` reads.

Shared by the plain-files, cluster and OME-Zarr paths of the command.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["input_files"]


def input_files(inputs: tuple[str, ...], out_root: Path, package) -> list[Path]:
    """The images to predict: what folders and globs find, less what bioimgzoo itself wrote (said in one line)."""
    from ..descr.tensors import tensor_specs
    from ..io import find_images

    _, outs = tensor_specs(package.descr)
    skipped: list = []
    files = find_images(inputs, out_dir=out_root, output_keys=[o.id for o in outs] + ["labels"], skipped=skipped)
    if skipped:
        shown = ", ".join(str(f) for f, _ in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3
                                                               else "")
        reasons = sorted({why.split(" ")[0] for _, why in skipped})
        why = " or ".join({"inside": "inside the output folder", "named": "named as its outputs"}[r]
                          for r in reasons)
        click.echo(f"Left out {len(skipped)} file(s) written by bioimgzoo ({why}): {shown}", err=True)
    return files
