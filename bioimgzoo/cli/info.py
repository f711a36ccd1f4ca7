"""``bioimgzoo info``: what a model takes, gives and needs, read from its description.

Everything shown is computed from the package (:func:`describe_package`):
the sizes each input accepts (fixed, minimum + step, or following another
tensor, with examples), halos, output sizes, license, citations, authors,
version, weights (files and sizes), processing, and, when the validation
room provides them, each consumer tool's verdict.  ``--json`` prints the
same facts for scripts.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ._messages import cli_spelling
from ._options import hub_kwargs, hub_opts


# --------------------------------------------------------------------------- facts
def _size_facts(spec, a) -> dict:
    """One axis of a tensor: its kind, and the sizes it accepts (or how its size follows an input)."""
    from ..descr.sizes import AxisSizes, SizeRef

    sz = spec.sizes.get(a.id)
    fact: dict[str, Any] = {"id": a.id, "kind": a.kind}
    if a.kind == "batch":
        fact["size"] = a.size  # None: any
    elif a.kind == "channel":
        fact["size"] = sz.min if isinstance(sz, AxisSizes) else len(spec.channel_names) or None
        if spec.channel_names:
            fact["channel_names"] = list(spec.channel_names)
    elif isinstance(sz, AxisSizes):
        fact.update({"min": sz.min, "step": sz.step})
        fact["examples"] = [sz.min] if sz.step == 0 else [sz.min + k * sz.step for k in range(4)]
    elif isinstance(sz, SizeRef):
        fact["reference"] = {"tensor": sz.tensor_id, "axis": sz.axis_id, "offset": sz.offset,
                             "scale": spec.scale.get(a.id, 1.0)}
    else:
        fact["size"] = None  # data dependent
    if spec.halo.get(a.id):
        fact["halo"] = spec.halo[a.id]
    return fact


def _size_text(fact: dict, ref_scales: dict) -> str:
    """``y: 512 only``, ``y: 64 + k*16 (64, 80, 96, ...)``, ``y: = raw.y``."""
    aid, kind = fact["id"], fact["kind"]
    if kind == "batch":
        return "batch: " + ("1 only" if fact.get("size") == 1 else "any")
    if kind == "channel":
        names = fact.get("channel_names")
        n = fact.get("size")
        return f"channel: {n if n is not None else '?'}" + (f" ({', '.join(names)})" if names else "")
    if "min" in fact:
        if fact["step"] == 0:
            text = f"{aid}: {fact['min']} only"
        else:
            text = (f"{aid}: {fact['min']} + k*{fact['step']} "
                    f"({', '.join(map(str, fact['examples']))}, ...)")
    elif "reference" in fact:
        r = fact["reference"]
        # size = referenced size * (referenced axis scale / this axis' scale) + offset
        factor = ref_scales.get((r["tensor"], r["axis"]), 1.0) / (r["scale"] or 1.0)
        text = f"{aid}: = {r['tensor']}.{r['axis']}"
        text += f" x {factor:g}" if factor != 1 else ""
        text += f" {r['offset']:+d}" if r["offset"] else ""
    else:
        text = f"{aid}: depends on the data"
    if fact.get("halo"):
        text += f" (halo {fact['halo']}: dropped at inner tile edges)"
    return text


def _proc_text(descrs) -> list[str]:
    parts = []
    for p in descrs:
        kw = getattr(p, "kwargs", None)
        args = ""
        if kw is not None:
            d = {k: v for k, v in kw.model_dump(exclude_unset=False).items() if v is not None}
            args = "(" + ", ".join(f"{k}={v}" for k, v in d.items()) + ")"
        parts.append(f"{p.id}{args}")
    return parts


def _file_size(pkg, rel: str) -> int | None:
    """Bytes of a package file without downloading it (None when only a download would tell)."""
    import zipfile

    from ..package import FolderSource, ZipSource

    src = pkg.source
    try:
        if isinstance(src, FolderSource):
            return (src.root / rel).stat().st_size
        if isinstance(src, ZipSource):
            with zipfile.ZipFile(src.path) as zf:
                for name in zf.namelist():
                    if name == rel or name.endswith("/" + rel):
                        return zf.getinfo(name).file_size
        snapshot = getattr(src, "snapshot_dir", None)
        if snapshot is not None and (snapshot / rel).is_file():
            return (snapshot / rel).stat().st_size
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return None


def _consumer_verdicts(pkg) -> dict | None:
    """Each consumer tool's verdict, from the description alone (static rules: nothing is downloaded)."""
    from ..validation.consumers import consumer_verdicts

    # the deployed readers run where their environments are built (validate builds them): info downloads nothing
    verdicts = consumer_verdicts(pkg, static=True, build_readers=False)
    out = {}
    for tool, v in verdicts.items():
        out[str(tool)] = {"status": str(getattr(v, "status", v)),
                          "failed_rules": [str(r) for r in (getattr(v, "failed_rules", None) or [])]}
        if tool == "readers":
            out[str(tool)]["readers"] = [{"reader": f.details.get("reader"), "version": f.details.get("version"),
                                          "status": f.status, "field": f.details.get("field", ""),
                                          "message": f.message} for f in v.findings]
    return out


