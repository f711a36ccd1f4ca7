"""``bioimgzoo pull | search | cache | mirror`` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bioimgzoo.cli import main


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args, input=None):
        result = runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
        assert "Traceback" not in result.output
        return result

    return invoke


def test_pull_and_offline_second_time(cli, zoo_hub):
    result = cli("pull", "affable-shark")
    assert result.exit_code == 0, result.output
    assert "zoo model affable-shark (version v0)" in result.output
    assert "weights.onnx" in result.output and "weights.pt" not in result.output and "folder:" in result.output
    zoo_hub.stop()
    again = cli("pull", "affable-shark", "--offline")
    assert again.exit_code == 0 and "0 downloaded" in again.output


def test_pull_options(cli, zoo_hub, zoo_fixture):
    assert "weights.pt" in cli("pull", "affable-shark", "--weights", "torchscript").output
    everything = cli("pull", "affable-shark/v0", "--all-files", "--hub", zoo_hub.url)
    assert everything.exit_code == 0 and "test_input.npy" in everything.output
    zoo_hub.publish_folder("affable-shark", zoo_fixture, rdf_changes={"name": "Newer"})
    assert "(version v0)" in cli("pull", "affable-shark").output  # pinned
    assert "(version v1)" in cli("pull", "affable-shark", "--update").output
    zoo_hub.publish_folder("affable-shark", zoo_fixture, stage=True)
    refused = cli("pull", "affable-shark/draft")
    assert refused.exit_code == 1 and "--draft" in refused.output
    assert cli("pull", "affable-shark/draft", "--draft").exit_code == 0


def test_pull_errors_are_one_clear_line(cli, zoo_hub):
    typo = cli("pull", "afable-shark")
    assert typo.exit_code == 1 and "Did you mean 'affable-shark'" in typo.output
    offline = cli("pull", "affable-shark", "--offline")
    assert offline.exit_code == 1 and "not in the cache" in offline.output and "offline" in offline.output
    zoo_hub.fail("/storage/", 500)
    broken = cli("pull", "affable-shark")
    assert broken.exit_code == 1 and "HTTP 500" in broken.output
    no_hub = cli("pull", "affable-shark", "--hub", "http://127.0.0.1:9")
    assert no_hub.exit_code == 1 and "cannot connect to 127.0.0.1:9" in no_hub.output


def test_search(cli, zoo_hub):
    zoo_hub.publish_listing_only("model-a", name="Denoiser A", tags=["denoising"], download_count=1)
    result = cli("search")
    assert result.exit_code == 0
    assert "affable-shark" in result.output and "model-a" in result.output and "onnx" in result.output
    tagged = cli("search", "--tag", "denoising", "--limit", "5")
    assert "model-a" in tagged.output and "affable-shark" not in tagged.output
    assert "no models found" in cli("search", "nothing-like-this").output


def test_cache_commands(cli, zoo_hub):
    assert "is empty" in cli("cache", "list").output
    cli("pull", "affable-shark")
    listing = cli("cache", "list")
    assert listing.exit_code == 0 and "affable-shark" in listing.output and "v0" in listing.output
    verify = cli("cache", "verify")
    assert verify.exit_code == 0 and "all intact" in verify.output
    assert "not in the cache" in cli("cache", "clear", "other-model").output
    assert "removed affable-shark" in cli("cache", "clear", "affable-shark").output
    cli("pull", "affable-shark")
    aborted = cli("cache", "clear", input="n\n")
    assert aborted.exit_code == 1 and "affable-shark" in cli("cache", "list").output
    assert cli("cache", "clear", "--yes").exit_code == 0
    assert "is empty" in cli("cache", "list").output


def test_cache_verify_fails_on_corruption(cli, zoo_hub):
    import os

    from bioimgzoo.hub import cache_layout

    cli("pull", "affable-shark")
    blob = cache_layout().blob("85f5ac80fa977fea3562ef97c8c5950288be2c4f4cdb5d994807df97008ce088")
    os.chmod(blob, 0o644)
    blob.write_bytes(b"corrupt")
    result = cli("cache", "verify")
    assert result.exit_code == 1 and "corrupt" in result.output


def test_mirror(cli, zoo_hub, tmp_path):
    result = cli("mirror", "affable-shark", "--to", tmp_path / "m", "--weights", "onnx")
    assert result.exit_code == 0 and "mirrored affable-shark (v0)" in result.output
    assert "python -m http.server" in result.output and "BIOIMGZOO_HUB" in result.output
    children = json.loads((tmp_path / "m/bioimage-io/artifacts/bioimage.io/children").read_text())
    assert children["items"][0]["alias"] == "affable-shark"
    missing = cli("mirror", "--to", tmp_path / "m")
    assert missing.exit_code == 2  # click usage error: no ids
