"""Hostile packages: code without trust, paths out of the package, bombs, injected text.

Each test builds the attack of issue 8 and shows it refused or harmless: no
marker file written by package code, nothing read outside the package,
bombs refused quickly and small, escape sequences shown escaped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import bioimgzoo
from bioimgzoo import trust
from bioimgzoo.cli import main
from bioimgzoo.errors import (
    InvalidDescriptionError,
    LimitExceededError,
    PackageError,
    UntrustedCodeError,
)
from bioimgzoo.package import ZipSource, open_package, sweep_dead_extractions


def _copy_fixture(zoo_fixture: Path, dest: Path) -> Path:
    shutil.copytree(zoo_fixture, dest)
    return dest


def _edit_rdf(folder: Path, edit) -> Path:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(rdf)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _state_dict_package(zoo_fixture: Path, dest: Path, architecture: dict) -> Path:
    """The fixture plus a pytorch_state_dict entry whose architecture is ``architecture``."""
    import torch

    folder = _copy_fixture(zoo_fixture, dest)
    torch.save({}, folder / "state.pt")

    def edit(rdf):
        rdf["weights"]["pytorch_state_dict"] = {
            "source": "state.pt", "pytorch_version": "2.0", "architecture": architecture}
    return _edit_rdf(folder, edit)


# ------------------------------------------------------------------ 1. code runs only with trust


def _shell_architecture(marker: Path) -> dict:
    return {"import_from": "os", "callable": "system", "kwargs": {"command": f"touch {marker}"}}


def _cli_architecture(args: list) -> dict:
    # the walk-around of the old "any bioimgzoo.* module is trusted" gate
    return {"import_from": "bioimgzoo.cli", "callable": "main", "kwargs": {"args": args, "standalone_mode": False}}


@pytest.mark.parametrize("how", ["load", "predict_cli", "finetune"])
def test_package_chosen_bioimgzoo_callable_does_not_run_without_trust(zoo_fixture, tmp_path, how):
    marker = tmp_path / "marker"
    cache = Path(os.environ["BIOIMGZOO_CACHE"])
    (cache / "keep.txt").parent.mkdir(parents=True, exist_ok=True)
    (cache / "keep.txt").write_text("the user's cache")
    args = ["export", "--module", "os:system", "--kwargs", json.dumps({"command": f"touch {marker}"}),
            "--example", "x", "-o", str(tmp_path / "x.zip")] if how != "finetune" else ["cache", "clear", "--yes"]
    pkg = _state_dict_package(zoo_fixture, tmp_path / "pkg", _cli_architecture(args))
    if how == "load":
        with pytest.raises(UntrustedCodeError, match="bioimgzoo.cli:main"):
            bioimgzoo.load(pkg, weights="pytorch_state_dict")
    elif how == "predict_cli":
        np.save(tmp_path / "img.npy", np.zeros((512, 512), np.float32))
        res = CliRunner().invoke(main, ["predict", str(pkg), str(tmp_path / "img.npy"), "-o", str(tmp_path / "o"),
                                        "--weights", "pytorch_state_dict"])
        assert res.exit_code == 1 and "trust-code" in res.output and "Traceback" not in res.output
    else:
        from bioimgzoo.train.finetune import load_trainable

        with pytest.raises(UntrustedCodeError, match="bioimgzoo.cli:main"):
            load_trainable(open_package(pkg), weights="pytorch_state_dict")
    assert not marker.exists()
    assert (cache / "keep.txt").read_text() == "the user's cache"


def test_library_callable_does_not_run_without_trust(zoo_fixture, tmp_path):
    marker = tmp_path / "marker"
    pkg = _state_dict_package(zoo_fixture, tmp_path / "pkg", _shell_architecture(marker))
    with pytest.raises(UntrustedCodeError, match="os:system"):
        bioimgzoo.load(pkg, weights="pytorch_state_dict")
    assert not marker.exists()


def test_validation_never_hands_core_untrusted_code(zoo_fixture, tmp_path):
    from bioimgzoo.validation import check_package

    marker = tmp_path / "marker"
    pkg = _state_dict_package(zoo_fixture, tmp_path / "pkg", _shell_architecture(marker))
    report = check_package(pkg, weights="pytorch_state_dict", deepimagej=False)
    # os:system as the architecture is a failed safety finding (never "not applicable"), and nothing runs it
    (callables,) = [f for f in report.findings if f.check == "safety.callables"]
    assert callables.status == "failed" and "os:system" in callables.message
    repro = report.reproduction.get("pytorch_state_dict")
    assert repro is None or (repro["status"] == "skipped" and "os:system" in repro["errors"][0])
    assert not report.passed and not marker.exists()


def test_allow_list_is_by_exact_name_not_module_prefix():
    allowed = trust.CodeRef("library architecture", "w", "bioimgzoo.train.nets:UNet2d",
                            "bioimgzoo.train.nets", "UNet2d")
    assert trust.is_trusted(allowed, trust_code=False)
    for module, name in [("bioimgzoo.train.nets", "_conv_block"), ("bioimgzoo.train.nets", "torch"),
                         ("bioimgzoo.cli", "main"), ("bioimgzoo.train.nets.UNet2d", "x"), ("os", "system")]:
        ref = trust.CodeRef("library architecture", "w", f"{module}:{name}", module, name)
        assert not trust.is_trusted(ref, trust_code=False)
        assert trust.is_trusted(ref, trust_code=True)


def test_allow_listed_network_builds_without_trust(zoo_fixture, tmp_path):
    import torch

    from bioimgzoo.train.nets import UNet2d

    net = UNet2d(in_channels=1, out_channels=1, base=4, depth=2)
    pkg = _state_dict_package(zoo_fixture, tmp_path / "pkg", {
        "import_from": "bioimgzoo.train.nets", "callable": "UNet2d",
        "kwargs": {"in_channels": 1, "out_channels": 1, "base": 4, "depth": 2}})
    torch.save(net.state_dict(), pkg / "state.pt")
    model = bioimgzoo.load(pkg, weights="pytorch_state_dict")
    assert model.weights_format == "pytorch_state_dict"


# ------------------------------------------------------------------ 2. nothing read outside the package


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_absolute_weights_path_is_refused(zoo_fixture, tmp_path, kind):
    outside = tmp_path / "elsewhere" / "local.onnx"
    outside.parent.mkdir()
    shutil.copy(zoo_fixture / "weights.onnx", outside)
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    _edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(source=str(outside), sha256=None))
    src = folder
    if kind == "zip":
        src = tmp_path / "pkg.zip"
        with zipfile.ZipFile(src, "w") as zf:
            for f in folder.iterdir():
                zf.write(f, f.name)
    with pytest.raises(PackageError, match="absolute path"):
        bioimgzoo.load(src, weights="onnx")


def test_symlink_out_of_a_package_folder_is_refused(zoo_fixture, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_bytes((zoo_fixture / "weights.onnx").read_bytes())
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    (folder / "weights.onnx").unlink()
    (folder / "weights.onnx").symlink_to(secret)
    _edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(sha256=None))
    with pytest.raises(PackageError, match="symbolic link"):
        bioimgzoo.load(folder, weights="onnx")


def test_symlink_inside_the_package_is_fine(zoo_fixture, tmp_path):
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    (folder / "sub").mkdir()
    shutil.move(folder / "weights.onnx", folder / "sub" / "weights.onnx")
    (folder / "weights.onnx").symlink_to(folder / "sub" / "weights.onnx")
    assert bioimgzoo.load(folder, weights="onnx").weights_format == "onnx"


# ------------------------------------------------------------------ 3. bombs


# Measures its child's own peak RSS.  The child is forked from this small wrapper, not from
# pytest: a process forked (or vforked) from a large one inherits that one's peak in ru_maxrss.
_PEAK_RSS_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print("PEAK_RSS_KIB", usage.ru_maxrss, flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak_rss_mb_of(cmd: list[str], *, timeout: float = 60) -> tuple[float, float, int, str]:
    """Run ``cmd``; return (its own peak RSS in MiB, seconds, exit code, output)."""
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-c", _PEAK_RSS_WRAPPER, *cmd], capture_output=True, text=True,
                         timeout=timeout)
    seconds = time.monotonic() - t
    out = res.stdout + res.stderr
    peak = [line for line in res.stdout.splitlines() if line.startswith("PEAK_RSS_KIB ")]
    assert peak, out
    return int(peak[-1].split()[1]) / 1024, seconds, res.returncode, out


def _alias_bomb() -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "format_version: 0.5.3\ntype: model\nname: bomb\n" + "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_small_and_fast(tmp_path):
    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / "rdf.yaml").write_text(_alias_bomb())
    assert (folder / "rdf.yaml").stat().st_size < 4000
    with pytest.raises(LimitExceededError, match="BIOIMGZOO_MAX_YAML_NODES"):
        open_package(folder)
    rss, seconds, code, out = _peak_rss_mb_of([sys.executable, "-m", "bioimgzoo.cli", "info", str(folder)])
    assert code == 1 and "alias bomb" in out and "Traceback" not in out
    # memory, not time, shows the 400 MB were never inflated (timings on shared machines prove nothing)
    assert rss < 500


def test_deeply_nested_yaml_and_json_give_one_message(tmp_path):
    for name, text in [("rdf.yaml", "a: " + "[" * 50000 + "]" * 50000),
                       ("bioimageio.yaml", '{"a": ' * 50000 + "1" + "}" * 50000)]:
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text(text)
        res = CliRunner().invoke(main, ["info", str(folder)])
        assert res.exit_code == 1 and "levels deep" in res.output and "Traceback" not in res.output


def test_duplicate_yaml_keys_are_refused(zoo_fixture, tmp_path):
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    text = (folder / "rdf.yaml").read_text()
    (folder / "rdf.yaml").write_text(text + "\nname: a second name\n")
    with pytest.raises(InvalidDescriptionError, match="'name' appears twice"):
        open_package(folder)


def test_real_descriptions_stay_within_the_limits(zoo_fixture):
    from bioimgzoo._yaml import load_yaml

    rdfs = [zoo_fixture / "rdf.yaml"] + sorted((zoo_fixture.parents[1] / "zoo-rdfs-2023").glob("*/rdf.yaml"))
    for rdf in rdfs:
        assert isinstance(load_yaml(rdf.read_bytes(), str(rdf)), dict)


def _zip_with_inflating_member(path: Path, member: str, size: int, extra: dict[str, bytes]) -> Path:
    """A zip whose ``member`` is ``size`` zero bytes (deflated to about size/1000)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in extra.items():
            zf.writestr(name, data)
        with zf.open(member, "w", force_zip64=True) as f:
            block = bytes(1 << 24)
            for _ in range(size // len(block)):
                f.write(block)
    return path


def test_zip_whose_rdf_inflates_to_400_mb_is_refused(tmp_path):
    z = _zip_with_inflating_member(tmp_path / "rdfbomb.zip", "rdf.yaml", 400 << 20, {})
    assert z.stat().st_size < 5 << 20
    rss, seconds, code, out = _peak_rss_mb_of([sys.executable, "-m", "bioimgzoo.cli", "info", str(z)])
    assert code == 1 and "BIOIMGZOO_MAX_RDF_BYTES" in out and "Traceback" not in out
    # memory, not time, shows the 400 MB were never inflated (timings on shared machines prove nothing)
    assert rss < 500


def test_zip_member_bomb_is_refused_before_extraction(zoo_fixture, tmp_path):
    z = _zip_with_inflating_member(tmp_path / "bomb.zip", "weights.onnx", 1 << 30,
                                   {"rdf.yaml": (zoo_fixture / "rdf.yaml").read_bytes()})
    assert z.stat().st_size < 3 << 20
    np.save(tmp_path / "img.npy", np.zeros((512, 512), np.float32))
    res = CliRunner().invoke(main, ["predict", str(z), str(tmp_path / "img.npy"), "-o", str(tmp_path / "o"),
                                    "--weights", "onnx"])
    assert res.exit_code == 1 and "zip bomb" in res.output and "Traceback" not in res.output
    src = ZipSource(z)
    assert not src._dir.exists() or not any(p.is_file() for p in src._dir.rglob("*"))


def test_zip_member_over_the_size_limit_is_refused(zoo_fixture, tmp_path, monkeypatch):
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
    monkeypatch.setenv("BIOIMGZOO_MAX_FILE_BYTES", "1000")
    with pytest.raises(LimitExceededError, match="BIOIMGZOO_MAX_FILE_BYTES"):
        bioimgzoo.load(z, weights="onnx")


def test_zip_member_is_hashed_while_extracting(zoo_fixture, tmp_path):
    text = (zoo_fixture / "rdf.yaml").read_text()
    z = tmp_path / "tampered.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("rdf.yaml", text)
        zf.writestr("weights.onnx", b"not the declared weights")
    pkg = open_package(z)
    with pytest.raises(PackageError, match="sha256 mismatch"):
        pkg.file(pkg.descr.weights.onnx)
    assert not (pkg.source._dir / "weights.onnx").exists()


def test_dead_process_extraction_folders_are_swept(zoo_fixture, tmp_path):
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
    script = ("import bioimgzoo, os, sys; p = bioimgzoo.open_package(sys.argv[1]); "
              "p.file(p.descr.weights.onnx); print(p.source._dir.parent, flush=True); os.kill(os.getpid(), 9)")
    out = subprocess.run([sys.executable, "-c", script, str(z)], capture_output=True, text=True, timeout=120)
    left = Path(out.stdout.strip())
    assert out.returncode == -9 and left.is_dir(), out.stderr  # SIGKILL: atexit never ran
    assert left in sweep_dead_extractions(left.parent)
    assert not left.exists()


# ------------------------------------------------------------------ 5. untrusted text


def test_info_shows_escape_sequences_escaped_and_markup_literally(zoo_fixture, tmp_path):
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    evil = "Nuclei \x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\ \x1b[2J [link=http://evil]x[/link] [/] <b>"
    _edit_rdf(folder, lambda rdf: rdf.update(description=evil))
    res = CliRunner().invoke(main, ["info", str(folder)])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output
    assert "\\x1b]8;;http://evil" in res.output and "\\x1b[2J" in res.output
    assert "[link=http://evil]x[/link] [/]" in res.output


def test_markdown_report_has_no_raw_html(zoo_fixture, tmp_path):
    from bioimgzoo.validation import CheckReport

    report = CheckReport(source="x", name="<script>alert(1)</script>",
                         format_errors=["name: <img src=x onerror=alert(1)> | broken"])
    md = report.to_markdown()
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script&gt;" in md


def test_error_messages_do_not_reach_the_terminal_raw(zoo_fixture, tmp_path):
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    _edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(source="\x1b[31mevil.onnx"))
    res = CliRunner().invoke(main, ["predict", str(folder), str(zoo_fixture / "test_input.npy"),
                                    "-o", str(tmp_path / "o"), "--weights", "onnx"])
    assert res.exit_code == 1 and "\x1b[31m" not in res.output


