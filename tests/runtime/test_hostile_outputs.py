"""Attacks on predict's output and on --resume: no input destroyed, no stranger's folder deleted, no blind resume.

Each test rebuilds an attack of the second hardening round (issue 20) and
variants: the output named as the input, inside it or holding it (through
symbolic links too), ``--overwrite`` onto folders bioimgzoo did not write,
``--resume`` onto a log that was appended to, replayed, torn or pointed
elsewhere, and a store whose finished chunks changed.  What must hold: the
input store is byte for byte unchanged, nothing is deleted that is not
bioimgzoo's, and a resumed output equals the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.errors import InputError
from bioimgzoo.io.zarr import OmeZarrWriter, check_output_store, is_own_store

from .test_streaming import same_conv  # noqa: F401 (fixture: a tiny onnx package, halo 4)

RNG = np.random.default_rng(20)


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (and every link, by its target) with its sha256: what must not change."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        rel = str(p.relative_to(path))
        if p.is_symlink():
            out[rel] = "link -> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(*args: str):
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def victim(tmp_path):
    """An OME-Zarr image a user wants to predict on (written by bioimgzoo: it even carries its marker)."""
    x = RNG.random((96, 80), dtype=np.float32)
    path = tmp_path / "victim.ome.zarr"
    w = OmeZarrWriter(path)
    a = w.create("raw", shape=x.shape, dtype=x.dtype, chunks=(32, 32), axes="yx", scale=[1.0, 1.0])
    a[...] = x
    w.finish()
    return path, x


# ------------------------------------------------------------------------------------------ the output
@pytest.mark.parametrize("flags", [["--overwrite"], ["--resume"], []])
def test_output_named_as_the_input_is_refused_and_the_input_kept(same_conv, victim, flags):
    path, _x = victim
    before = tree(path)
    r = cli("predict", same_conv, path, "-o", path, "--axes", "yx", *flags)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "is the input" in r.output or "exists" in r.output
    assert tree(path) == before


@pytest.mark.parametrize("flags", [["--overwrite"], ["--resume"], []])
def test_output_inside_the_input_is_refused(same_conv, victim, flags):
    path, _x = victim
    before = tree(path)
    for inner in (path / "pred.ome.zarr", path / "labels" / "x.ome.zarr", path / "0" / "deep.ome.zarr"):
        r = cli("predict", same_conv, path, "-o", inner, "--axes", "yx", *flags)
        assert r.exit_code == 1 and "lies inside the input" in r.output and "Traceback" not in r.output, r.output
    assert tree(path) == before


def test_output_holding_the_input_is_refused(same_conv, victim):
    """Predicting level 0 of a store into the store itself: --overwrite would delete what it reads."""
    path, _x = victim
    before = tree(path)
    r = cli("predict", same_conv, path / "0", "-o", path, "--axes", "yx", "--overwrite")
    assert r.exit_code == 1 and "holds the input" in r.output, r.output
    assert tree(path) == before


def test_the_input_reached_through_symbolic_links(same_conv, victim, tmp_path):
    path, _x = victim
    before = tree(path)
    link = tmp_path / "alias.ome.zarr"
    link.symlink_to(path)
    linked_dir = tmp_path / "elsewhere"
    linked_dir.symlink_to(tmp_path)
    for out, why in ((link, "symbolic link"), (linked_dir / "victim.ome.zarr", "is the input")):
        for flag in ("--overwrite", "--resume"):
            r = cli("predict", same_conv, path, "-o", out, "--axes", "yx", flag)
            assert r.exit_code == 1 and why in r.output and "Traceback" not in r.output, r.output
    # the link as the input and the real folder as the output: the same store
    r = cli("predict", same_conv, link, "-o", path, "--axes", "yx", "--overwrite")
    assert r.exit_code == 1 and "is the input" in r.output, r.output
    assert tree(path) == before


def test_the_python_api_refuses_the_same(same_conv, victim):
    import zarr

    path, _x = victim
    before = tree(path)
    model = bioimgzoo.load(same_conv)
    for kw in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(InputError, match="is the input"):
            model.predict(str(path), axes="yx", out=path, **kw)
        with pytest.raises(InputError, match="lies inside the input"):
            model.predict(str(path), axes="yx", out=path / "x.ome.zarr", **kw)
    # a zarr array object: its store's folder counts as the input
    array = zarr.open_array(str(path / "0"), mode="r")
    with pytest.raises(InputError, match="is the input|holds the input"):
        model.predict(array, axes="yx", out=path / "0", overwrite=True)
    with pytest.raises(InputError, match="holds the input"):
        model.predict(array, axes="yx", out=path, overwrite=True)
    assert tree(path) == before


def test_overwrite_deletes_only_a_store_bioimgzoo_wrote(same_conv, victim, tmp_path):
    import zarr

    path, x = victim
    # a user's folder named like a store, holding a document
    docs = tmp_path / "thesis.zarr"
    docs.mkdir()
    (docs / "thesis.docx").write_text("four years of work")
    # a zarr store some other tool wrote (no bioimgzoo mark)
    foreign = tmp_path / "foreign.ome.zarr"
    zarr.create_array(str(foreign), shape=(4, 4), dtype="f4")[...] = 1
    # an empty folder, and a plain file named like a store
    empty = tmp_path / "empty.ome.zarr"
    empty.mkdir()
    plain = tmp_path / "plain.ome.zarr"
    plain.write_text("not a folder")
    for target, said in ((docs, "'thesis.docx'"), (foreign, "'zarr.json'"), (empty, "empty folder"),
                         (plain, "is a file")):
        before = tree(target) if target.is_dir() else target.read_text()
        for flag in ("--overwrite", "--resume"):
            r = cli("predict", same_conv, path, "-o", target, "--axes", "yx", flag)
            assert r.exit_code == 1 and "Traceback" not in r.output, r.output
            assert said in r.output and "not an OME-Zarr store written by bioimgzoo" in r.output, r.output
        assert (tree(target) if target.is_dir() else target.read_text()) == before
    # bioimgzoo's own output: replaced; a document dropped into it later: refused, named, kept
    out = tmp_path / "out.ome.zarr"
    assert cli("predict", same_conv, path, "-o", out, "--axes", "yx").exit_code == 0
    assert is_own_store(out)
    (out / "notes.txt").write_text("my notes")
    r = cli("predict", same_conv, path, "-o", out, "--axes", "yx", "--overwrite")
    assert r.exit_code == 1 and "'notes.txt'" in r.output and "nothing was deleted" in r.output, r.output
    (out / "notes.txt").unlink()
    r = cli("predict", same_conv, path, "-o", out, "--axes", "yx", "--overwrite")
    assert r.exit_code == 0, r.output
    ref = bioimgzoo.load(same_conv).predict(x, axes="yx")
    np.testing.assert_allclose(np.asarray(bioimgzoo.io.zarr.open_image(out).read((slice(None),) * 3)).reshape(
        ref.shape), ref, atol=1e-5)


def test_overwrite_onto_a_symlinked_output_is_one_message(same_conv, victim, tmp_path):
    path, _x = victim
    mine = tmp_path / "mine.ome.zarr"
    assert cli("predict", same_conv, path, "-o", mine, "--axes", "yx").exit_code == 0
    before = tree(mine)
    link = tmp_path / "link.ome.zarr"
    link.symlink_to(mine)
    dangling = tmp_path / "dangling.ome.zarr"
    dangling.symlink_to(tmp_path / "nowhere")
    for target in (link, dangling):
        r = cli("predict", same_conv, path, "-o", target, "--axes", "yx", "--overwrite")
        assert r.exit_code == 1 and "symbolic link" in r.output and "Traceback" not in r.output, r.output
    assert tree(mine) == before and link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_check_output_store_decides_before_anything_is_written(tmp_path):
    (tmp_path / "in.zarr").mkdir()
    with pytest.raises(InputError, match="holds the input"):
        check_output_store(tmp_path, inputs=[tmp_path / "in.zarr"], overwrite=True)
    with pytest.raises(InputError, match="lies inside the input"):
        check_output_store(tmp_path / "in.zarr" / "a" / "b.zarr", inputs=[str(tmp_path / "in.zarr")])
    # the same folder under another name (a bind mount or a link higher up): compared by identity too
    (tmp_path / "view").symlink_to(tmp_path / "in.zarr")
    with pytest.raises(InputError, match="is the input"):
        check_output_store(tmp_path / "in.zarr", inputs=[tmp_path / "view"], resume=True)
    assert check_output_store(tmp_path / "new.ome.zarr", inputs=[tmp_path / "in.zarr"]) == tmp_path / "new.ome.zarr"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "view"]  # deciding wrote nothing


def test_plain_file_outputs_never_replace_an_input(same_conv, tmp_path):
    """a.tif's output is a_out.tif: when a_out.tif is itself an input, --overwrite would destroy it."""
    import tifffile

    d = tmp_path / "imgs"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", RNG.random((40, 40), dtype=np.float32), metadata={"axes": "YX"})
    tifffile.imwrite(d / "a_out.tif", RNG.random((40, 40), dtype=np.float32), metadata={"axes": "YX"})
    before = tree(d)
    r = cli("predict", same_conv, d / "a.tif", d / "a_out.tif", "-o", d, "--overwrite")
    assert r.exit_code == 1 and "would replace the input" in r.output and "Traceback" not in r.output, r.output
    # through a link to the folder: the same files
    (tmp_path / "alias").symlink_to(d)
    r = cli("predict", same_conv, d / "a.tif", d / "a_out.tif", "-o", tmp_path / "alias", "--overwrite")
    assert r.exit_code == 1 and "would replace the input" in r.output, r.output
    assert tree(d) == before


