"""``python -m bioimgzoo.cli``: the same as the ``bioimgzoo`` command."""

from . import main

main(prog_name="bioimgzoo")
