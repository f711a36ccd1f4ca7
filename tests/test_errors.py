"""The error tree: one root, the builtin a caller would catch, HTTP errors among the others, strict validation."""

from __future__ import annotations

import pytest

import bioimgzoo
from bioimgzoo import errors


@pytest.mark.parametrize("name, builtin", [
    ("PackageNotFoundError", FileNotFoundError), ("InvalidDescriptionError", ValueError),
    ("IntegrityError", ValueError), ("UntrustedCodeError", PermissionError), ("ConfigError", ValueError),
    ("InputError", ValueError), ("OfflineError", ConnectionError), ("DownloadError", ConnectionError),
    ("HttpStatusError", ConnectionError), ("DeadlineError", TimeoutError),
])
def test_errors_are_also_the_builtin_a_caller_catches(name, builtin):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.BioimgzooError) and issubclass(cls, builtin)
    assert name in errors.__all__ and name in errors.__doc__


def test_http_errors_live_in_errors_and_the_hub_raises_them():
    from bioimgzoo.hub import transport

    assert transport.HttpStatusError is errors.HttpStatusError and transport.DeadlineError is errors.DeadlineError
    e = errors.HttpStatusError("x", url="http://h/x", status=503)
    assert e.transient and not errors.HttpStatusError("x", url="u", status=404).transient


def test_a_missing_package_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        bioimgzoo.open_package(tmp_path / "nowhere")


def test_a_failed_download_is_not_blamed_on_the_disk(tmp_path, monkeypatch):
    # a DownloadError is an OSError too: the blob store must not read it as "cannot write the cache"
    from bioimgzoo.hub import download, transport

    def refuse(*a, **k):
        raise errors.DownloadError("connecting to 127.0.0.1:9 failed")

    monkeypatch.setattr(transport, "download_to", refuse)
    with pytest.raises(errors.DownloadError, match="127.0.0.1:9"):
        download.download_blob("http://127.0.0.1:9/x", what="x")


def test_strict_validation_raises_validation_failed(tmp_path):
    (tmp_path / "rdf.yaml").write_text("format_version: 0.5.4\ntype: model\nname: broken\n")
    with pytest.raises(errors.InvalidDescriptionError):  # not even a package: opening fails
        bioimgzoo.open_package(tmp_path)
    report = bioimgzoo.validate(tmp_path, static=True)
    assert not report.passed
    with pytest.raises(errors.ValidationFailed, match="fails validation") as caught:
        bioimgzoo.validate(tmp_path, static=True, strict=True)
    assert caught.value.report.passed is False