# ------------------------------------------------------------------------------------------ resume
class _Stop(Exception):
    pass


def _interrupted(model, src, out, *, after: int, **kw):
    """A run stopped after ``after`` units (an exception from the progress callback, as a crash would)."""
    seen = []

    def on_unit(k, u, computed):
        seen.append(u.index)
        if len(seen) >= after:
            raise _Stop()

    with pytest.raises(_Stop):
        model.predict(str(src), axes="yx", tile=32, out=out, work_unit=32, on_unit=on_unit, **kw)


def _prepared(package, tmp_path, work_unit: int):
    """The model, a zarr input and its uninterrupted streamed output."""
    import zarr

    model = bioimgzoo.load(package)
    x = RNG.random((160, 128), dtype=np.float32)
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), shape=x.shape, chunks=(32, 32), dtype="float32")[...] = x
    full = np.asarray(model.predict(str(src), axes="yx", tile=32, out=tmp_path / "full.ome.zarr",
                                    work_unit=work_unit)[...])
    return model, src, full


@pytest.fixture()
def resumable(same_conv, tmp_path):
    return _prepared(same_conv, tmp_path, 32)


def _log(out: Path) -> list[str]:
    return (out / ".bioimgzoo" / "done").read_text().splitlines()


def _resume(model, src, out, computed: list):
    return np.asarray(model.predict(str(src), axes="yx", tile=32, out=out, work_unit=32, resume=True,
                                    on_unit=lambda k, u, c: computed.append(u.index) if c else None)[...])