def test_custom_processing_op_does_not_run_without_trust(zoo_fixture, tmp_path):
    marker = tmp_path / "marker"
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    (folder / "op.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef op(x):\n    return x\n")

    def edit(rdf):
        rdf["outputs"][0].setdefault("postprocessing", []).append(
            {"id": "custom", "source": "op.py", "callable": "op", "kwargs": {}})
    _edit_rdf(folder, edit)
    refs = list(trust.code_refs(open_package(folder).descr, weights_format="onnx"))
    assert [r.kind for r in refs] == ["custom op"] and refs[0].target == "op.py:op"
    with pytest.raises(UntrustedCodeError, match="custom processing op op.py:op"):
        bioimgzoo.load(folder, weights="onnx")
    assert not marker.exists()


def test_bad_setting_is_one_message(monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_TIMEOUT", "abc")
    res = CliRunner().invoke(main, ["pull", "affable-shark"])
    assert res.exit_code == 1 and "BIOIMGZOO_TIMEOUT='abc'" in res.output and "Traceback" not in res.output


def test_validation_reads_nothing_outside_the_package(zoo_fixture, tmp_path):
    from bioimgzoo.validation import check_package

    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    _edit_rdf(folder, lambda rdf: rdf["weights"]["onnx"].update(source="/etc/passwd", sha256=None))
    report = check_package(folder, deepimagej=False)
    assert not report.passed and not report.reproduction
    assert any("/etc/passwd" in e and "unsafe path" in e for e in report.format_errors)


# ------------------------------------------------------------------ found in review


def test_zip_with_two_descriptions_is_refused(zoo_fixture, tmp_path):
    # bioimageio.spec would pick "a.rdf.yaml" (sorted first), we would pick "rdf.yaml": never check one, run another
    marker = tmp_path / "marker"
    good = (zoo_fixture / "rdf.yaml").read_text()
    evil = yaml.safe_load(good)
    evil["weights"]["pytorch_state_dict"] = {"source": "weights.pt", "pytorch_version": "2.0",
                                             "architecture": _shell_architecture(marker)}
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
        zf.writestr("a.rdf.yaml", yaml.safe_dump(evil))
    with pytest.raises(PackageError, match="several model descriptions"):
        open_package(z)
    from bioimgzoo.validation import check_package

    report = check_package(z, deepimagej=False)
    assert not report.passed and not marker.exists()


@pytest.mark.parametrize("field", ["icon", "training_data"])
def test_validation_refuses_any_field_naming_a_file_outside(zoo_fixture, tmp_path, field):
    from bioimgzoo.validation import check_package

    secret = tmp_path / "secret.md"
    secret.write_text("private")
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")

    def edit(rdf):
        if field == "icon":
            rdf["icon"] = "../secret.md"
        else:
            rdf["training_data"] = {"type": "dataset", "format_version": "0.3.0", "name": "d", "description": "d",
                                    "documentation": str(secret), "cite": [{"text": "x", "doi": "10.1/2"}],
                                    "authors": [{"name": "a"}], "license": "MIT"}
    _edit_rdf(folder, edit)
    try:
        pkg = open_package(folder)
    except PackageError:
        return  # refused at opening already: nothing read either
    from bioimgzoo.validation.files import files_outside

    assert files_outside(pkg), "a file outside the package went unnoticed"
    report = check_package(folder, deepimagej=False)
    assert not report.passed and not report.reproduction


def test_validation_follows_symlinks_out_of_a_folder(zoo_fixture, tmp_path):
    from bioimgzoo.validation import check_package
    from bioimgzoo.validation.files import files_outside

    secret = tmp_path / "weights.onnx"
    shutil.copy(zoo_fixture / "weights.onnx", secret)
    folder = _copy_fixture(zoo_fixture, tmp_path / "pkg")
    (folder / "weights.onnx").unlink()
    (folder / "weights.onnx").symlink_to(secret)
    assert any("symbolic link" in m for m in files_outside(open_package(folder)))
    report = check_package(folder, deepimagej=False)
    assert not report.passed and not report.reproduction


def test_zip_ratio_does_not_trust_the_declared_compressed_size(zoo_fixture, tmp_path):
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in zoo_fixture.iterdir():
            zf.write(f, f.name)
    src = ZipSource(z)
    info = src._members["weights.onnx"]
    # what overlapping members look like from the central directory: a huge member, "compressed" to the
    # same huge size, while the whole zip holds a few megabytes
    info.file_size = info.compress_size = 6 << 30
    with pytest.raises(LimitExceededError, match="zip bomb"):
        src.fetch("weights.onnx", sha256=None)


def test_yaml_numbers_read_as_yaml_1_2_and_stay_cheap():
    from bioimgzoo._yaml import load_yaml

    t = time.monotonic()
    data = load_yaml("a: " + ":".join(["1"] * 40000) + "\nb: yes\nc: 017\n", "rdf.yaml")
    assert time.monotonic() - t < 10  # the base-60 reading was quadratic: minutes, not seconds
    assert data == {"a": ":".join(["1"] * 40000), "b": "yes", "c": 17}  # as bioimageio.spec's parser reads them
    with pytest.raises(InvalidDescriptionError, match="cannot be read"):
        load_yaml("a: " + "9" * 6000, "rdf.yaml")


def test_allow_listed_network_with_absurd_arguments_is_refused_before_allocating(zoo_fixture, tmp_path):
    from bioimgzoo.errors import WeightsError

    pkg = _state_dict_package(zoo_fixture, tmp_path / "pkg", {
        "import_from": "bioimgzoo.train.nets", "callable": "UNet2d",
        "kwargs": {"in_channels": 1, "out_channels": 1, "base": 1 << 20, "depth": 8}})
    t = time.monotonic()
    with pytest.raises(WeightsError, match="base must be a whole number from 1 to 1024"):
        bioimgzoo.load(pkg, weights="pytorch_state_dict")
    assert time.monotonic() - t < 10
