"""Cache management: layout, list, verify, clear, garbage collection."""

from __future__ import annotations

import os

from bioimgzoo.hub import cache_layout, pull
from bioimgzoo.hub.cache import CacheLayout, hub_key
from bioimgzoo.hub.download import download_action

ONNX_SHA = "85f5ac80fa977fea3562ef97c8c5950288be2c4f4cdb5d994807df97008ce088"
PT_SHA = "a4b0659a1b48454588b12179855ad0a0c9b69ccaa89b8bb06e6271e8f60b02fe"


def test_layout_paths(tmp_path):
    layout = CacheLayout(tmp_path)
    assert layout.blob(ONNX_SHA) == tmp_path / "blobs" / ONNX_SHA
    pkg = layout.zoo_package_dir("https://hypha.aicell.io", "affable-shark")
    assert pkg.relative_to(tmp_path).parts[:2] == ("packages", "zoo")
    assert pkg.parent.name.startswith("hypha.aicell.io-") and pkg.name == "affable-shark"
    assert layout.pin_path(pkg, "latest") == pkg / "refs" / "latest.json"
    assert layout.snapshot_dir(pkg, ONNX_SHA) == pkg / "snapshots" / ONNX_SHA
    assert hub_key("http://a:1") != hub_key("http://a:2")
    assert layout.url_file_link("https://x.org/a/b/w.onnx?x=1").name == "w.onnx"
    assert layout.new_tmp("x").parent == tmp_path / "tmp"


def test_download_action_decides_from_the_cache_alone(tmp_path):
    layout = CacheLayout(tmp_path)
    link = tmp_path / "packages" / "p" / "weights.onnx"
    assert download_action(layout, link=link, sha256=ONNX_SHA).kind == "download"
    assert download_action(layout, link=link, sha256=None).kind == "download"
    tmp = layout.new_tmp()
    tmp.write_bytes(b"x")
    import hashlib

    sha = hashlib.sha256(b"x").hexdigest()
    layout.commit_blob(tmp, sha)
    action = download_action(layout, link=link, sha256=sha)
    assert action.kind == "link" and action.blob == layout.blob(sha)
    layout.link(action.blob, link)
    assert download_action(layout, link=link, sha256=sha).kind == "hit"
    assert download_action(layout, link=link, sha256=None).kind == "hit"
    assert link.read_bytes() == b"x"


def test_list_verify_clear(zoo_hub):
    pull("affable-shark")
    pull("affable-shark", weights="torchscript")
    layout = cache_layout()
    (snap,) = layout.list_snapshots()
    assert snap.id == "affable-shark" and snap.version == "v0" and sorted(snap.requests) == ["latest", "v0"]
    assert sorted(snap.files) == ["rdf.yaml", "weights.onnx", "weights.pt"]
    assert snap.size > 3_000_000 and snap.hub == zoo_hub.url
    assert layout.verify().ok and layout.verify().checked == 4  # rdf, manifest, two weights

    # damage a blob behind the cache's back: verify finds and removes it, the next use downloads again
    blob = layout.blob(PT_SHA)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"bit rot")
    report = layout.verify()
    assert report.corrupt == [PT_SHA] and not blob.exists()
    assert "weights.pt" in [d.rsplit("/", 1)[-1] for d in report.dangling]
    assert pull("affable-shark", weights="torchscript").downloaded == ["weights.pt"]  # rdf still pinned

    removed, freed = layout.clear("affable-shark")
    assert removed == 1 and freed > 3_000_000
    assert layout.list_snapshots() == [] and not any(layout.blobs_dir.iterdir())


def test_clear_keeps_other_models_and_shared_blobs(zoo_hub, zoo_fixture):
    zoo_hub.publish_folder("other-model", zoo_fixture, rdf_changes={"name": "Other"})
    pull("affable-shark")
    pull("other-model")
    layout = cache_layout()
    layout.clear("bioimage-io/affable-shark")
    assert [s.id for s in layout.list_snapshots()] == ["other-model"]
    assert layout.blob(ONNX_SHA).is_file()  # still used by other-model
    layout.clear()
    assert layout.list_snapshots() == [] and layout.total_size() == 0
