"""Fixtures for the zoo client tests: a real local zoo server and fast retries."""

from __future__ import annotations

import pytest

from bioimgzoo.testing.zoo_server import ZooServer

#: The id the fixture model is published under.
MODEL_ID = "affable-shark"


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    """Short retries and timeouts so failure tests take milliseconds, not minutes."""
    from bioimgzoo.hub import transport

    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(transport, "BACKOFF_MAX_S", 0.05)
    monkeypatch.setenv("BIOIMGZOO_TIMEOUT", "5")
    monkeypatch.setenv("BIOIMGZOO_RETRIES", "2")
    monkeypatch.delenv("BIOIMAGEIO_COLLECTION_HTTP_PATTERN", raising=False)
    monkeypatch.delenv("BIOIMAGEIO_ID_MAP", raising=False)


@pytest.fixture
def zoo_server(zoo_fixture):
    """A running zoo server with the fixture model published as ``affable-shark`` (version v0)."""
    with ZooServer() as server:
        server.publish_folder(MODEL_ID, zoo_fixture, download_count=42)
        yield server


@pytest.fixture
def zoo_hub(zoo_server, monkeypatch):
    """``zoo_server`` set as ``BIOIMGZOO_HUB``."""
    monkeypatch.setenv("BIOIMGZOO_HUB", zoo_server.url)
    return zoo_server
