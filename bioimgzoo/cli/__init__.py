"""The ``bioimgzoo`` command line: a thin layer over the Python API.

Each area keeps its commands in its own module here (``predict.py``, ``info.py``,
``hub.py``: pull, search, cache, mirror; ``export.py``; ``convert.py``; ``validate.py``;
``train.py``; ``demo.py``), each exposing a ``COMMANDS`` list; the list of
areas is fixed, and a missing module fails at import.  Modules import
heavy libraries (torch, onnxruntime) inside the command bodies only, so
``bioimgzoo --help`` stays fast.

Errors: a :class:`~bioimgzoo.errors.BioimgzooError` is printed as one
message and exits with status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import click

from .._text import terminal_safe
from ..errors import BioimgzooError

_AREAS = ("predict", "info", "hub", "export", "convert", "validate", "train", "demo")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BioimgzooError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            # messages quote package- and server-chosen text: never let it drive the terminal; the API's
            # keywords in them are written as this command line's options (quoted code left as it is)
            from ._messages import to_cli

            click.secho(f"Error: {terminal_safe(to_cli(str(e)))}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho("Interrupted.", fg="red", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="bioimgzoo")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Run, pull, package and validate BioImage Model Zoo models."""
    ctx.obj = {"debug": debug}
    if not debug:
        import logging

        # bioimageio.spec logs through loguru; keep the terminal for our own messages
        try:
            from loguru import logger

            logger.remove()
            logger.add(sys.stderr, level="ERROR")
        except ImportError:  # pragma: no cover
            pass
        logging.getLogger().setLevel(logging.ERROR)
        import warnings

        # bioimageio.spec's own UserWarnings (conversion notes) are for its developers; what matters to a
        # user reaches them as our warnings and messages
        warnings.filterwarnings("ignore", category=UserWarning, module=r"bioimageio\.")


for _area in _AREAS:
    # a missing area is an import error, never a silently missing command
    for _cmd in importlib.import_module(f"{__name__}.{_area}").COMMANDS:
        main.add_command(_cmd)

__all__ = ["main"]
