"""A self-contained HTML report: every image embedded, every text the package wrote escaped.

No script, no external stylesheet or font, no remote image: the page can be
mailed around and opened offline.  A Content-Security-Policy meta tag forbids
anything but inline style and ``data:`` images.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

__all__ = ["to_html", "index_html", "index_pages", "INDEX_SORTS"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1em auto;padding:0 1em;max-width:70em;color:#222}
td{overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top}.passed{color:#17651a}.failed{color:#a1111b;font-weight:bold}.warning{color:#8a5a00}
.skipped,.not-applicable{color:#666}figure{display:inline-block;margin:.5em;text-align:center}
figure img{max-width:256px;image-rendering:pixelated;border:1px solid #ccc}code{font-size:90%}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _status(s: str) -> str:
    return f'<span class="{escape(s)}">{escape(s)}</span>'


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _figure(caption: str, uri: str) -> str:
    return f'<figure><img alt="{escape(caption)}" src="{uri}"><figcaption>{escape(caption)}</figcaption></figure>'


def _images(report: Any) -> list[str]:
    """Cover, then per output: test input, expected, produced and difference per weight format; seam maps."""
    from .images import data_uri, png_bytes

    arts = report.artifacts
    out: list[str] = []
    if "cover" in arts:
        mime, data = arts["cover"]
        out += ["<h2>Cover</h2>", _figure("cover", data_uri(data, mime))]
    inputs = {k.split("/", 1)[1]: v for k, v in arts.items() if k.startswith("input/")}
    if inputs:
        out.append("<h2>Test input and outputs</h2>")
        out += [_figure(f"test input {tid}", data_uri(png_bytes(a))) for tid, a in inputs.items()]
    for key, a in arts.items():
        if key.startswith("expected/"):
            oid = key.split("/", 1)[1]
            out.append(f"<h3>Output {escape(oid)}</h3>")
            out.append(_figure(f"expected {oid}", data_uri(png_bytes(a))))
            for k2, b in arts.items():
                parts = k2.split("/")
                if parts[0] == "produced" and parts[2] == oid:
                    out.append(_figure(f"produced {oid} ({parts[1]})", data_uri(png_bytes(b))))
                    diff = arts.get(f"difference/{parts[1]}/{oid}")
                    if diff is not None:
                        out.append(_figure(f"difference {oid} ({parts[1]})", data_uri(png_bytes(diff, symmetric=True))))
    seams = [(k, v) for k, v in arts.items() if k.startswith("seams/")]
    if seams:
        out.append("<h2>Tiling seam maps</h2><p>|tiled - reference| per pixel (white: largest difference)</p>")
        out += [_figure(f"seams {k.split('/')[2]} ({k.split('/')[1]})", data_uri(png_bytes(v))) for k, v in seams]
    return out


def _body(report: Any, *, level: int = 1) -> list[str]:
    h = f"h{level}"
    body = [f"<{h}>Validation of {escape(report.name or report.source)}: {_status(report.status)}</{h}>",
            f"<p>Source: <code>{escape(report.source)}</code>"
            + (" &middot; description only (--static)" if report.static else "")
            + f" &middot; {report.seconds:.1f} s</p>",
            "<h2>Families</h2><table><tr><th>family</th><th>status</th></tr>"]
    body += [f"<tr><td>{escape(n)}</td><td>{_status(report.family_status(n))}</td></tr>" for n in report.own_families]
    body.append("</table>")
    if report.consumers:
        body.append("<h2>Consumer tools</h2><p>Reported beside the status; a tool fails the package only when "
                    "required" + (f" (required: {escape(', '.join(report.required))})" if report.required else "")
                    + ".</p><table><tr><th>tool</th><th>status</th><th>failed rules</th><th>fixes</th></tr>")
        for tool, v in report.consumers.items():
            body.append(f"<tr><td>{escape(tool)}</td><td>{_status(str(v.get('status')))}</td>"
                        f"<td>{escape(', '.join(v.get('failed_rules') or []) or '-')}</td>"
                        f"<td>{'<br>'.join(escape(x) for x in (v.get('fixes') or [])) or '-'}</td></tr>")
        body.append("</table>")
    failures = [f for f in report.findings if f.status == "failed"]
    if failures:
        body.append("<h2>Failures</h2><ul>")
        body += [f"<li><b>{escape(f.check)}</b>: {escape(f.message)}"
                 + (f"<br><i>fix:</i> {escape(f.fix)}" if f.fix else "") + "</li>" for f in failures]
        body.append("</ul>")
    body += _images(report)
    body.append("<h2>Every check</h2><table><tr><th>check</th><th>status</th><th>message</th></tr>")
    body += [f"<tr><td>{escape(f.check)}</td><td>{_status(f.status)}</td><td>{escape(f.message)}</td></tr>"
             for f in report.findings]
    body.append("</table>")
    return body


def to_html(report: Any) -> str:
    """One package's report as a self-contained page."""
    return _page(f"Validation of {report.name or report.source}", _body(report))


