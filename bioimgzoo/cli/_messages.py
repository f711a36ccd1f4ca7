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

__all__ = ["cli_spelling", "to_cli"]

#: API keyword -> CLI option
API_TO_CLI = {
    "axes": "--axes", "tile": "--tile", "halo": "--halo", "batch_size": "--batch-size", "pad_mode": "--pad-mode",
    "nan_policy": "--nan-policy", "weights": "--weights", "device": "--device", "channels": "--channel",
    "offline": "--offline", "hub": "--hub", "update": "--update",
}
_FLAGS = {"trust_code=True": "--trust-code", "allow_draft=True": "--draft"}
_BOTH = re.compile(r"(?:\b\w+=\S+?|\b\w+=) \(CLI: (--[^)]+)\)")
_KEYWORD = re.compile(r"(?<![\w.-])(" + "|".join(API_TO_CLI) + r")=('[^']*'|\"[^\"]*\"|[^\s,;:)]*)")
_PHRASES = {
    "select the right channel(s) with channels=[N, ...] (counted from 0)": "pick channels with --channel N[,M...] (counted from 0), or --rgb "
                                   "luminance|red|green|blue for an RGB image",
    "predict() for one image": "one image per file",
}


def to_cli(message: str) -> str:
    """``message`` with the API's option names written as the CLI's."""
    text = _BOTH.sub(lambda m: m.group(1), message)
    for api, cli in _FLAGS.items():
        text = text.replace(api, cli)

    def keyword(m: re.Match) -> str:
        value = m.group(2).strip("'\"")
        return API_TO_CLI[m.group(1)] + (f"={value}" if value else "")

    # whole phrases first: they may hold API keywords that read better rewritten as one
    for api, cli in _PHRASES.items():
        text = text.replace(api, cli)
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
