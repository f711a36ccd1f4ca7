"""``bioimgzoo pull | search | cache | mirror``: the zoo client on the command line.

Names, ids, descriptions, versions and file names printed here come from the
hub or from rdfs, i.e. from strangers: they pass through
:func:`~bioimgzoo._text.terminal_safe` (plain output) or
:func:`~bioimgzoo._text.rich_safe` (rich tables), so escape sequences show
as ``\x1b`` and rich markup such as ``[link=...]`` or a stray ``[/]`` is
printed, not interpreted.
"""

from __future__ import annotations

import sys

import click

from .._text import rich_safe, terminal_safe


def _t(text: object) -> str:
    """Untrusted text for plain (click) output, on one line."""
    return terminal_safe(text, single_line=True)


def _r(text: object) -> str:
    """Untrusted text for a rich table cell, on one line."""
    return rich_safe(text, single_line=True)

_HUB = click.option("--hub", metavar="URL", default=None,
                    help="Zoo hub or mirror base URL (default: $BIOIMGZOO_HUB or https://hypha.aicell.io).")
_OFFLINE = click.option("--offline", is_flag=True, default=False,
                        help="Never touch the network; use the cache only (also: BIOIMGZOO_OFFLINE=1).")


def _progress() -> bool:
    return sys.stderr.isatty()


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@click.command("pull")
@click.argument("model_id", metavar="ID[/VERSION]")
@_HUB
@_OFFLINE
@click.option("--weights", "weights", metavar="FORMAT", default=None,
              help="Weight format to fetch (default: first of onnx, torchscript, pytorch_state_dict).")
@click.option("--all-files", is_flag=True, help="Also fetch test tensors, covers, docs and all weight formats.")
@click.option("--draft", is_flag=True, help="Allow the unreviewed staged version (ID/draft).")
@click.option("--update", is_flag=True, help="Re-resolve the id on the hub instead of using the pinned version.")
def pull_cmd(model_id: str, hub: str | None, offline: bool, weights: str | None, all_files: bool, draft: bool,
             update: bool) -> None:
    """Download a zoo model into the cache (only the files a use needs).

    After a pull, loading the same ID needs no network: the resolved version
    is pinned until `pull --update`.
    """
    from ..hub.pull import pull

    result = pull(model_id, hub=hub, offline=True if offline else None, weights=weights, all_files=all_files,
                  allow_draft=draft, update=update, progress=_progress())
    click.echo(f"{_t(result.name)}: {len(result.files)} files, {_size(result.size)} "
               f"({len(result.downloaded)} downloaded, {len(result.files) - len(result.downloaded)} cached)")
    for rel, path in result.files.items():
        click.echo(f"  {_t(rel)}  {_size(path.stat().st_size)}")
    if result.weights_format:
        click.echo(f"weights: {_t(result.weights_format)}")
    if result.folder is not None:
        click.echo(f"folder: {_t(result.folder)}")


@click.command("search")
@click.argument("query", required=False)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only models with this tag (repeatable).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000), help="Most results.")
@_HUB
def search_cmd(query: str | None, tags: tuple[str, ...], limit: int, hub: str | None) -> None:
    """Search the zoo's models (most downloaded first)."""
    from rich.table import Table

    from ..hub.search import search

    hits = search(query, tags=tags, limit=limit, hub=hub)
    if not hits:
        click.echo("no models found" + (f" for {_t(repr(query))}" if query else "") +
                   (f" with tags {_t(', '.join(tags))}" if tags else ""))
        return
    table = Table(show_lines=False)
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("name", overflow="fold")
    table.add_column("tags", overflow="fold")
    table.add_column("weights", overflow="fold")
    table.add_column("downloads", justify="right")
    for hit in hits:
        table.add_row(_r(hit.id), _r(hit.name), _r(", ".join(hit.tags)), _r(", ".join(hit.weight_formats)),
                      str(hit.downloads))
    _console().print(table)


@click.group("cache")
def cache_group() -> None:
    """Inspect and manage the download cache ($BIOIMGZOO_CACHE)."""