#: the index's columns that sort it: key -> (header, page-name suffix, sort key of a report); the first is
#: the default page (failures first)
INDEX_SORTS: dict[str, tuple[str, str, Any]] = {
    "status": ("status", "", lambda r: (r.passed, _rid(r).lower(), _version(r))),
    "id": ("id", "-by-id", lambda r: (_rid(r).lower(), _version(r))),
    "version": ("version", "-by-version", lambda r: (_version(r), _rid(r).lower())),
    "name": ("name", "-by-name", lambda r: ((r.name or "").lower(), _rid(r).lower())),
    "seconds": ("s", "-by-time", lambda r: (-r.seconds, _rid(r).lower())),
}

_INDEX_CSS = """
table.index{width:100%;table-layout:fixed}table.index th a{color:inherit}
table.index col.status{width:6em}table.index col.id{width:22%}table.index col.version{width:6em}
table.index col.seconds{width:4em}table.index col.failing{width:30%}
"""


def _rid(report: Any) -> str:
    return str(report.meta.get("id") or report.name or report.source)


def _version(report: Any) -> str:
    return str(report.meta.get("version") or "")


def _failing(report: Any) -> list[str]:
    own = [f for f in report.own_families if report.family_status(f) == "failed"]
    tools = [t for t, v in report.consumers.items() if v.get("status") == "failed"]
    return own + [f"tool {t}" + (" (required)" if t in report.required else "") for t in tools]


def index_pages(reports: Sequence[Any], links: Sequence[str] | None = None, *, stem: str = "index"
                ) -> dict[str, str]:
    """The index of many reports, one page per sort order: page name -> HTML.

    ``{stem}.html`` lists failures first (then by id); ``{stem}-by-id.html``,
    ``-by-version``, ``-by-name`` and ``-by-time`` sort by that column, and each
    column header links to its page: sortable with no script (the page's
    Content-Security-Policy forbids scripts).  Columns: status, id, version,
    name, what failed (families, then tools) and seconds; cells wrap, so the
    table fits a 1200-pixel window whatever the names.
    """
    order = list(range(len(reports)))
    pages = {}
    for key, (header, suffix, sort_key) in INDEX_SORTS.items():
        ranked = sorted(order, key=lambda i: sort_key(reports[i]))
        pages[f"{stem}{suffix}.html"] = _index_page(reports, links, ranked, key, stem)
    return pages


def _index_page(reports: Sequence[Any], links: Sequence[str] | None, ranked: list[int], current: str,
                stem: str) -> str:
    n_pass = sum(r.passed for r in reports)
    head = []
    for key, (header, suffix, _) in INDEX_SORTS.items():
        label = escape(header) + (" &#9660;" if key == current else "")
        head.append(f'<th><a href="{escape(stem + suffix)}.html" title="sort by {escape(key)}">{label}</a></th>')
    head.insert(4, "<th>failing</th>")
    cols = "".join(f'<col class="{c}">' for c in ("status", "id", "version", "name", "failing", "seconds"))
    body = [f"<style>{_INDEX_CSS}</style>",
            f"<h1>Validation of {len(reports)} packages</h1>",
            f"<p>{n_pass} of {len(reports)} pass, {len(reports) - n_pass} fail. Click a column to sort by it.</p>",
            f'<table class="index"><colgroup>{cols}</colgroup><tr>' + "".join(head) + "</tr>"]
    for i in ranked:
        r = reports[i]
        rid = escape(_rid(r))
        cell = f'<a href="{escape(links[i])}">{rid}</a>' if links else rid
        body.append(f"<tr><td>{_status(r.status)}</td><td>{cell}</td><td>{escape(_version(r) or '-')}</td>"
                    f"<td>{escape(r.name or '-')}</td><td>{escape(', '.join(_failing(r)) or '-')}</td>"
                    f"<td>{r.seconds:.1f}</td></tr>")
    body.append("</table>")
    return _page(f"Validation of {len(reports)} packages", body)


def index_html(reports: Sequence[Any], links: Sequence[str] | None = None) -> str:
    """The index of many reports, failures first (see :func:`index_pages` for every sort order)."""
    return next(iter(index_pages(reports, links).values()))
