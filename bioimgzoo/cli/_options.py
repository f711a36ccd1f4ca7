"""Options and argument parsing shared by the CLI areas (hub options, tile sizes, output folders)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


def parse_tile(value: str | None):
    """``512`` or ``y=256,x=512`` -> int or dict."""
    if not value:
        return None
    try:
        if "=" not in value:
            return int(value)
        out = {}
        for part in value.split(","):
            k, v = part.split("=")
            out[k.strip()] = int(v)
        return out
    except ValueError:
        raise InputError(f"--tile {value!r} is not understood: use one number (512) or per axis (y=256,x=512)")


def writable_out_dir(out_dir: str) -> Path:
    """The -o folder, created and proven writable before any model is loaded or image predicted."""
    import os
    import tempfile

    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"-o {path} is a file, not a folder: name a folder for the outputs (it is created "
                         "if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a real write, not os.access: that misjudges read-only mounts, ACLs and root
        fd, probe = tempfile.mkstemp(prefix=".bioimgzoo-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"-o {path}: cannot write there ({e.strerror or e}): choose a folder you can "
                         "write to") from None
    return path


_HUB_OPTIONS = [
    click.option("--hub", default=None, help="Zoo server or mirror URL (default $BIOIMGZOO_HUB or bioimage.io)."),
    click.option("--offline", is_flag=True, default=None, help="Never touch the network; use the cache only."),
]


def hub_opts(f):
    for opt in reversed(_HUB_OPTIONS):
        f = opt(f)
    return f


def hub_kwargs(hub, offline) -> dict:
    out = {}
    if hub:
        out["hub"] = hub
    if offline:
        out["offline"] = True
    return out
