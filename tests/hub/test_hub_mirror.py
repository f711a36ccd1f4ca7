"""A lab mirror built from one server, served by a plain static HTTP server, used with no zoo at all."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.errors import DownloadError, ModelNotFoundError
from bioimgzoo.hub import mirror, pull, search, source_for_id


class _QuietStaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def static_server():
    """Start ``python -m http.server``'s handler on a folder; yields a function folder -> URL."""
    servers = []

    def serve(folder) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                    functools.partial(_QuietStaticHandler, directory=str(folder)))
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def mirror_hub(zoo_server, zoo_fixture, static_server, tmp_path, monkeypatch):
    """Mirror affable-shark from the zoo server, stop it, serve the mirror statically on a fresh cache."""
    zoo_server.publish_folder("other-model", zoo_fixture, rdf_changes={"name": "Other", "description": "A denoiser.",
                                                                 "tags": ["denoising"]},
                              download_count=5)
    result = mirror(["affable-shark", "other-model"], tmp_path / "mirror", hub=zoo_server.url)
    assert [m.id for m in result.models] == ["affable-shark", "other-model"]
    zoo_server.stop()  # from here on only the static mirror exists
    url = static_server(tmp_path / "mirror")
    monkeypatch.setenv("BIOIMGZOO_HUB", url)
    monkeypatch.setenv("BIOIMGZOO_CACHE", str(tmp_path / "fresh-cache"))
    return tmp_path / "mirror"


def test_mirror_layout(zoo_server, zoo_fixture, tmp_path):
    result = mirror(["affable-shark"], tmp_path / "m", hub=zoo_server.url)
    files = tmp_path / "m" / "bioimage-io" / "artifacts" / "affable-shark" / "files"
    for name in ("rdf.yaml", "weights.onnx", "weights.pt", "test_input.npy", "cover0.png", "README.md"):
        assert (files / name).read_bytes() == (zoo_fixture / name).read_bytes(), name
    manifest = json.loads((files.parent / "index.html").read_text())
    assert manifest["alias"] == "affable-shark" and [v["version"] for v in manifest["versions"]] == ["v0"]
    assert manifest["download_count"] == 42 and manifest["manifest"]["name"] == "UNet 2D Nuclei Broad"
    children = json.loads((tmp_path / "m" / "bioimage-io" / "artifacts" / "bioimage.io" / "children").read_text())
    assert [it["alias"] for it in children["items"]] == ["affable-shark"] and children["total"] == 1
    assert "serve" in result.serve_hint() or "http.server" in result.serve_hint()


def test_mirror_with_one_weight_format_and_incremental_listing(zoo_server, zoo_fixture, tmp_path):
    zoo_server.publish_folder("other-model", zoo_fixture, rdf_changes={"name": "Other"})
    mirror(["affable-shark"], tmp_path / "m", hub=zoo_server.url, weights="torchscript")
    files = tmp_path / "m" / "bioimage-io" / "artifacts" / "affable-shark" / "files"
    assert (files / "weights.pt").is_file() and not (files / "weights.onnx").exists()
    assert (files / "test_input.npy").is_file()
    mirror(["other-model"], tmp_path / "m", hub=zoo_server.url)  # a second run adds to the listing
    children = json.loads((files.parents[1] / "bioimage.io" / "children").read_text())
    assert sorted(it["alias"] for it in children["items"]) == ["affable-shark", "other-model"]


def test_load_pull_and_search_from_a_static_mirror(mirror_hub, zoo_fixture):
    result = pull("affable-shark", all_files=True)
    assert result.version == "v0"  # the manifest came from the mirror's index.html
    for rel in ("weights.onnx", "weights.pt", "test_input.npy"):
        assert hashlib.sha256(result.files[rel].read_bytes()).hexdigest() == \
            hashlib.sha256((zoo_fixture / rel).read_bytes()).hexdigest()
    package = bioimgzoo.open_package("affable-shark")
    assert package.name == "UNet 2D Nuclei Broad"
    hits = search("nuclei")
    assert [h.id for h in hits] == ["affable-shark"] and hits[0].weight_formats == ["onnx", "torchscript"]
    assert [h.id for h in search(tags=["denoising"])] == ["other-model"]
    with pytest.raises(ModelNotFoundError, match="Did you mean 'affable-shark'"):
        source_for_id("affable-sharc")


def test_mirror_lacking_a_file_says_so(zoo_server, static_server, tmp_path, monkeypatch):
    mirror(["affable-shark"], tmp_path / "m", hub=zoo_server.url, weights="torchscript")
    monkeypatch.setenv("BIOIMGZOO_HUB", static_server(tmp_path / "m"))
    monkeypatch.setenv("BIOIMGZOO_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(DownloadError, match="weights.onnx.*HTTP 404.*mirror"):
        pull("affable-shark", weights="onnx")
    assert pull("affable-shark", weights="torchscript").files["weights.pt"].is_file()


def test_predict_with_a_model_loaded_from_the_mirror(mirror_hub, zoo_fixture):
    pytest.importorskip("bioimgzoo.runtime.model", reason="the runtime (bioimgzoo.load) has not landed yet")
    model = bioimgzoo.load("affable-shark", weights="onnx", device="cpu")
    test_input = np.load(zoo_fixture / "test_input.npy")
    expected = np.load(zoo_fixture / "test_output.npy")
    output = np.asarray(model.predict(test_input))
    assert output.shape == expected.shape
    np.testing.assert_allclose(output, expected, rtol=1e-3, atol=1e-3)
    # the cache now holds the rdf and the onnx weights only (lazy files)
    assert sorted(source_for_id("affable-shark").snapshot_dir.iterdir()) == sorted(
        source_for_id("affable-shark").snapshot_dir / n for n in ("rdf.yaml", "weights.onnx"))


def test_publish_a_local_package_then_load_it_by_id(zoo_fixture, static_server, tmp_path, monkeypatch):
    import zipfile

    from bioimgzoo.errors import HubError
    from bioimgzoo.hub import publish

    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
    folder = tmp_path / "zoo"
    with pytest.raises(HubError, match="no id"):
        publish(z, folder)
    assert publish(z, folder, id="lab-nuclei") == "lab-nuclei"
    files = folder / "bioimage-io" / "artifacts" / "lab-nuclei" / "files"
    assert (files / "weights.onnx").read_bytes() == (zoo_fixture / "weights.onnx").read_bytes()
    listing = json.loads((folder / "bioimage-io" / "artifacts" / "bioimage.io" / "children").read_text())
    assert [it["alias"] for it in listing["items"]] == ["lab-nuclei"]
    monkeypatch.setenv("BIOIMGZOO_HUB", static_server(folder))
    x = np.load(zoo_fixture / "test_input.npy")
    out = bioimgzoo.load("lab-nuclei").predict(x, axes="bcyx")
    np.testing.assert_allclose(out, np.load(zoo_fixture / "test_output.npy"), rtol=1e-3, atol=1e-3)
