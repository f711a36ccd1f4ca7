"""The public surface is what __all__ lists: a change to it must be deliberate."""

import subprocess
import sys

import bioimgzoo

EXPECTED = {"__version__", "load", "open_package", "errors", "export", "validate"}


def test_all_is_the_public_surface():
    assert set(bioimgzoo.__all__) == EXPECTED
    for name in bioimgzoo.__all__:
        assert hasattr(bioimgzoo, name), name


def test_import_is_light():
    """No torch, onnxruntime or bioimageio.spec at import time (and no I/O)."""
    code = ("import sys, bioimgzoo, bioimgzoo.cli; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'bioimageio.spec', 'xarray') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at startup: {out}"


def test_errors_share_one_root():
    from bioimgzoo import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.BioimgzooError)
