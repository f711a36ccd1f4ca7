"""Failures: corrupt files, cut connections, HTTP errors, timeouts, killed processes, concurrency."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bioimgzoo.errors import DownloadError, IntegrityError, ModelNotFoundError, OfflineError
from bioimgzoo.hub import cache_layout, pull, source_for_id

ONNX_SHA = "85f5ac80fa977fea3562ef97c8c5950288be2c4f4cdb5d994807df97008ce088"
ONNX_STORAGE = "/storage/affable-shark/v0/weights.onnx"


def assert_nothing_partial_is_trusted() -> None:
    """Every blob hashes to its name, and no temp download is left behind."""
    layout = cache_layout()
    if layout.blobs_dir.is_dir():
        for blob in layout.blobs_dir.iterdir():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    if layout.tmp_dir.is_dir():
        assert list(layout.tmp_dir.iterdir()) == []


def onnx_link_exists() -> bool:
    return any(p.name == "weights.onnx" for p in cache_layout().packages_dir.rglob("*"))


def test_corrupt_file_on_server_is_refused_and_not_cached(zoo_hub):
    zoo_hub.corrupt(ONNX_STORAGE)
    with pytest.raises(IntegrityError) as err:
        pull("affable-shark")
    msg = str(err.value)
    assert "weights.onnx" in msg and "sha256 mismatch" in msg and ONNX_SHA in msg and "Nothing was cached" in msg
    assert not cache_layout().blob(ONNX_SHA).exists() and not onnx_link_exists()
    assert_nothing_partial_is_trusted()
    zoo_hub.clear_faults()  # the server is fixed: the next pull works
    assert pull("affable-shark").files["weights.onnx"].is_file()


def test_connection_cut_midway_is_retried(zoo_hub):
    zoo_hub.cut(ONNX_STORAGE, times=1)
    result = pull("affable-shark")
    assert zoo_hub.count(ONNX_STORAGE) == 2
    assert hashlib.sha256(result.files["weights.onnx"].read_bytes()).hexdigest() == ONNX_SHA
    assert_nothing_partial_is_trusted()


def test_connection_cut_every_time_gives_up_cleanly_then_a_retry_works(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_RETRIES", "1")
    zoo_hub.cut(ONNX_STORAGE, times=None)
    with pytest.raises(DownloadError) as err:
        pull("affable-shark")
    assert "weights.onnx" in str(err.value) and "gave up after 2 attempts" in str(err.value)
    assert zoo_hub.count(ONNX_STORAGE) == 2
    assert not cache_layout().blob(ONNX_SHA).exists() and not onnx_link_exists()
    assert_nothing_partial_is_trusted()
    zoo_hub.clear_faults()
    assert pull("affable-shark").downloaded == ["weights.onnx"]  # the rdf was pinned before the failure


def test_http_404_on_a_file_is_not_retried(zoo_hub):
    zoo_hub.fail("/files/weights.onnx", 404)
    with pytest.raises(DownloadError) as err:
        pull("affable-shark")
    msg = str(err.value)
    assert "HTTP 404" in msg and f"{zoo_hub.url}/bioimage-io/artifacts/affable-shark/files/weights.onnx" in msg
    assert "mirror" in msg  # the fix
    assert zoo_hub.count("/files/weights.onnx") == 1


def test_unknown_model_is_model_not_found(zoo_hub):
    with pytest.raises(ModelNotFoundError, match="no model 'no-such-model'"):
        pull("no-such-model")


def test_http_500_is_retried_then_reported(zoo_hub):
    zoo_hub.fail(ONNX_STORAGE, 500)
    with pytest.raises(DownloadError) as err:
        pull("affable-shark")
    msg = str(err.value)
    assert "HTTP 500" in msg and "gave up after 3 attempts" in msg and "try again later" in msg
    assert zoo_hub.count(ONNX_STORAGE) == 3  # BIOIMGZOO_RETRIES=2 in these tests
    assert_nothing_partial_is_trusted()


def test_http_500_once_recovers(zoo_hub):
    zoo_hub.fail("/bioimage-io/artifacts/affable-shark/files/rdf.yaml", 503, times=1)
    assert pull("affable-shark").version == "v0"


def test_server_error_on_the_manifest_is_not_mistaken_for_a_missing_model(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_RETRIES", "0")
    zoo_hub.fail("/bioimage-io/artifacts/affable-shark", 500)
    with pytest.raises(DownloadError, match="HTTP 500") as err:
        source_for_id("affable-shark")
    assert not isinstance(err.value, ModelNotFoundError)


def test_timeout_is_reported_with_the_fix(zoo_hub, monkeypatch):
    source = source_for_id("affable-shark")  # resolved with the normal timeout
    monkeypatch.setenv("BIOIMGZOO_TIMEOUT", "0.3")
    monkeypatch.setenv("BIOIMGZOO_RETRIES", "1")
    zoo_hub.slow(ONNX_STORAGE, 1.5)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        source.fetch("weights.onnx", sha256=ONNX_SHA)
    assert time.monotonic() - start < 3
    msg = str(err.value)
    assert "timed out after 0.3 s" in msg and "BIOIMGZOO_TIMEOUT" in msg and "gave up after 2 attempts" in msg
    assert not cache_layout().blob(ONNX_SHA).exists()


def test_non_description_answer_is_never_pinned(zoo_hub):
    zoo_hub.publish("login-page", {"rdf.yaml": b"<!DOCTYPE html><html>please log in</html>"})
    with pytest.raises(DownloadError, match="not a bioimage.io description.*DOCTYPE"):
        source_for_id("login-page")
    assert not list(cache_layout().packages_dir.rglob("*.json"))


def test_threads_pulling_the_same_model_download_once(zoo_hub):
    zoo_hub.trickle(ONNX_STORAGE, chunk=256 << 10, seconds=0.02)
    paths, errors = [], []

    def worker():
        try:
            paths.append(source_for_id("affable-shark").fetch("weights.onnx", sha256=ONNX_SHA))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(paths) == 3 and len(set(paths)) == 1
    assert zoo_hub.count(ONNX_STORAGE) == 1  # the others waited on the lock, then hit the cache
    assert zoo_hub.count("/files/rdf.yaml") == 1
    assert_nothing_partial_is_trusted()


# a child that resolves the id and downloads the weights (no bioimageio.spec import: starts fast)
_PULL_SCRIPT = ("from bioimgzoo.hub import source_for_id; "
                f"print(source_for_id('affable-shark').fetch('weights.onnx', sha256='{ONNX_SHA}'))")


def _child_env() -> dict:
    env = dict(os.environ)
    env["BIOIMGZOO_RETRIES"] = "0"
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_killed_process_leaves_nothing_a_later_load_trusts(zoo_hub):
    zoo_hub.trickle(ONNX_STORAGE, chunk=64 << 10, seconds=0.1)  # ~3 s for the whole file: killed long before
    proc = subprocess.Popen([sys.executable, "-c", _PULL_SCRIPT], env=_child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert zoo_hub.body_started.wait(60), "the child never started downloading"
        time.sleep(0.3)
        assert proc.poll() is None, "the child finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    layout = cache_layout()
    # the partial download exists only as a temp file, which no lookup reads
    partial = list(layout.tmp_dir.iterdir())
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < 1806764
    assert not layout.blob(ONNX_SHA).exists() and not onnx_link_exists()
    for blob in layout.blobs_dir.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    # the pin (rdf resolved before the kill) is complete; the weights are not cached
    source = source_for_id("affable-shark", offline=True)
    with pytest.raises(OfflineError, match="weights.onnx"):
        source.fetch("weights.onnx", sha256=ONNX_SHA)
    # retried: the lock of the killed process is free, the download completes and verifies
    zoo_hub.clear_faults()
    result = pull("affable-shark")
    assert hashlib.sha256(result.files["weights.onnx"].read_bytes()).hexdigest() == ONNX_SHA
    assert layout.verify().ok
    assert layout.sweep_tmp(max_age=0) == 1 and list(layout.tmp_dir.iterdir()) == []


def test_concurrent_processes_pull_the_same_model(zoo_hub):
    zoo_hub.trickle(ONNX_STORAGE, chunk=256 << 10, seconds=0.05)
    procs = [subprocess.Popen([sys.executable, "-c", _PULL_SCRIPT], env=_child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]  # the same cached path
    assert zoo_hub.count(ONNX_STORAGE) == 1
    assert_nothing_partial_is_trusted()
