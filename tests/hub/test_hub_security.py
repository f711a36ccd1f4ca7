"""Hostile packages, servers and caches against the zoo client (issue 8, hub side).

Every attack is built here: packages with escaping ids or symlinked files,
servers that send endless, oversized or dripping bodies, caches that are a
file, read-only or tampered with, listings with escape sequences and rich
markup.  Each must be refused (or be harmless) with one clear message.
Servers listen on 127.0.0.1 only; every hostile body is bounded in bytes and
seconds (see ``tests/hub/zoo_server.py``), so a regression fails, not hangs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bioimgzoo.cli import main
from bioimgzoo.errors import (ConfigError, DownloadError, HubError, IntegrityError, LimitExceededError,
                              PackageError)
from bioimgzoo.hub import cache_layout, mirror, publish, pull, source_for_id
from bioimgzoo.hub import transport

from bioimgzoo.testing.zoo_server import ZooServer

ONNX_SHA = "85f5ac80fa977fea3562ef97c8c5950288be2c4f4cdb5d994807df97008ce088"
ONNX_STORAGE = "/storage/affable-shark/v0/weights.onnx"
RDF_STORAGE = "/storage/affable-shark/v0/rdf.yaml"
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not-for-the-mirror"


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert "Traceback" not in result.output
        return result

    return invoke


def assert_one_error(result, *needles: str) -> str:
    """Exit 1, exactly one ``Error:`` line that names every needle, no traceback."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output
    return errors[0]


def assert_cache_clean() -> None:
    """No partial download left, and every blob hashes to its name."""
    layout = cache_layout()
    if layout.tmp_dir.is_dir():
        assert list(layout.tmp_dir.iterdir()) == []
    if layout.blobs_dir.is_dir():
        for blob in layout.blobs_dir.iterdir():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def snapshot_of(name: str = "weights.onnx") -> Path:
    return source_for_id("affable-shark", offline=True).snapshot_dir / name


def package_copy(zoo_fixture: Path, dest: Path, **rdf_changes) -> Path:
    """A writable copy of the fixture package, with top-level rdf fields changed."""
    shutil.copytree(zoo_fixture, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dest.chmod(0o755)
    if rdf_changes:
        rdf = yaml.safe_load((dest / "rdf.yaml").read_text())
        rdf.update(rdf_changes)
        (dest / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return dest


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()] if folder.exists() else []


# ============================================================== 1. publishing escapes the mirror

@pytest.mark.parametrize("bad_id", ["../../../victim", "..", "a/../../victim", "a/b", "a\\b", "/abs",
                                    "bioimage.io", "x" * 200, "-leading-dash", "sp ace"])
def test_publish_refuses_an_id_that_would_leave_the_mirror(zoo_fixture, tmp_path, bad_id):
    victim = tmp_path / "victim"
    (victim / "files").mkdir(parents=True)
    (victim / "files" / "keep.txt").write_text("precious")
    (victim / "keep.txt").write_text("precious too")
    before = tree(tmp_path / "victim")
    package = package_copy(zoo_fixture, tmp_path / "pkg", id=bad_id)
    zoo = tmp_path / "deep" / "er" / "mirror"
    with pytest.raises(HubError) as err:
        publish(package, zoo)
    msg = str(err.value)
    assert "cannot be used as a mirror folder name" in msg and "id=" in msg
    assert repr(bad_id if len(bad_id) <= 80 else bad_id[:77] + "...") in msg
    assert tree(tmp_path / "victim") == before  # nothing written, nothing deleted
    assert not zoo.exists() and not (tmp_path / "deep" / "victim").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "victim"]
    # the same refusal for an explicit id=
    clean = package_copy(zoo_fixture, tmp_path / "clean")
    with pytest.raises(HubError, match="cannot be used as a mirror folder name"):
        publish(clean, zoo, id=bad_id)
    assert tree(tmp_path / "victim") == before and not zoo.exists()