def test_lines_appended_to_the_log_are_computed_again(resumable, tmp_path, caplog):
    """Forged 'finished' lines for units never written: random digests, replayed digests, plain sha256."""
    caplog.set_level(logging.WARNING, logger="bioimgzoo")
    model, src, full = resumable
    out = tmp_path / "o.ome.zarr"
    _interrupted(model, src, out, after=5)
    lines = _log(out)
    finished = {int(ln.split()[2]) for ln in lines[1:] if ln.startswith("unit ")}
    assert 4 <= len(finished) <= 5 and (out / ".bioimgzoo" / "done").exists()
    donor = next(ln for ln in lines[1:] if ln.startswith("unit "))
    forged = []
    for u in range(20):
        if u in finished:
            continue
        kind = u % 3
        if kind == 0:
            forged.append(f"unit 0 {u} {os.urandom(32).hex()}")
        elif kind == 1:
            forged.append(f"unit 0 {u} {donor.split()[3]}")  # another unit's (valid) digest replayed
        else:  # what the zeros there would hash to, unkeyed
            forged.append(f"unit 0 {u} {hashlib.sha256(np.zeros((32, 32), np.float32).tobytes()).hexdigest()}")
    with open(out / ".bioimgzoo" / "done", "a") as f:
        f.write("\n".join(forged) + "\n")
    computed: list = []
    got = _resume(model, src, out, computed)
    assert sorted(computed) == sorted(set(range(20)) - finished)
    np.testing.assert_array_equal(got, full)
    assert "do not hold what was written" in caplog.text
    assert not (out / ".bioimgzoo").exists()  # complete: only now the log goes


def test_finished_chunks_changed_after_the_run_are_computed_again(resumable, tmp_path):
    import zarr

    model, src, full = resumable
    out = tmp_path / "o.ome.zarr"
    _interrupted(model, src, out, after=8)
    arr = zarr.open_array(str(out / "0"), mode="r+")
    arr[0, 0:32, 0:32] = 0  # unit 0's chunk overwritten (a unit the log lists)
    arr[0, 0:1, 32:33] = 7  # one pixel of unit 1
    computed: list = []
    got = _resume(model, src, out, computed)
    assert {0, 1} <= set(computed) and len(computed) < 20
    np.testing.assert_array_equal(got, full)


def test_malformed_log_lines_are_one_warning_not_a_traceback(resumable, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="bioimgzoo")
    model, src, full = resumable
    out = tmp_path / "o.ome.zarr"
    _interrupted(model, src, out, after=3)
    with open(out / ".bioimgzoo" / "done", "a", encoding="utf-8") as f:
        f.write("x y ok\nunit a b c\nunit 0 1\nunit 0 99999999999999999999 zz\n0 4 ok\n" + "9" * 5000 + "\n\x00\xff\n")
        f.write("unit 0 5 " + "0" * 63)  # a torn last line
    computed: list = []
    got = _resume(model, src, out, computed)
    np.testing.assert_array_equal(got, full)
    assert "do not parse and count for nothing" in caplog.text