def describe_package(pkg) -> dict:
    """Everything ``info`` shows, as plain data (what ``--json`` prints)."""
    from ..descr.tensors import tensor_specs
    from ..descr.weights import RUN_ORDER, TENSORFLOW, runnable_formats
    from ..runtime.receptive_field import tiling_note
    from ..runtime.tf_weights import route

    d = pkg.descr
    ins, outs = tensor_specs(d)
    ref_scales = {(t.id, a): s for t in ins for a, s in t.scale.items()}
    cites = [{"text": str(c.text), "doi": str(c.doi) if getattr(c, "doi", None) else None,
              "url": str(c.url) if getattr(c, "url", None) else None} for c in (d.cite or [])]
    authors = [{"name": str(a.name), "affiliation": getattr(a, "affiliation", None),
                "orcid": str(a.orcid) if getattr(a, "orcid", None) else None} for a in (d.authors or [])]
    weights = []
    for fmt, entry in d.weights:
        if entry is None:
            continue
        rel = str(entry.source)
        details = {key: str(getattr(entry, key)) for key in ("opset_version", "pytorch_version", "parent")
                   if getattr(entry, key, None) is not None}
        if fmt in TENSORFLOW:  # which path a prediction takes: the cached ONNX conversion, or converting first
            details["runs_as"] = route(pkg, fmt)
        weights.append({"format": fmt, "file": rel, "bytes": _file_size(pkg, rel), "runnable": fmt in RUN_ORDER,
                        **details})

    def tensor(spec, processing: str) -> dict:
        return {"id": spec.id, "dtype": spec.dtype, "description": spec.description,
                "axes": [_size_facts(spec, a) for a in spec.axes],
                processing: _proc_text(getattr(spec, processing))}

    version = getattr(d, "version", None)
    facts = {
        "name": str(d.name), "id": str(d.id) if getattr(d, "id", None) else None,
        "version": str(version) if version is not None else None,
        "format_version": pkg.original_format_version, "source": pkg.source.name,
        "description": str(d.description or ""), "license": str(d.license) if d.license else None,
        "authors": authors, "cite": cites,
        "inputs": [tensor(t, "preprocessing") for t in ins], "outputs": [tensor(t, "postprocessing") for t in outs],
        "weights": weights, "default_weights": (runnable_formats(d) or [None])[0],
        "consumers": _consumer_verdicts(pkg),
        "warnings": list(pkg.warnings), "tiling": tiling_note(pkg),
    }
    facts["_ref_scales"] = {f"{k[0]}.{k[1]}": v for k, v in ref_scales.items()}
    return facts


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "size unknown until downloaded"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


