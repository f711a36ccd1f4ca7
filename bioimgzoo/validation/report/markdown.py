"""Markdown reports: one package (families, tools, a section per family), or a table of many."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["to_markdown", "summary_markdown", "default_section"]


def default_section(findings: Sequence[Any]) -> list[str]:
    """The default Markdown section of a family: one row per finding, with the fix of failures and warnings."""
    from ..._text import markdown_safe

    if not findings:
        return ["Nothing to check."]
    lines = ["| check | status | detail | fix |", "|---|---|---|---|"]
    lines += [f"| {f.check} | {f.status} | {markdown_safe(f.message, table_cell=True)} | "
              f"{markdown_safe(f.fix, table_cell=True)} |" for f in findings]
    return lines


def to_markdown(report: Any) -> str:
    """The overall status, a table of families and one of tools, then one section per family."""
    from ..._text import markdown_safe
    from .._registry import family, load_families

    load_families()  # a report built by hand still renders each family its own way
    # names and messages quote the package's author and the spec: escaped, never raw HTML
    lines = [f"# Check of {markdown_safe(report.name or report.source)}", "",
             f"Overall: **{report.status if report.passed else 'FAILED'}**"
             + (" (description only: --static)" if report.static else ""), "",
             "| family | status |", "|---|---|"]
    lines += [f"| {name} | {report.family_status(name)} |" for name in report.own_families]
    if report.consumers:
        lines += ["", "## Consumer tools", "",
                  "Reported beside the status; a tool fails the package only when required"
                  + (f" (required: {', '.join(report.required)})" if report.required else "") + ".", "",
                  "| tool | status | failed rules | fixes |", "|---|---|---|---|"]
        for tool, v in report.consumers.items():
            fixes = markdown_safe("; ".join(v.get("fixes") or [])[:400], table_cell=True)
            lines.append(f"| {tool} | {v.get('status')} | {', '.join(v.get('failed_rules') or []) or '-'} | "
                         f"{fixes or '-'} |")
    for name in report.families:
        fam = family(name)
        title = fam.title if fam is not None else name
        findings = report.of_family(name)
        if not findings and name in report.consumers:
            continue
        lines += ["", f"## {markdown_safe(title)}: {report.family_status(name)}", ""]
        render = fam.render_markdown if fam is not None and fam.render_markdown else default_section
        lines += render(findings)
    return "\n".join(lines) + "\n"


def summary_markdown(reports: Sequence[Any]) -> str:
    """A table of many reports (one row each: status, families, tools), then each report in full."""
    from ..._text import markdown_safe

    tools = list(dict.fromkeys(t for r in reports for t in r.consumers))
    families = list(dict.fromkeys(f for r in reports for f in r.own_families))
    head = ["package", "status", *families, *tools]
    lines = [f"# Validation of {len(reports)} packages", "",
             f"{sum(r.passed for r in reports)} of {len(reports)} pass.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        cells = [markdown_safe(r.name or r.source, table_cell=True), r.status]
        cells += [r.family_status(f) if f in r.own_families else "-" for f in families]
        cells += [r.consumers.get(t, {}).get("status", "-") for t in tools]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(to_markdown(r) for r in reports)
