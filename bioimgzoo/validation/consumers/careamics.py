"""CAREamics' bioimage.io import: rule ``C1``.

It applies only to packages tagged ``careamics``; those must carry the
``careamics.yaml`` attachment and a CAREamics UNet state dict.  CAREamics'
own exports (state dict only, fixed sizes, list-valued
``fixed_zero_mean_unit_variance``) fail DeepImageJ's D7/D23: the other
checkers say so.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from .._registry import FAILED, PASSED
from ._base import Subject, tool
from ._jdll import basename_of
from .deepimagej import render_markdown

__all__ = ["TOOL"]

TOOL = tool("careamics", "CAREamics rules", order=55, render_markdown=render_markdown)


def _applies(s: Subject) -> str:
    if "careamics" not in {t.lower() for t in s.view.tags}:
        return "not a CAREamics model (no 'careamics' tag)"
    return ""


TOOL.applies = _applies


def _attachments(raw: Mapping) -> list[str]:
    att = raw.get("attachments")
    items: list[Any] = att.get("files", []) if isinstance(att, Mapping) else att if isinstance(att, list) else []
    out = []
    for a in items:
        src = a.get("source") if isinstance(a, Mapping) else a
        if isinstance(src, str):
            out.append(basename_of(src))
    return out


@TOOL.rule("C1", title="careamics.yaml and a CAREamics UNet",
           fix="Export with CAREamics (it writes the careamics.yaml attachment and the UNet state dict).")
def c1(s: Subject) -> Iterator[tuple]:
    problems = []
    if "careamics.yaml" not in _attachments(s.raw):
        problems.append("no careamics.yaml attachment")
    w = s.view.weights.get("pytorch_state_dict")
    if w is None:
        problems.append("no pytorch_state_dict weights (CAREamics loads its UNet's state dict)")
    else:
        arch = w.get("architecture")
        text = str(arch.get("import_from", "")) + str(arch.get("source", "")) + str(arch.get("callable", "")) \
            if isinstance(arch, Mapping) else str(arch)
        if "careamics" not in text.lower() and "unet" not in text.lower():
            problems.append(f"the architecture {text!r} is not CAREamics' UNet")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, "a CAREamics export (careamics.yaml and its UNet)"