def test_resume_refuses_other_settings_a_broken_head_and_a_planted_link(resumable, tmp_path):
    model, src, _full = resumable
    out = tmp_path / "o.ome.zarr"
    _interrupted(model, src, out, after=3)
    done = out / ".bioimgzoo" / "done"
    with pytest.raises(InputError, match="other settings"):
        model.predict(str(src), axes="yx", tile=32, out=out, work_unit=64, resume=True)
    text = done.read_text()
    done.write_text("{not json\n" + "\n".join(text.splitlines()[1:]) + "\n")
    with pytest.raises(InputError, match="other settings"):
        model.predict(str(src), axes="yx", tile=32, out=out, work_unit=32, resume=True)
    # the log pointed at a file elsewhere: never appended to
    elsewhere = tmp_path / "bashrc"
    elsewhere.write_text("precious\n")
    done.unlink()
    done.symlink_to(elsewhere)
    with pytest.raises(InputError, match="not a file written by bioimgzoo"):
        model.predict(str(src), axes="yx", tile=32, out=out, work_unit=32, resume=True)
    assert elsewhere.read_text() == "precious\n"
    # the run's folder itself a link
    done.unlink()
    folder = out / ".bioimgzoo"
    for p in sorted(folder.rglob("*"), reverse=True):
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    folder.rmdir()
    (tmp_path / "away").mkdir()
    folder.symlink_to(tmp_path / "away")
    with pytest.raises(InputError, match="symbolic link"):
        model.predict(str(src), axes="yx", tile=32, out=out, work_unit=32, resume=True)
    assert list((tmp_path / "away").iterdir()) == []


def test_the_log_stays_until_the_store_is_complete(resumable, tmp_path, monkeypatch):
    """A run that fails while finishing keeps its log; a unit nobody wrote is never passed off as done."""
    from bioimgzoo.io import zarr as zio
    from bioimgzoo.runtime.executor import streaming

    model, src, full = resumable
    out = tmp_path / "o.ome.zarr"

    def broken_finish(self):
        raise InputError("the disk filled up")

    with monkeypatch.context() as m:
        m.setattr(zio.OmeZarrWriter, "finish", broken_finish)
        with pytest.raises(InputError, match="disk filled"):
            model.predict(str(src), axes="yx", tile=32, out=out, work_unit=32)
    assert len([ln for ln in _log(out) if ln.startswith("unit ")]) == 20
    computed: list = []
    np.testing.assert_array_equal(_resume(model, src, out, computed), full)
    assert computed == []  # every unit verified against the store
    # an executor that skips a unit: refused before the metadata, the output stays unfinished
    out2 = tmp_path / "o2.ome.zarr"
    real_units = streaming.StreamingExecutor.units
    monkeypatch.setattr(streaming.StreamingExecutor, "units", lambda self, sample: real_units(self, sample)[:-1])
    with pytest.raises(InputError, match="neither computed nor verified"):
        model.predict(str(src), axes="yx", tile=32, out=out2, work_unit=32)
    assert (out2 / ".bioimgzoo" / "done").is_file()
    assert "multiscales" not in json.loads((out2 / ".zattrs").read_text())


@pytest.mark.slow
def test_cluster_parts_overwritten_between_runs_are_computed_again(same_conv, tmp_path):
    from distributed import Client, LocalCluster

    model, src, full = _prepared(same_conv, tmp_path, 48)
    out = tmp_path / "o.ome.zarr"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []

        def stop(k, u, computed):
            seen.append(u.index)
            if len(seen) >= 2:
                raise _Stop()

        with pytest.raises(_Stop):
            model.predict(str(src), axes="yx", tile=32, out=out, work_unit=48, scheduler=client, on_unit=stop)
        parts = sorted((out / ".bioimgzoo" / "parts").glob("*.npy"))
        assert parts, "no parts left to tamper with"
        part_lines = [ln for ln in _log(out) if ln.startswith("part ")]
        assert part_lines  # (a part saved but not yet logged when the run stopped counts for nothing)
        for p in parts:  # every part overwritten: same shape, other values
            a = np.load(p)
            np.save(p, np.full_like(a, 123.0))
        # and a forged part line for a part that was never computed
        with open(out / ".bioimgzoo" / "done", "a") as f:
            f.write(f"part 0 11 out {os.urandom(32).hex()}\n")
        np.save(out / ".bioimgzoo" / "parts" / "0-11-out.npy", np.zeros((48, 48), np.float32))
        got = np.asarray(model.predict(str(src), axes="yx", tile=32, out=out, work_unit=48, scheduler=client,
                                       resume=True)[...])
    np.testing.assert_array_equal(got, full)
