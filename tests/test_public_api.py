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


def test_the_module_exposes_only_its_public_surface():
    # as httpx guards its vars(): any other public name is a leak (a helper, a typing name) or a forgotten export
    import types

    rooms = {name for name, value in vars(bioimgzoo).items()
             if isinstance(value, types.ModuleType) and value.__name__.startswith("bioimgzoo.")}
    # a room imported as a side effect (bioimgzoo.hub, .package, ...) is a module attribute, not an export
    public = {name for name in vars(bioimgzoo) if not name.startswith("_")} - (rooms - set(bioimgzoo.__all__))
    assert public == EXPECTED - {"__version__"}, public ^ (EXPECTED - {"__version__"})


def test_export_names_its_options_and_returns_its_result():
    import inspect

    from bioimgzoo.exporter import EXPORT_OPTIONS

    sig = inspect.signature(bioimgzoo.export)
    assert not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    assert set(EXPORT_OPTIONS) <= set(sig.parameters)
    assert all(sig.parameters[k].kind == inspect.Parameter.KEYWORD_ONLY for k in EXPORT_OPTIONS)
    assert sig.return_annotation in ("ExportResult", "'ExportResult'") or "ExportResult" in str(sig.return_annotation)