# --------------------------------------------------------------------------- command
@click.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON (for scripts).")
@hub_opts
def info(source, as_json, hub, offline):
    """Show a model's inputs (valid sizes), outputs, halo, weights, processing, license and citation."""
    from ..package import open_package

    with cli_spelling():
        pkg = open_package(source, **hub_kwargs(hub, offline))
        facts = describe_package(pkg)
    if as_json:
        facts.pop("_ref_scales", None)
        click.echo(json.dumps(facts, indent=1, default=str))
        return
    _print(facts, pkg)


def _print(f: dict, pkg) -> None:
    from rich.console import Console

    from .._text import rich_safe
    from ..descr.weights import RUN_ORDER

    con = Console(soft_wrap=True, highlight=False)
    ref_scales = {tuple(k.split(".", 1)): v for k, v in f.pop("_ref_scales").items()}

    def say(text: str = "", *, markup: str = "") -> None:
        # every text below comes from the package's author: shown escaped, never as markup or control codes
        con.print(f"{markup}{rich_safe(text)}{'[/]' if markup else ''}")

    fmt = f["format_version"]
    head = f"{f['name']}"
    con.print(f"[bold]{rich_safe(head, single_line=True)}[/bold]  (format {rich_safe(fmt)}"
              f"{', read as 0.5' if not fmt.startswith('0.5') else ''}; {rich_safe(f['source'], single_line=True)})")
    if f["description"]:
        say(f["description"])
    say(f"version: {f['version'] or 'not given'}" + (f"   id: {f['id']}" if f["id"] else ""))
    say(f"license: {f['license'] or 'not given'}")
    if f["authors"]:
        say("authors: " + "; ".join(a["name"] + (f" ({a['affiliation']})" if a.get("affiliation") else "")
                                    for a in f["authors"]))
    for c in f["cite"]:
        ref = f"doi:{c['doi']} (https://doi.org/{c['doi']})" if c["doi"] else (c["url"] or "")
        say(f"cite: {c['text']}" + (f"  {ref}" if ref else ""))
    for w in pkg.warnings:
        say(f"note: {w}")
    for title, key, proc in (("Inputs", "inputs", "preprocessing"), ("Outputs", "outputs", "postprocessing")):
        con.print(f"\n[bold]{title}[/bold]")
        for t in f[key]:
            con.print(f"  [cyan]{rich_safe(t['id'])}[/cyan] ({rich_safe(t['dtype'])})"
                      + (f": {rich_safe(t['description'], single_line=True)}" if t["description"] else ""))
            for a in t["axes"]:
                say(f"    {_size_text(a, ref_scales)}")
            say(f"    {proc}: {' -> '.join(t[proc]) or 'none'}")
    con.print("\n[bold]Weights[/bold]")
    for w in f["weights"]:
        details = [f"{k}={w[k]}" for k in ("opset_version", "pytorch_version", "parent") if k in w]
        runnable = "" if w["runnable"] else " (not runnable by bioimgzoo)"
        say(f"  {w['format']}{runnable}: {w['file']}, {_human_bytes(w['bytes'])}"
            + (f" ({', '.join(details)})" if details else ""))
        if w.get("runs_as"):
            say(f"    runs as: {w['runs_as']}")
    if f["default_weights"]:
        say(f"Default weights: {f['default_weights']} (order: {', '.join(RUN_ORDER)}; choose with --weights)")
    if f["consumers"] is not None:
        con.print("\n[bold]Consumer tools[/bold] (static rules)")
        for tool, v in f["consumers"].items():
            failed = f": fails {', '.join(v['failed_rules'])}" if v["failed_rules"] else ""
            say(f"  {tool}: {v['status']}{failed}")
            for r in v.get("readers", []):
                why = "" if r["status"] == "passed" else f" -- {r['message'][:160]}"
                say(f"    {r['reader']} ({r['version']}): {r['status']}{why}")
    if f.get("tiling"):
        say(f"\nTiling: {f['tiling']}")
    con.print("\nLarger images are tiled automatically with sizes from the list above (predict --tile to "
              "choose); smaller ones are padded to the minimum (a warning says by how much).")


COMMANDS = [info]
