"""Search over the collection's children listing, with pagination."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bioimgzoo.errors import OfflineError
from bioimgzoo.hub import search


@pytest.fixture
def listed(zoo_hub):
    """The fixture model plus six light models (downloads 10..60) and a dataset."""
    for i in range(6):
        zoo_hub.publish_listing_only(f"model-{i}", name=f"Model {i}", tags=["nucleus" if i % 2 else "cell", "2d"],
                                     description="segmentation" if i < 3 else "denoising",
                                     weights=("torchscript",), download_count=10 * (i + 1))
    zoo_hub.publish_listing_only("tasty-apple", name="A dataset", type="dataset", download_count=1000)
    return zoo_hub


def _children_offsets(server) -> list[int]:
    return [int(parse_qs(urlsplit(r).query)["offset"][0]) for r in server.requests if "/children" in r]


def test_search_paginates_lazily(listed):
    hits = search(limit=5, page_size=2)
    assert [h.id for h in hits] == ["model-5", "model-4", "affable-shark", "model-3", "model-2"]
    assert _children_offsets(listed) == [0, 2, 4]  # three pages, no more
    top = hits[2]
    assert top.name == "UNet 2D Nuclei Broad" and top.downloads == 42
    assert top.weight_formats == ["onnx", "torchscript"] and "nucleus" in top.tags and top.versions == ["v0"]


def test_search_all_pages_until_total(listed):
    hits = search(limit=100, page_size=3)
    assert len(hits) == 7  # the dataset is filtered out by type
    assert _children_offsets(listed) == [0, 3, 6]


def test_search_query_and_tags(listed):
    assert [h.id for h in search("segmentation")] == ["affable-shark", "model-2", "model-1", "model-0"]
    assert [h.id for h in search(tags=["nucleus"])] == ["model-5", "affable-shark", "model-3", "model-1"]
    assert [h.id for h in search("segmentation", tags=["nucleus", "2D"])] == ["model-1"]
    assert search("nothing-matches-this") == []
    assert [h.id for h in search("dataset", type="dataset")] == ["tasty-apple"]


def test_search_against_a_static_listing(listed):
    listed.static_children = True  # like a plain file server: query strings are ignored
    hits = search("segmentation", limit=2, page_size=1)
    assert [h.id for h in hits] == ["affable-shark", "model-2"]
    assert len(_children_offsets(listed)) == 1  # recognised as static: one request, filtered client-side
    assert [h.id for h in search(limit=3)] == ["model-5", "model-4", "affable-shark"]


def test_search_offline_fails_clearly(listed):
    with pytest.raises(OfflineError, match="cache list"):
        search("x", offline=True)
