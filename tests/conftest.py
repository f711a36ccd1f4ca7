"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ZOO_FIXTURE = SHARED / "fixtures" / "zoo" / "unet2d-nuclei-broad"

# keep tests quiet and predictable on small CI machines
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def zoo_fixture() -> Path:
    """The real zoo model unet2d-nuclei-broad from ../shared (skips if absent)."""
    if not (ZOO_FIXTURE / "rdf.yaml").is_file():
        pytest.skip(f"zoo fixture not found at {ZOO_FIXTURE} (it lives in the shared/ folder beside the repo)")
    return ZOO_FIXTURE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty download cache and never the real hub."""
    monkeypatch.setenv("BIOIMGZOO_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("BIOIMGZOO_HUB", "http://127.0.0.1:9")  # discard port: never the real zoo
    monkeypatch.delenv("BIOIMGZOO_OFFLINE", raising=False)
