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

for _rid, _fn in _jdll.ICY_RULES.items():
    _fix = "Give the model exactly one input (Icy runs several outputs)." if _rid == "D5" else _jdll.FIXES[_rid]
    TOOL.rule(_rid, title=_jdll.TITLES[_rid] if _rid != "D5" else "one input", fix=_fix)(_fn)
