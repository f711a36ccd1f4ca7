"""Icy (its deep-learning plugin runs JDLL 0.6.1): DeepImageJ's JDLL rules minus the ImageJ parts.

Icy meets every JDLL rule of consumer-rules.md; left out are DeepImageJ's own
``config.deepimagej`` (D19) and the zoo CI's test script (D5's single output,
D27 sample TIFF, D28 test input as one tile, D29 output file names).  The
checks reuse :mod:`._jdll`'s rules under the ids ``icy.D1`` ...
"""

from __future__ import annotations

from . import _jdll
from ._base import tool
from .deepimagej import render_markdown

__all__ = ["TOOL"]

TOOL = tool("icy", "Icy (JDLL) rules", order=51, render_markdown=render_markdown)

for _r in _jdll.rules_for("icy"):  # JDLL's rules Icy meets too, registered by @jdll_rule beside each check
    TOOL.rule(_r.id, title=_r.title, fix=_r.fix)(_r.check)
