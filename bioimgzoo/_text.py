"""Untrusted text made safe to show: in a terminal, in rich markup, in Markdown/HTML.

Names, descriptions, ids and hub listings come from package authors and
servers.  Shown raw, an escape sequence can rewrite the user's terminal
(``ESC ]8`` links, cursor moves, a cleared screen), rich markup
(``[link=...]``, a stray ``[/]``) can forge or crash output, and HTML in a
Markdown report runs in the reviewer's browser.  Every place that prints or
renders such text passes it through one of these.
"""

from __future__ import annotations

import html
import re

__all__ = ["terminal_safe", "rich_safe", "markdown_safe"]

# C0 and C1 control characters (ESC, BEL, CSI ...) and DEL, except tab and newline
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# bidirectional overrides and zero-width tricks that reorder or hide text
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: object, *, max_len: int | None = None, single_line: bool = False) -> str:
    """``text`` with control and bidi characters shown as visible escapes (``\\x1b``).

    ``single_line`` also shows newlines and tabs as ``\\n``/``\\t``;
    ``max_len`` cuts the result with an ellipsis.
    """
    s = str(text)
    if single_line:
        s = s.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    s = _CONTROL.sub(_escape_char, s)
    s = _INVISIBLE.sub(_escape_char, s)
    if max_len is not None and len(s) > max_len:
        s = s[: max(0, max_len - 1)] + "…"
    return s


def rich_safe(text: object, **kwargs) -> str:
    """:func:`terminal_safe`, then rich markup escaped: safe inside a rich ``print``/table cell."""
    from rich.markup import escape

    return escape(terminal_safe(text, **kwargs))


def markdown_safe(text: object, *, table_cell: bool = False) -> str:
    """Text for a Markdown (or HTML) report: no raw HTML, no control characters.

    ``table_cell`` also keeps the text on one line and escapes ``|``.
    """
    s = html.escape(terminal_safe(text), quote=True)
    # Markdown link/image syntax from untrusted text could point anywhere: neutralise the brackets
    s = s.replace("[", "&#91;").replace("]", "&#93;")
    if table_cell:
        s = s.replace("\r", " ").replace("\n", " ").replace("|", "&#124;")
    return s
