"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ZOO_FIXTURE = SHARED / "fixtures" / "zoo" / "unet2d-nuclei-broad"
#: virtual environments tests build (the deployed readers, bioimageio.core 0.10, BiaPy): kept between runs,
#: so that only the first run on a machine builds them
PERSISTENT_ENVS = Path(os.environ.get("BIOIMGZOO_TEST_ENVS") or Path.home() / ".cache" / "bioimgzoo-tests")

# keep tests quiet and predictable on small CI machines: under pytest-xdist (the README runs `-n 2`) each
# worker gets one thread, so two workers share the two cores instead of four threads fighting over them
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


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
    # the deployed readers' environments are built once per machine, not once per test's cache
    monkeypatch.setenv("BIOIMGZOO_READER_ENVS", str(PERSISTENT_ENVS / "readers"))
    monkeypatch.delenv("BIOIMGZOO_READERS", raising=False)
    monkeypatch.delenv("BIOIMGZOO_OFFLINE", raising=False)
