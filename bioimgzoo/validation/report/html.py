"""A self-contained HTML report: every image embedded, every text the package wrote escaped.

No script, no external stylesheet or font, no remote image: the page can be
mailed around and opened offline.  A Content-Security-Policy meta tag forbids
anything but inline style and ``data:`` images.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

__all__ = ["to_html", "index_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
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


def index_html(reports: Sequence[Any], links: Sequence[str] | None = None) -> str:
    """An index of many reports: a summary table (linking to each page when ``links`` are given)."""
    tools = list(dict.fromkeys(t for r in reports for t in r.consumers))
    families = list(dict.fromkeys(f for r in reports for f in r.own_families))
    body = [f"<h1>Validation of {len(reports)} packages</h1>",
            f"<p>{sum(r.passed for r in reports)} of {len(reports)} pass.</p><table><tr><th>package</th>"
            "<th>status</th>" + "".join(f"<th>{escape(x)}</th>" for x in families + tools) + "</tr>"]
    for i, r in enumerate(reports):
        name = escape(r.name or r.source)
        cell = f'<a href="{escape(links[i])}">{name}</a>' if links else name
        body.append(f"<tr><td>{cell}</td><td>{_status(r.status)}</td>"
                    + "".join(f"<td>{_status(r.family_status(f)) if f in r.own_families else '-'}</td>"
                              for f in families)
                    + "".join(f"<td>{_status(str(r.consumers.get(t, {}).get('status', '-')))}</td>" for t in tools)
                    + "</tr>")
    body.append("</table>")
    return _page(f"Validation of {len(reports)} packages", body)
