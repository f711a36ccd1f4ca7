"""Rendering a :class:`~bioimgzoo.validation.CheckReport`: JSON data, Markdown, a self-contained HTML page.

- :func:`to_json_data`: top-level ``status``, a ``checks`` list (``id``, ``family``,
  ``status``, ``message``, ...), ``consumers`` (tool -> ``status``, ``failed_rules``),
  the zoo's per-tool summary fields (``summary``), and the legacy sections;
- :func:`to_markdown` / :func:`summary_markdown`: one report, or a table of many;
- :func:`to_html` / :func:`index_html`: a page a reviewer can mail around (every
  image embedded as a ``data:`` URI: cover, test input, expected, produced and
  difference per output, seam maps, the per-tool table), or an index of many.

Everything the package wrote (names, messages) is escaped for its medium.
"""

from __future__ import annotations

from .html import index_html, index_pages, to_html
from .json_report import to_json_data
from .markdown import summary_markdown, to_markdown

__all__ = ["to_json_data", "to_markdown", "summary_markdown", "to_html", "index_html", "index_pages"]
