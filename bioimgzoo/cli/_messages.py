"""CLI spelling of the API's option names in error messages.

The Python API's errors name its keyword arguments (``axes=``,
``trust_code=True``, ``batch_size=0``); a command-line user needs the
options (``--axes``, ``--trust-code``, ``--batch-size=0``).  Rather than
every raise site knowing who called it, commands run inside
:func:`cli_spelling`, which re-raises a :class:`~bioimgzoo.errors.BioimgzooError`
of the same class with the known names translated.  Messages that already
give both (``nan_policy='zero' (CLI: --nan-policy zero)``) keep the CLI's.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

from ..errors import BioimgzooError

__all__ = ["cli_spelling", "to_cli", "quoted_spans"]

#: API keyword -> CLI option
API_TO_CLI = {
    "axes": "--axes", "tile": "--tile", "halo": "--halo", "batch_size": "--batch-size", "pad_mode": "--pad-mode",
    "nan_policy": "--nan-policy", "weights": "--weights", "device": "--device", "channels": "--channel",
    "offline": "--offline", "hub": "--hub", "update": "--update", "id": "--id", "threshold": "--threshold",
    "work_unit": "--work-unit", "ngff": "--ngff", "scheduler": "--scheduler", "workers": "--workers",
    "name": "--name", "description": "--description", "authors": "--author", "card": "--card", "task": "--task",
    "steps": "--steps", "val_fraction": "--val-fraction", "checkpoint_dir": "--checkpoint-dir", "wheels": "--wheels",
}
#: export settings the command line takes from the model card's ``export:`` section (``--card``)
_CARD_KEYS = ("opset_version", "tolerance", "sizes", "validation", "architecture")
_CARD_KEY = re.compile(r"(?<![\w.-])(" + "|".join(_CARD_KEYS) + r")=('[^']*'|\"[^\"]*\"|[^\s,;:)]*)")
#: API flags (a keyword set to True) -> CLI flag
_FLAGS = {"trust_code=True": "--trust-code", "allow_draft=True": "--draft", "isolated=True": "--isolated",
          "strict_sizes=True": "--strict-sizes", "raw_output=True": "--raw-output", "overwrite=True": "--overwrite",
          "resume=True": "--resume", "static=True": "--static", "skip_existing=True": "--skip-existing"}
# "x=... (CLI: --x ...)" or "x=... (CLI --x)": the CLI's own spelling, already given
_BOTH = re.compile(r"(?:\b\w+=\S+?|\b\w+=) \(CLI:? (--[^)]+)\)")
# "x= (e.g. x='v'; CLI: --x v)": the example as the CLI writes it
_EXAMPLE = re.compile(r"\(e\.g\. [^;()]*; CLI:? (--[^)]+)\)")
_KEYWORD = re.compile(r"(?<![\w.-])(" + "|".join(API_TO_CLI) + r")=('[^']*'|\"[^\"]*\"|[^\s,;:)]*)")
_PHRASES = {
    "select the right channel(s) with channels=[N, ...] (counted from 0)": "pick channels with --channel N[,M...] (counted from 0), or --rgb "
                                   "luminance|red|green|blue for an RGB image",
    "predict() for one image": "one image per file",
    "(bioimgzoo.load(..., trust_code=True), CLI --trust-code)": "(--trust-code)",
}
# text quoted from code or from another library, never rewritten: `code`, a traceback from its first line
# on, and indented lines (code excerpts); see also _FOREIGN
_QUOTED = re.compile(r"`[^`\n]*`"
                     r"|^[ \t]*Traceback\b.*\Z"
                     r"|^[ \t]*File \"[^\n]*\Z"
                     r"|^(?: {4}|\t)[^\n]*$", re.MULTILINE | re.DOTALL)
# the message of another library's exception ("RuntimeError: ..."): to the end of its line, or to the
# closing parenthesis when it is quoted inside one
_FOREIGN = re.compile(r"\b(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt): ")


def quoted_spans(message: str) -> list[tuple[int, int]]:
    """Where ``message`` quotes code or another library's text (start, end), in order: never rewritten."""
    spans = [m.span() for m in _QUOTED.finditer(message)]
    for m in _FOREIGN.finditer(message):
        start = m.start()
        if any(a <= start < b for a, b in spans):
            continue
        end = message.find("\n", start)
        end = len(message) if end < 0 else end
        if start > 0 and message[start - 1] == "(":
            depth = 1
            for i in range(m.end(), end):
                depth += {"(": 1, ")": -1}.get(message[i], 0)
                if depth == 0:
                    end = i
                    break
        spans.append((start, end))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def to_cli(message: str) -> str:
    """``message`` with the API's option names written as the CLI's; quoted code left exactly as it is."""
    out, at = [], 0
    for a, b in quoted_spans(message):
        out.append(_prose_to_cli(message[at:a]))
        out.append(message[a:b])
        at = b
    out.append(_prose_to_cli(message[at:]))
    return "".join(out)


def _prose_to_cli(text: str) -> str:
    # whole phrases first: they may hold API keywords that read better rewritten as one
    for api, cli in _PHRASES.items():
        text = text.replace(api, cli)
    text = _BOTH.sub(lambda m: m.group(1), text)
    text = _EXAMPLE.sub(lambda m: f"(e.g. {m.group(1)})", text)
    for api, cli in _FLAGS.items():
        text = text.replace(api, cli)

    def keyword(m: re.Match) -> str:
        value = m.group(2).strip("'\"")
        return API_TO_CLI[m.group(1)] + (f"={value}" if value else "")

    text = _CARD_KEY.sub(lambda m: f"'{m.group(1)}: {m.group(2).strip(chr(39) + chr(34))}'".replace(": '", "'")
                         + " in the --card's export section", text)
    return _KEYWORD.sub(keyword, text)


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Re-raise an error of this package raised in the block, with CLI option names in its message."""
    try:
        yield
    except BioimgzooError as e:
        text = to_cli(str(e))
        if text == str(e):
            raise
        try:
            new = type(e)(text)
        except TypeError:  # an error class with its own constructor: keep it as it is
            raise e from None
        raise new.with_traceback(e.__traceback__) from e.__cause__
