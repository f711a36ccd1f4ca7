"""Resolving zoo ids, pulling lazily, pinning, offline mode (against a real local HTTP server)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

import bioimgzoo
from bioimgzoo.errors import HubError, ModelNotFoundError, OfflineError, WeightsError
from bioimgzoo.hub import cache_layout, pull, source_for_id, source_for_url
from bioimgzoo.hub.endpoints import parse_zoo_id

ONNX_SHA = "85f5ac80fa977fea3562ef97c8c5950288be2c4f4cdb5d994807df97008ce088"
TEST_INPUT_SHA = "92768a2e0f2643c80b57afa5494019a5aafe5b0d92fe36ae740763adf3594a57"


def blobs_all_valid() -> list[str]:
    """Names of all blobs, asserting each one hashes to its name."""
    blobs = cache_layout().blobs_dir
    names = sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []
    for name in names:
        assert hashlib.sha256((blobs / name).read_bytes()).hexdigest() == name, f"blob {name} is corrupt"
    return names


def test_fresh_pull_fetches_only_rdf_and_one_weight_format(zoo_hub):
    result = pull("affable-shark")
    assert result.version == "v0"
    assert result.weights_format == "onnx"
    assert set(result.files) == {"rdf.yaml", "weights.onnx"}
    assert result.downloaded == ["rdf.yaml", "weights.onnx"]
    # lazy: nothing else was requested from the server
    assert zoo_hub.count("weights.pt") == 0 and zoo_hub.count("test_") == 0 and zoo_hub.count("cover") == 0
    # the request followed the redirect to storage and sent the pinned version
    assert zoo_hub.count("/files/weights.onnx?version=v0") == 1
    assert zoo_hub.count("/storage/affable-shark/v0/weights.onnx") == 1
    onnx = result.files["weights.onnx"]
    assert onnx.name == "weights.onnx" and hashlib.sha256(onnx.read_bytes()).hexdigest() == ONNX_SHA
    # the snapshot folder is a plain package folder
    assert (result.folder / "rdf.yaml").read_bytes() == (result.files["rdf.yaml"]).read_bytes()
    assert ONNX_SHA in blobs_all_valid()


def test_second_load_needs_no_network(zoo_hub, zoo_fixture):
    pull("affable-shark")
    before = zoo_hub.count()
    zoo_hub.stop()  # nothing answers any more
    package = bioimgzoo.open_package("affable-shark")
    assert package.name == "UNet 2D Nuclei Broad"
    assert package.source.name.startswith("zoo model affable-shark (version v0)")
    onnx = package.file(package.descr.weights.onnx)
    assert onnx.read_bytes() == (zoo_fixture / "weights.onnx").read_bytes()
    assert zoo_hub.count() == before


def test_second_load_sends_no_request_while_server_runs(zoo_hub):
    pull("affable-shark")
    before = zoo_hub.count()
    source = source_for_id("affable-shark")
    source.read_rdf()
    source.fetch("weights.onnx", sha256=ONNX_SHA)
    pull("affable-shark")
    assert zoo_hub.count() == before


def test_file_missing_from_cache_after_server_stopped_is_a_clear_error(zoo_hub):
    from bioimgzoo.errors import DownloadError

    pull("affable-shark")
    url = zoo_hub.url
    zoo_hub.stop()
    package = bioimgzoo.open_package("affable-shark")
    with pytest.raises(DownloadError) as err:
        package.file(package.descr.inputs[0].test_tensor)
    msg = str(err.value)
    assert "cannot connect" in msg and url.split("//")[1] in msg and "--offline" in msg


def test_offline_hit_touches_no_network(zoo_hub, monkeypatch):
    pull("affable-shark")
    before = zoo_hub.count()
    monkeypatch.setenv("BIOIMGZOO_OFFLINE", "1")
    package = bioimgzoo.open_package("affable-shark")
    assert package.file(package.descr.weights.onnx).is_file()
    assert zoo_hub.count() == before
    # a file that was never pulled: offline mode says so instead of downloading
    with pytest.raises(OfflineError, match="weights.pt.*offline mode is on.*--all-files"):
        package.file(package.descr.weights.torchscript)
    assert zoo_hub.count() == before


def test_offline_miss_fails_clearly_without_network(zoo_hub):
    with pytest.raises(OfflineError) as err:
        source_for_id("affable-shark", offline=True)
    assert "affable-shark is not in the cache" in str(err.value)
    assert "bioimgzoo pull affable-shark" in str(err.value)
    assert zoo_hub.count() == 0
    pull("affable-shark/v0")  # only an explicit version is cached: "latest" is unknown offline
    with pytest.raises(OfflineError, match=r"Cached versions: v0 \(load affable-shark/v0\)"):
        source_for_id("affable-shark", offline=True)


def test_offline_uses_a_pin_made_under_another_hub(zoo_hub, monkeypatch):
    pull("affable-shark")
    monkeypatch.setenv("BIOIMGZOO_HUB", "http://127.0.0.1:9")
    source = source_for_id("affable-shark", offline=True)
    assert source.version == "v0"
    assert source.fetch("weights.onnx", sha256=ONNX_SHA).is_file()


def test_version_pinning_and_update(zoo_hub, zoo_fixture):
    first = pull("affable-shark")
    assert first.version == "v0"
    zoo_hub.publish_folder("affable-shark", zoo_fixture, rdf_changes={"name": "UNet 2D Nuclei Broad v2"})
    before = zoo_hub.count()
    # pinned: the newer version is not looked at, and no request is sent
    again = bioimgzoo.open_package("affable-shark")
    assert again.name == "UNet 2D Nuclei Broad" and zoo_hub.count() == before
    # explicit update re-resolves latest
    updated = pull("affable-shark", update=True)
    assert updated.version == "v1"
    assert bioimgzoo.open_package("affable-shark").name == "UNet 2D Nuclei Broad v2"
    # the weights are shared content: no second download
    assert updated.downloaded == ["rdf.yaml"]
    # explicit versions, in both spellings, and the full artifact id
    assert bioimgzoo.open_package("affable-shark/v0").name == "UNet 2D Nuclei Broad"
    assert source_for_id("affable-shark/0").version == "v0"
    assert source_for_id("bioimage-io/affable-shark/v1").version == "v1"
    with pytest.raises(ModelNotFoundError, match=r"no version 'v7'.*available: v0, v1"):
        source_for_id("affable-shark/v7")


def test_draft_needs_explicit_opt_in(zoo_hub, zoo_fixture):
    zoo_hub.publish_folder("affable-shark", zoo_fixture, rdf_changes={"name": "staged"}, stage=True)
    with pytest.raises(HubError, match="unreviewed staged.*allow_draft=True.*--draft"):
        source_for_id("affable-shark/draft")
    assert zoo_hub.count() == 0
    source = source_for_id("affable-shark/draft", allow_draft=True)
    assert source.version == "stage" and "staged draft" in source.name
    assert yaml.safe_load(source.read_rdf()[0])["name"] == "staged"
    assert source.fetch("weights.onnx", sha256=ONNX_SHA).is_file()
    assert zoo_hub.count("?version=stage") >= 2
    # the published latest is unaffected
    assert source_for_id("affable-shark").version == "v0"


def test_typo_suggests_the_close_match(zoo_hub):
    with pytest.raises(ModelNotFoundError) as err:
        source_for_id("afable-shark")
    assert "did you mean 'affable-shark'" in str(err.value).lower()
    assert zoo_hub.url in str(err.value)


def test_unknown_id_without_close_match(zoo_hub):
    with pytest.raises(ModelNotFoundError) as err:
        source_for_id("completely-different")
    assert "did you mean" not in str(err.value).lower()
    assert "bioimgzoo search" in str(err.value)


def test_legacy_id_map_fallback(zoo_hub, monkeypatch):
    zoo_hub.add_legacy_id("old-model/1", "affable-shark", "v0")
    monkeypatch.setenv("BIOIMAGEIO_ID_MAP", f"{zoo_hub.url}/id_map.json")
    source = source_for_id("old-model/1")
    assert source.pin.origin == "id_map"
    assert source.fetch("weights.onnx", sha256=ONNX_SHA).is_file()
    before = zoo_hub.count()
    assert source_for_id("old-model/1").pin.rdf_sha256 == source.pin.rdf_sha256
    assert zoo_hub.count() == before  # pinned like any id


def test_collection_http_pattern_is_honoured(zoo_server, monkeypatch):
    monkeypatch.delenv("BIOIMGZOO_HUB")
    monkeypatch.setenv("BIOIMAGEIO_COLLECTION_HTTP_PATTERN",
                       f"{zoo_server.url}/bioimage-io/artifacts/{{bioimageio_id}}/files/rdf.yaml")
    source = source_for_id("affable-shark")
    assert source.version == "v0" and source.base_url.startswith(zoo_server.url)
    # a pattern of another shape: the rdf URL as is, siblings relative to it
    monkeypatch.setenv("BIOIMAGEIO_COLLECTION_HTTP_PATTERN", f"{zoo_server.url}/storage/{{bioimageio_id}}/rdf.yaml")
    source = source_for_id("affable-shark/v0")
    assert source.pin.origin == "pattern"
    assert source.fetch("weights.onnx", sha256=ONNX_SHA).is_file()
    # --hub / BIOIMGZOO_HUB win over the pattern
    monkeypatch.setenv("BIOIMGZOO_HUB", "http://127.0.0.1:9")
    assert source_for_id("affable-shark", hub=zoo_server.url).pin.origin == "zoo"


def test_source_for_url_is_cached_and_keeps_the_version_query(zoo_hub):
    url = f"{zoo_hub.url}/bioimage-io/artifacts/affable-shark/files/rdf.yaml?version=v0"
    package = bioimgzoo.open_package(url)
    assert package.name == "UNet 2D Nuclei Broad"
    assert package.file(package.descr.weights.onnx).is_file()
    assert zoo_hub.count("/files/weights.onnx?version=v0") == 1
    before = zoo_hub.count()
    again = source_for_url(url, offline=True)
    assert again.fetch("weights.onnx", sha256=ONNX_SHA).is_file()
    assert zoo_hub.count() == before


def test_fetch_url_keeps_the_file_name_and_verifies(zoo_hub):
    from bioimgzoo.errors import IntegrityError
    from bioimgzoo.hub import fetch_url

    url = f"{zoo_hub.url}/storage/affable-shark/v0/test_input.npy"
    path = fetch_url(url, sha256=TEST_INPUT_SHA)
    assert path.name == "test_input.npy"
    # content is addressed by its declared sha256: the same content under another URL is not fetched again
    before = zoo_hub.count()
    assert fetch_url(f"{zoo_hub.url}/storage/elsewhere/test_input.npy", sha256=TEST_INPUT_SHA).is_file()
    assert zoo_hub.count() == before
    # a URL whose content differs from the declared sha256 is refused and nothing is cached
    with pytest.raises(IntegrityError, match="sha256 mismatch.*Nothing was cached"):
        fetch_url(f"{zoo_hub.url}/storage/affable-shark/v0/test_output.npy", sha256=ONNX_SHA)
    assert not cache_layout().blob(ONNX_SHA).exists()


def test_pull_weights_choice_and_all_files(zoo_hub):
    ts = pull("affable-shark", weights="torchscript")
    assert set(ts.files) == {"rdf.yaml", "weights.pt"}
    with pytest.raises(WeightsError, match="no keras_hdf5 weights; available: onnx, torchscript"):
        pull("affable-shark", weights="keras_hdf5")
    everything = pull("affable-shark", all_files=True)
    assert {"weights.onnx", "weights.pt", "test_input.npy", "test_output.npy", "cover0.png",
            "README.md"} <= set(everything.files)
    assert "weights.pt" not in everything.downloaded  # already cached by the first pull
    # everything is there: the snapshot opens as a plain folder package, offline
    folder_pkg = bioimgzoo.open_package(everything.folder)
    assert folder_pkg.file(folder_pkg.descr.inputs[0].test_tensor).is_file()
    blobs_all_valid()


def test_parse_zoo_id_forms():
    assert parse_zoo_id("affable-shark").request == "latest"
    assert parse_zoo_id("affable-shark/latest").version is None
    assert parse_zoo_id("bioimage-io/affable-shark/1.2").version == "1.2"
    assert parse_zoo_id("affable-shark/draft").draft and parse_zoo_id("affable-shark/stage").draft
    assert parse_zoo_id("huggingface/user/repo/1.0").huggingface == "user/repo"
    with pytest.raises(ModelNotFoundError):
        parse_zoo_id("../etc")


def test_hub_must_be_http(monkeypatch):
    with pytest.raises(HubError, match="not an http"):
        source_for_id("affable-shark", hub="/some/folder")


def test_cache_dir_from_environment(zoo_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_CACHE", str(tmp_path / "elsewhere"))
    pull("affable-shark")
    assert (tmp_path / "elsewhere" / "blobs" / ONNX_SHA).is_file()
    assert (tmp_path / "elsewhere" / "blobs" / ONNX_SHA).stat().st_mode & 0o222 == 0  # blobs are read-only
    assert isinstance(cache_layout().root, Path)


def test_progress_bars_do_not_get_in_the_way(zoo_hub, capsys):
    result = pull("affable-shark", all_files=True, progress=True)
    assert len(result.downloaded) >= 6
    assert "Traceback" not in capsys.readouterr().err


def test_huggingface_ids_map_to_the_spec_url_pattern():
    with pytest.raises(OfflineError, match=r"https://huggingface.co/user/repo/resolve/v1.0/package/bioimageio.yaml"):
        source_for_id("huggingface/user/repo/1.0", offline=True)
