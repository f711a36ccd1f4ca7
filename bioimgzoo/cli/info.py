"""``bioimgzoo info``: what a model takes, gives and needs."""

from __future__ import annotations

import click

from ._options import _hub_kwargs, _hub_opts


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


COMMANDS = [info]