@cache_group.command("list")
def cache_list() -> None:
    """List cached models: id, version, hub, files, size."""
    from rich.table import Table

    from ..hub.cache import cache_layout

    layout = cache_layout()
    snaps = layout.list_snapshots()
    if not snaps:
        click.echo(f"the cache at {_t(layout.root)} is empty")
        return
    table = Table()
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("version")
    table.add_column("pins")
    table.add_column("hub", overflow="fold")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right")
    table.add_column("resolved")
    for s in snaps:
        table.add_row(_r(s.id), _r(s.version or "-"), _r(", ".join(sorted(s.requests))), _r(s.hub or "(url)"),
                      str(len(s.files)), _size(s.size), _r(str(s.resolved_at)[:10]))
    _console().print(table)
    click.echo(f"{len(snaps)} cached package version{'s' if len(snaps) != 1 else ''}, "
               f"{_size(layout.total_size())} in {_t(layout.root)}")


@cache_group.command("verify")
def cache_verify() -> None:
    """Re-hash every cached file; remove corrupt ones (exit 1 if any were found)."""
    from ..hub.cache import cache_layout

    layout = cache_layout()
    report = layout.verify()
    for sha in report.corrupt:
        click.secho(f"corrupt: blobs/{sha} (removed; it is downloaded again when needed)", fg="red", err=True)
    for link in report.dangling:
        click.echo(f"removed dangling link {_t(link)}")
    click.echo(f"checked {report.checked} files in {_t(layout.root)}: "
               + ("all intact" if report.ok else f"{len(report.corrupt)} corrupt, removed")
               + (f"; removed {report.stale_tmp} stale partial downloads" if report.stale_tmp else ""))
    if not report.ok:
        sys.exit(1)


@cache_group.command("clear")
@click.argument("model_id", metavar="[ID]", required=False)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before clearing the whole cache.")
def cache_clear(model_id: str | None, yes: bool) -> None:
    """Remove one model (all versions and hubs) or, without ID, everything."""
    from ..hub.cache import cache_layout

    layout = cache_layout()
    if model_id is None and not yes:
        click.confirm(f"remove everything in {_t(layout.root)}?", abort=True)
    removed, freed = layout.clear(model_id)
    if model_id is not None and removed == 0:
        click.echo(f"{_t(model_id)} is not in the cache")
        return
    click.echo(f"removed {_t(model_id or 'everything')}: {_size(freed)} freed")


@click.command("mirror")
@click.argument("model_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Mirror folder to write.")
@click.option("--weights", metavar="FORMAT", default=None, help="Copy only this weight format (default: all files).")
@_HUB
@_OFFLINE
def mirror_cmd(model_ids: tuple[str, ...], to: str, weights: str | None, hub: str | None, offline: bool) -> None:
    """Write a static mirror of zoo models that any plain HTTP server can serve."""
    from ..hub.mirror import mirror

    result = mirror(model_ids, to, hub=hub, weights=weights, offline=True if offline else None,
                    progress=_progress())
    for m in result.models:
        click.echo(f"mirrored {_t(m.id)} ({_t(m.version or 'unversioned')}): {len(m.files)} files")
    click.echo(f"mirror folder: {_t(result.folder)}\nserve it and point clients at it:\n  "
               + terminal_safe(result.serve_hint()).replace("\n", "\n  "))


@click.command("publish")
@click.argument("package", type=click.Path(exists=True))
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Mirror folder to add it to.")
@click.option("--id", "model_id", default=None, help="Id to publish it under (default: the rdf's own id).")
def publish_cmd(package: str, to: str, model_id: str | None) -> None:
    """Add a local package (folder or .zip) to a static mirror folder, loadable by id from there."""
    from ..hub.mirror import publish

    published = publish(package, to, id=model_id)
    click.echo(f"published {_t(published)} in {_t(to)}; serve the folder and load it with "
               f"BIOIMGZOO_HUB=<its URL> bioimgzoo info {_t(published)}")


COMMANDS = [pull_cmd, search_cmd, cache_group, mirror_cmd, publish_cmd]