@pytest.mark.parametrize("rdf_id", ["../../../victim", "10.5281/zenodo.5764892"])
def test_publish_with_an_unusable_rdf_id_works_with_the_id_the_message_names(zoo_fixture, tmp_path, rdf_id):
    package = package_copy(zoo_fixture, tmp_path / "pkg", id=rdf_id)
    zoo = tmp_path / "mirror"
    with pytest.raises(HubError, match="pass id="):
        publish(package, zoo)
    assert publish(package, zoo, id="lab-nuclei") == "lab-nuclei"
    assert (zoo / "bioimage-io" / "artifacts" / "lab-nuclei" / "files" / "weights.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "pkg"]


def test_mirror_refuses_unsafe_ids_before_anything_is_fetched(zoo_server, tmp_path):
    for bad in ("bioimage.io", "x" * 200):
        with pytest.raises(HubError, match="cannot be used as a mirror folder name"):
            mirror(["affable-shark", bad], tmp_path / "m", hub=zoo_server.url)
    assert not (tmp_path / "m").exists()
    assert zoo_server.count("/bioimage-io/artifacts/affable-shark") == 0  # checked before the first pull


def test_publish_refuses_a_file_path_that_leaves_the_package(zoo_fixture, tmp_path):
    package = package_copy(zoo_fixture, tmp_path / "pkg", id="lab-nuclei", documentation="../outside.md")
    (tmp_path / "outside.md").write_bytes(SECRET)
    with pytest.raises((HubError, PackageError), match="outside.md"):
        publish(package, tmp_path / "zoo")
    assert files_containing(tmp_path / "zoo", SECRET) == []


def test_publish_refuses_a_readme_symlinked_outside_the_package(zoo_fixture, tmp_path, cli):
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    package = package_copy(zoo_fixture, tmp_path / "pkg", id="lab-nuclei")
    (package / "README.md").unlink()
    (package / "README.md").symlink_to(secret)
    zoo = tmp_path / "zoo"
    with pytest.raises((HubError, PackageError), match="symbolic link"):
        publish(package, zoo)
    assert files_containing(zoo, SECRET) == []
    assert not (zoo / "bioimage-io" / "artifacts" / "lab-nuclei").exists()  # refused before any write


def test_publish_refuses_a_symlinked_rdf(zoo_fixture, tmp_path):
    elsewhere = package_copy(zoo_fixture, tmp_path / "elsewhere", id="lab-nuclei")
    package = tmp_path / "pkg"
    package.mkdir()
    for f in elsewhere.iterdir():
        if f.name != "rdf.yaml":
            shutil.copy(f, package / f.name)
    (package / "rdf.yaml").symlink_to(elsewhere / "rdf.yaml")
    with pytest.raises((HubError, PackageError), match="symbolic link"):
        publish(package, tmp_path / "zoo")
    assert not (tmp_path / "zoo" / "bioimage-io" / "artifacts" / "lab-nuclei").exists()


def test_publish_never_deletes_through_a_symlinked_folder_of_an_old_mirror(zoo_fixture, tmp_path):
    package = package_copy(zoo_fixture, tmp_path / "pkg", id="lab-nuclei")
    zoo = tmp_path / "zoo"
    publish(package, zoo)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    files = zoo / "bioimage-io" / "artifacts" / "lab-nuclei" / "files"
    (files / "sub").symlink_to(victim)  # planted in the served folder
    publish(package, zoo)  # stale entries go: the link itself, never what it points at
    assert (victim / "keep.txt").read_text() == "precious"
    assert not (files / "sub").exists()
    shutil.rmtree(files)
    files.symlink_to(victim, target_is_directory=True)
    with pytest.raises(HubError, match="outside the mirror folder"):
        publish(package, zoo)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


def test_mirror_never_copies_a_cache_entry_linked_outside_the_cache(zoo_hub, zoo_fixture, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    pull("affable-shark", all_files=True)
    readme = snapshot_of("README.md")
    readme.unlink()
    readme.symlink_to(secret)  # tampered cache: the snapshot entry leads outside
    result = mirror(["affable-shark"], tmp_path / "m")
    served = tmp_path / "m" / "bioimage-io" / "artifacts" / "affable-shark" / "files"
    assert (served / "README.md").read_bytes() == (zoo_fixture / "README.md").read_bytes()
    assert files_containing(tmp_path / "m", SECRET) == []
    assert "README.md" in result.models[0].files


def test_mirror_refuses_a_source_file_outside_its_package(tmp_path):
    from bioimgzoo.hub.mirror import _check_source_file

    class Source:
        name = "folder pkg"
        root = tmp_path / "pkg"

    Source.root.mkdir()
    (tmp_path / "secret").write_bytes(SECRET)
    (Source.root / "README.md").symlink_to(tmp_path / "secret")
    (Source.root / "ok.md").write_text("fine")
    assert _check_source_file(Source.root / "ok.md", Source(), "ok.md") == Source.root / "ok.md"
    with pytest.raises(HubError, match="symbolic link.*outside the package"):
        _check_source_file(Source.root / "README.md", Source(), "README.md")


# ============================================================== 2. download limits

def test_endless_body_without_content_length_stops_at_the_file_limit(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_MAX_FILE_BYTES", "2000000")  # the genuine weights (1.8 MB) fit
    fault = zoo_hub.endless(ONNX_STORAGE, max_seconds=15)
    start = time.monotonic()
    with pytest.raises(LimitExceededError) as err:
        pull("affable-shark")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "weights.onnx" in msg and "2000000" in msg and "BIOIMGZOO_MAX_FILE_BYTES" in msg
    assert zoo_hub.count(ONNX_STORAGE) == 1  # a limit is not retried
    assert not cache_layout().blob(ONNX_SHA).exists()
    assert_cache_clean()  # the temp file is gone
    deadline = time.monotonic() + 5
    while not fault.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fault.sent and fault.sent[0] < 64 << 20  # the client hung up early
    zoo_hub.clear_faults()
    assert pull("affable-shark").files["weights.onnx"].is_file()  # a fixed server works


def test_announced_length_over_the_limit_is_refused_before_reading(zoo_hub):
    zoo_hub.declare(ONNX_STORAGE, 10 ** 13)
    start = time.monotonic()
    with pytest.raises(LimitExceededError, match=r"weights.onnx.*announces 10000000000000 bytes.*"
                                                 r"BIOIMGZOO_MAX_FILE_BYTES"):
        pull("affable-shark")
    assert time.monotonic() - start < 5
    assert zoo_hub.count(ONNX_STORAGE) == 1
    assert_cache_clean()


def test_a_genuine_file_over_a_lowered_limit_is_refused_up_front(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_MAX_FILE_BYTES", "1000000")
    with pytest.raises(LimitExceededError, match="announces 1806764 bytes.*more than the 1000000 allowed"):
        pull("affable-shark")
    assert_cache_clean()


def test_rdf_over_the_rdf_limit_is_refused(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_MAX_RDF_BYTES", "1000")
    with pytest.raises(LimitExceededError, match="rdf of affable-shark.*BIOIMGZOO_MAX_RDF_BYTES"):
        pull("affable-shark")
    assert not list(cache_layout().packages_dir.rglob("*.json")) if cache_layout().packages_dir.exists() else True


def test_endless_rdf_stops_at_the_rdf_limit(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_MAX_RDF_BYTES", "300000")
    zoo_hub.endless(RDF_STORAGE, max_seconds=15)
    start = time.monotonic()
    with pytest.raises(LimitExceededError, match="passed the 300000 bytes allowed.*BIOIMGZOO_MAX_RDF_BYTES"):
        pull("affable-shark")
    assert time.monotonic() - start < 10
    assert zoo_hub.count(RDF_STORAGE) == 1


def test_endless_listing_is_capped(zoo_hub, monkeypatch, cli):
    monkeypatch.setattr(transport, "MAX_MEMORY_BYTES", 1 << 20)
    zoo_hub.endless("/children", max_seconds=15)
    start = time.monotonic()
    result = cli("search", "nuclei")
    assert_one_error(result, "model listing", "passed the 1048576 bytes allowed")
    assert time.monotonic() - start < 10
    assert zoo_hub.count("/children") == 1


def test_a_body_longer_than_announced_is_an_error():
    class Response:
        headers = {"content-length": "10"}

        def iter_bytes(self, size=None):
            yield b"x" * 8
            yield b"x" * 8
            raise AssertionError("read past the error")

    with pytest.raises(DownloadError, match="more than the 10 bytes it announced"):
        list(transport._read_body(Response(), url="http://127.0.0.1/x", params=None, what="file x",
                                  limit=transport.Limit(100), deadline=transport._Deadline("file x", 60)))


def test_slow_drip_ends_at_the_deadline(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_DOWNLOAD_DEADLINE", "2")
    zoo_hub.drip(ONNX_STORAGE, bytes_per_second=2048, max_seconds=30)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        pull("affable-shark")
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 10, elapsed
    msg = str(err.value)
    assert "weights.onnx" in msg and "within 2 s" in msg and "BIOIMGZOO_DOWNLOAD_DEADLINE" in msg
    assert zoo_hub.count(ONNX_STORAGE) == 1  # the time is up: not retried
    assert_cache_clean()


def test_a_stalled_read_ends_near_the_deadline_even_with_a_long_read_timeout(zoo_hub, monkeypatch):
    # one read may wait BIOIMGZOO_TIMEOUT (30 s here), but never past the deadline
    monkeypatch.setenv("BIOIMGZOO_TIMEOUT", "30")
    monkeypatch.setenv("BIOIMGZOO_DOWNLOAD_DEADLINE", "2")
    zoo_hub.endless(ONNX_STORAGE, chunk=1000, seconds=25, max_seconds=26)
    start = time.monotonic()
    with pytest.raises(DownloadError):
        pull("affable-shark")
    assert time.monotonic() - start < 10


def test_slow_drip_of_an_rdf_ends_at_the_deadline(zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_DOWNLOAD_DEADLINE", "1.5")
    zoo_hub.drip(RDF_STORAGE, bytes_per_second=500, max_seconds=30)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="rdf of affable-shark.*within 1.5 s"):
        pull("affable-shark")
    assert time.monotonic() - start < 10


def test_limit_errors_are_one_message_on_the_command_line(cli, zoo_hub, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_MAX_FILE_BYTES", "2000000")
    zoo_hub.endless(ONNX_STORAGE, max_seconds=15)
    assert_one_error(cli("pull", "affable-shark"), "weights.onnx", "BIOIMGZOO_MAX_FILE_BYTES")
    zoo_hub.clear_faults()
    monkeypatch.setenv("BIOIMGZOO_DOWNLOAD_DEADLINE", "1")
    zoo_hub.drip(ONNX_STORAGE, max_seconds=30)
    assert_one_error(cli("pull", "affable-shark"), "weights.onnx", "BIOIMGZOO_DOWNLOAD_DEADLINE")
    zoo_hub.clear_faults()
    monkeypatch.setenv("BIOIMGZOO_DOWNLOAD_DEADLINE", "soon")
    assert_one_error(cli("pull", "affable-shark"), "BIOIMGZOO_DOWNLOAD_DEADLINE")


# ============================================================== 3. cache robustness

def test_a_cache_that_is_a_file_is_one_clear_error(zoo_hub, tmp_path, monkeypatch, cli):
    import bioimgzoo

    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("oops")
    monkeypatch.setenv("BIOIMGZOO_CACHE", str(not_a_folder))
    for args in (("pull", "affable-shark"), ("cache", "list"), ("cache", "verify")):
        assert_one_error(cli(*args), "BIOIMGZOO_CACHE", "is a file", "folder")
    with pytest.raises(ConfigError, match="BIOIMGZOO_CACHE.*is a file"):
        bioimgzoo.open_package("affable-shark")
    with pytest.raises(ConfigError, match="BIOIMGZOO_CACHE"):
        source_for_id("affable-shark")
    monkeypatch.setenv("BIOIMGZOO_CACHE", str(not_a_folder / "below"))  # a file on the way
    assert_one_error(cli("pull", "affable-shark"), "cannot write to the download cache", "BIOIMGZOO_CACHE")
    assert not_a_folder.read_text() == "oops"


def _run_without_write_permission(args: list[str], env: dict, code: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI (or ``code``) in a process that honours file permissions, also when the tests run as root."""
    cmd = [sys.executable, "-c", code or "import sys; from bioimgzoo.cli import main; sys.argv[0] = 'bioimgzoo'; "
                                        "main()"] + args
    if os.geteuid() == 0:
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
        if shutil.which("setpriv") is None or subprocess.run(drop + ["true"], capture_output=True).returncode:
            pytest.skip("running as root and cannot drop the permission override: read-only folders cannot be tested")
        cmd = drop + cmd
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def _make_read_only(root: Path) -> None:
    for folder, _dirs, _files in os.walk(root):
        os.chmod(folder, 0o555)


def _make_writable(root: Path) -> None:
    for folder, _dirs, _files in os.walk(root):
        os.chmod(folder, 0o755)


def test_a_read_only_cache_is_one_clear_error_and_still_serves_what_it_holds(zoo_hub, tmp_path):
    cache = tmp_path / "ro-cache"
    env = dict(os.environ, BIOIMGZOO_CACHE=str(cache), BIOIMGZOO_HUB=zoo_hub.url, BIOIMGZOO_RETRIES="0")
    env.pop("BIOIMGZOO_OFFLINE", None)
    cache.mkdir()
    _make_read_only(cache)
    try:
        empty = _run_without_write_permission(["pull", "affable-shark"], env)
        assert empty.returncode == 1, empty.stdout + empty.stderr
        assert "Traceback" not in empty.stderr
        assert "cannot write to the download cache" in empty.stderr and "BIOIMGZOO_CACHE" in empty.stderr
        assert len([line for line in empty.stderr.splitlines() if line.startswith("Error:")]) == 1
        _make_writable(cache)
        env_rw = dict(env)
        subprocess.run([sys.executable, "-c", "from bioimgzoo.hub import pull; pull('affable-shark')"],
                       env=env_rw, check=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
        _make_read_only(cache)
        listed = _run_without_write_permission(["cache", "list"], env)
        assert listed.returncode == 0 and "affable-shark" in listed.stdout, listed.stderr
        loaded = _run_without_write_permission(
            [], env, code="import bioimgzoo; p = bioimgzoo.open_package('affable-shark'); "
                          "print(p.file(p.descr.weights.onnx).stat().st_size)")
        assert loaded.returncode == 0 and "1806764" in loaded.stdout, loaded.stderr
        more = _run_without_write_permission(["pull", "affable-shark", "--weights", "torchscript"], env)
        assert more.returncode == 1 and "Traceback" not in more.stderr, more.stderr
        assert "cannot write to the download cache" in more.stderr and "BIOIMGZOO_CACHE" in more.stderr
        api = _run_without_write_permission(
            [], env, code="from bioimgzoo.hub import pull\ntry:\n    pull('affable-shark', weights='torchscript')\n"
                          "except Exception as e:\n    print(type(e).__name__, e)")
        assert api.stdout.startswith("ConfigError cannot write to the download cache"), api.stdout + api.stderr
    finally:
        _make_writable(cache)


def test_a_truncated_blob_is_a_miss_and_downloaded_again(zoo_hub):
    pull("affable-shark")
    blob = cache_layout().blob(ONNX_SHA)
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.truncate(1000)
    assert zoo_hub.count(ONNX_STORAGE) == 1
    result = pull("affable-shark")
    assert result.downloaded == ["weights.onnx"] and zoo_hub.count(ONNX_STORAGE) == 2
    assert hashlib.sha256(result.files["weights.onnx"].read_bytes()).hexdigest() == ONNX_SHA
    assert_cache_clean()


def test_a_damaged_blob_offline_is_an_integrity_error(zoo_hub, cli):
    pull("affable-shark")
    blob = cache_layout().blob(ONNX_SHA)
    blob.chmod(0o644)
    with open(blob, "ab") as f:
        f.write(b"appended")
    with pytest.raises(IntegrityError, match="weights.onnx.*damaged.*offline"):
        pull("affable-shark", offline=True)
    assert_one_error(cli("pull", "affable-shark", "--offline"), "weights.onnx", "damaged")


def test_a_link_to_another_blob_is_not_a_hit(zoo_hub):
    pull("affable-shark")
    layout = cache_layout()
    link = snapshot_of()
    rdf_blob = layout.blob(source_for_id("affable-shark", offline=True).pin.rdf_sha256)
    link.unlink()
    os.link(rdf_blob, link)  # the right name, the wrong content
    result = pull("affable-shark", offline=True)  # the blob is intact: relinked, no network
    assert hashlib.sha256(result.files["weights.onnx"].read_bytes()).hexdigest() == ONNX_SHA
    assert zoo_hub.count(ONNX_STORAGE) == 1


def test_a_symlink_with_the_blob_name_elsewhere_is_not_a_hit(zoo_hub, tmp_path):
    pull("affable-shark")
    decoy = tmp_path / "elsewhere" / ONNX_SHA  # same file name as the blob, outside the cache
    decoy.parent.mkdir()
    decoy.write_bytes(SECRET)
    link = snapshot_of()
    link.unlink()
    link.symlink_to(decoy)
    result = pull("affable-shark", offline=True)
    assert result.files["weights.onnx"].read_bytes() != SECRET
    assert hashlib.sha256(result.files["weights.onnx"].read_bytes()).hexdigest() == ONNX_SHA


def test_a_same_size_corruption_is_found_by_cache_verify(zoo_hub, cli):
    pull("affable-shark")
    blob = cache_layout().blob(ONNX_SHA)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = cli("cache", "verify")  # the full re-hash
    assert result.exit_code == 1 and f"corrupt: blobs/{ONNX_SHA}" in result.output
    assert not blob.exists()
    assert "removed dangling link" in result.output  # the snapshot's hardlink held the bad bytes too
    again = pull("affable-shark")
    assert again.downloaded == ["weights.onnx"]
    assert hashlib.sha256(again.files["weights.onnx"].read_bytes()).hexdigest() == ONNX_SHA
    assert cli("cache", "verify").exit_code == 0


def test_sizes_are_recorded_and_old_blobs_get_a_record_once(zoo_hub):
    pull("affable-shark")
    layout = cache_layout()
    assert layout.recorded_size(ONNX_SHA) == 1806764
    layout.size_path(ONNX_SHA).unlink()  # a blob from before size records
    assert pull("affable-shark", offline=True).downloaded == []
    assert layout.recorded_size(ONNX_SHA) == 1806764


def test_snapshot_files_are_not_symlinks(zoo_hub):
    """Package readers refuse symlinks out of a folder: a snapshot must hold plain (hardlinked) files."""
    result = pull("affable-shark")
    for path in result.files.values():
        assert not path.is_symlink()
        assert os.path.samefile(path, cache_layout().blob(hashlib.sha256(path.read_bytes()).hexdigest()))


# ============================================================== 4. untrusted text from hub listings

HOSTILE_NAMES = {
    "osc-link": "\x1b]8;;http://evil.example\x1b\\click me\x1b]8;;\x1b\\",
    "clear-screen": "Nice model\x1b[2J\x1b[H",
    "rich-link": "[link=http://evil.example]Trusted[/link]",
    "stray-close": "broken [/] name",
    "fake-style": "[bold red]OFFICIAL[/]",
}


@pytest.fixture
def hostile_hub(monkeypatch):
    with ZooServer() as server:
        for alias, name in HOSTILE_NAMES.items():
            server.publish_listing_only(alias, name=name, tags=["hostile", "[/]", "\x1b[31mred"],
                                        weights=("onnx", "[/]"))
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        yield server


def test_search_shows_escape_sequences_and_markup_as_text(cli, hostile_hub, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one row per line: the cells are not folded
    result = cli("search", "--limit", "50")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b" not in out and "\\x1b]8;;http://evil.example\\x1b\\click me" in out
    assert "\\x1b[2J\\x1b[H" in out
    assert "[link=http://evil.example]Trusted[/link]" in out  # printed, not a link
    assert "broken [/] name" in out and "[bold red]OFFICIAL[/]" in out  # printed, not interpreted (nor a crash)
    for alias in HOSTILE_NAMES:
        assert alias in out


def test_search_survives_a_listing_with_fields_of_the_wrong_type(cli, monkeypatch):
    with ZooServer() as server:
        server.children_override = {"items": [
            {"alias": "odd-model", "download_count": "many", "versions": 7,
             "manifest": {"name": "odd", "tags": 5, "weights": ["onnx"]}},
            {"alias": "list-manifest", "manifest": ["not", "a", "mapping"]},
            "not an item", 42,
        ], "total": 4}
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        result = cli("search")
    assert result.exit_code == 0, result.output
    assert "odd-model" in result.output and "list-manifest" in result.output


def test_search_stops_asking_a_listing_that_never_ends(monkeypatch):
    import importlib

    search_module = importlib.import_module("bioimgzoo.hub.search")

    with ZooServer() as server:
        # full pages of junk, no total: a naive client would page forever
        server.children_override = {"items": ["junk"] * 10}
        monkeypatch.setattr(search_module, "MAX_PAGES", 5)
        hits = search_module.search(limit=3, hub=server.url, page_size=10)
        assert hits == [] and server.count("/children") == 5


def test_pull_and_cache_list_escape_a_hostile_version_name(cli, zoo_fixture, monkeypatch):
    with ZooServer() as server:
        server.publish_folder("affable-shark", zoo_fixture, version="v1\x1b[2J[red]")
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        pulled = cli("pull", "affable-shark")
        assert pulled.exit_code == 0, pulled.output
        assert "\x1b" not in pulled.output and "v1\\x1b[2J[red]" in pulled.output
        monkeypatch.setenv("COLUMNS", "400")  # the version cell unfolded
        listed = cli("cache", "list")
        assert listed.exit_code == 0, listed.output
        assert "\x1b" not in listed.output and "\\x1b" in listed.output and "[red]" in listed.output


def test_mirror_manifest_served_as_html_holds_no_markup(zoo_fixture, tmp_path):
    import json

    package = package_copy(zoo_fixture, tmp_path / "pkg", id="lab-nuclei")
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    rdf["description"] = "nuclei <script>alert(1)</script>"
    (package / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    zoo = tmp_path / "zoo"
    publish(package, zoo)
    pages = list(zoo.rglob("index.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert "<" not in text and ">" not in text
        json.loads(text)  # still the manifest a client reads
    # the text itself survives for JSON readers: only its markup characters were escaped
    assert any("<script>alert(1)</script>" in json.dumps(json.loads(p.read_text())) for p in pages)
