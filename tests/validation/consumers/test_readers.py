"""The deployed readers: JDLL's parser (replayed), YAML 1.1, and the pinned bioimageio.spec/core in their own
environments (built once per machine in the tests' persistent folder)."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from bioimgzoo.validation.consumers import consumer_verdicts
from bioimgzoo.validation.consumers._jdll_parse import jdll_read, snakeyaml_load
from bioimgzoo.validation.consumers.readers import reader_results

# a description JDLL reads (format 0.5.4, plain covers/documentation), as a dict
GOOD = {
    "format_version": "0.5.4", "type": "model", "id": "tiny-model", "name": "tiny model", "description": "d",
    "covers": ["cover.png"], "documentation": "README.md", "authors": [{"name": "A"}], "license": "MIT",
    "tags": ["t"], "cite": [{"text": "c", "doi": "10.1/2"}],
    "inputs": [{"id": "raw", "axes": [{"type": "batch", "id": "batch"},
                                      {"type": "channel", "id": "channel", "channel_names": ["c0"]},
                                      {"type": "space", "id": "y", "size": {"min": 64, "step": 16}},
                                      {"type": "space", "id": "x", "size": {"min": 64, "step": 16}}],
                "test_tensor": {"source": "in.npy", "sha256": "0" * 64}, "data": {"type": "float32"},
                "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"], "eps": 1e-06}}]}],
    "outputs": [{"id": "out", "axes": [{"type": "batch", "id": "batch"},
                                       {"type": "channel", "id": "channel", "channel_names": ["p"]},
                                       {"type": "space", "id": "y", "halo": 8,
                                        "size": {"tensor_id": "raw", "axis_id": "y"}},
                                       {"type": "space", "id": "x", "halo": 8,
                                        "size": {"tensor_id": "raw", "axis_id": "x"}}],
                 "test_tensor": {"source": "out.npy", "sha256": "0" * 64}}],
    "weights": {"torchscript": {"source": "w.pt", "pytorch_version": "2.4.0"}},
    "config": {"bioimageio": {"reproducibility_tolerance": []}},
}


def _text(rdf: dict) -> str:
    from bioimgzoo._yaml import dump_portable_yaml

    return dump_portable_yaml(rdf)


def test_snakeyaml_types_as_jdll_reads_them():
    # SnakeYAML (unlike PyYAML's YAML 1.1) reads 1e-06 as a number; yes/no and dates are not strings
    assert snakeyaml_load("a: 1e-06\nb: 1.0e-06\nc: yes\nd: 0.5.4\ne: '1e-06'\nf: 017") == \
        {"a": 1e-06, "b": 1e-06, "c": True, "d": "0.5.4", "e": "1e-06", "f": 15}


def test_a_megabyte_of_base_60_digits_stays_a_string():
    # SnakeYAML tries its number patterns on values of at most 1024 characters; converting this would be
    # quadratic in PyYAML's constructor
    assert isinstance(snakeyaml_load("a: " + "1:" * 200_000 + "1")["a"], str)


def test_jdll_reads_the_readable_form():
    assert jdll_read(_text(GOOD)) is None


@pytest.mark.parametrize("edit, field, exception", [
    # format 0.5.12 as bioimageio.spec writes it: documentation is cast to String first (buildModelDescription)
    (lambda r: r.update(documentation={"source": "README.md", "sha256": "0" * 64},
                        covers=[{"source": "cover.png", "sha256": "0" * 64}]), "documentation", "ClassCastException"),
    # covers are cast element by element where DownloadModel iterates them
    (lambda r: r.update(covers=[{"source": "cover.png", "sha256": "0" * 64}]), "covers[0]", "ClassCastException"),
    (lambda r: r.pop("covers"), "covers", "NullPointerException"),
    (lambda r: r.update(format_version=0.5), "format_version", "IllegalArgumentException"),
    (lambda r: r.update(name=12345), "name", "ClassCastException"),
    (lambda r: r["inputs"][0]["axes"][2].pop("id"), "inputs[0].axes[2]", "IllegalArgumentException"),
    (lambda r: r["inputs"][0]["axes"][1].pop("channel_names"), "inputs[0].axes[1].channel_names",
     "NullPointerException"),
    (lambda r: r["inputs"][0]["axes"][2].update(concatenable="true"), "inputs[0].axes[2].concatenable",
     "ClassCastException"),
    (lambda r: r["inputs"][0]["preprocessing"][0]["kwargs"].update(eps=[1, "2"]),
     "inputs[0].preprocessing[0].kwargs.eps", "IllegalArgumentException"),
    (lambda r: r.update(config={"bioimageio": {}}) or r.pop("id"), "id", "NullPointerException"),
    (lambda r: r.update(config={"deepimagej": {"allow_tiling": "true"}}), "config.deepimagej.allow_tiling",
     "ClassCastException"),
    (lambda r: r["outputs"][0]["axes"][2]["size"].update(tensor_id="nope"), "outputs[0].axes[2].size.tensor_id",
     "NullPointerException"),
])
def test_jdll_throws_where_its_casts_do(edit, field, exception):
    rdf = copy.deepcopy(GOOD)
    edit(rdf)
    failure = jdll_read(_text(rdf))
    assert failure is not None and (failure.field, failure.exception) == (field, exception), failure


def _folder(tmp_path, rdf: dict, *, text: str | None = None):
    folder = tmp_path / "pkg"
    folder.mkdir(exist_ok=True)
    (folder / "rdf.yaml").write_text(text if text is not None else _text(rdf))
    return folder


def test_yaml_11_reader_names_a_number_pyyaml_reads_as_a_string(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")
    text = _text(GOOD)
    assert "eps: 1.0e-06" in text  # what bioimgzoo writes
    good = {r.reader: r for r in reader_results(_folder(tmp_path, GOOD), static=True)}
    assert good["yaml-1.1"].status == "passed" and good["jdll"].status == "passed"
    bad = {r.reader: r for r in reader_results(_folder(tmp_path, GOOD, text=text.replace("1.0e-06", "1e-06")),
                                              static=True)}
    r = bad["yaml-1.1"]
    assert r.status == "failed" and r.field == "inputs[0].preprocessing[0].kwargs.eps" and "PyYAML" in r.version
    assert bad["jdll"].status == "passed"  # SnakeYAML reads 1e-06 as a number


def test_offline_without_the_environments_the_readers_are_skipped_never_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_OFFLINE", "1")
    monkeypatch.setenv("BIOIMGZOO_READER_ENVS", str(tmp_path / "no-envs"))
    results = {r.reader: r for r in reader_results(_folder(tmp_path, GOOD), static=True)}
    for name in ("biapy", "zoo-ci"):
        assert results[name].status == "skipped", results[name]
        assert "offline" in results[name].message and "not built" in results[name].message
    assert not (tmp_path / "no-envs").exists()  # nothing was built offline
    v = consumer_verdicts(_folder(tmp_path, GOOD), static=True)
    b0 = next(f for f in v["biapy"].findings if f.details.get("rule") == "B0")
    assert b0.status == "skipped"


def test_readers_off(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")
    results = {r.reader: r for r in reader_results(_folder(tmp_path, GOOD), static=True)}
    assert results["biapy"].status == "skipped" and "BIOIMGZOO_READERS=off" in results["biapy"].message


@pytest.mark.slow
def test_the_pinned_readers_refuse_format_0_5_12_maps_and_name_the_field(zoo_fixture, tmp_path):
    """bioimageio.spec 0.5.7.4 (BiaPy) and bioimageio.core 0.10.4 (zoo CI) on a real 0.5 package, once in
    bioimageio.spec 0.5.12's form ({source, sha256} covers) and once in the readable form; each runs in its own
    environment (built once per machine)."""
    import hashlib

    folder = tmp_path / "m"
    shutil.copytree(zoo_fixture, folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    cover = rdf["covers"][0]
    sha = hashlib.sha256((folder / cover).read_bytes()).hexdigest()
    new = {**rdf, "format_version": "0.5.12", "covers": [{"source": cover, "sha256": sha}]}
    (folder / "rdf.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
    results = {r.reader: r for r in reader_results(folder)}
    for name, version in (("biapy", "spec 0.5.7.4"), ("zoo-ci", "spec 0.5.10.2")):
        r = results[name]
        assert r.status == "failed" and r.field.startswith("covers.0"), r
        assert r.version.startswith(version) and version in r.message and "covers.0" in r.message
    v = consumer_verdicts(folder)
    assert "B0" in v["biapy"].failed_rules and "spec 0.5.7.4" in v["biapy"].reasons["B0"]
    assert "I0" in v["ilastik"].failed_rules and "0.10.4" in v["ilastik"].reasons["I0"]
    assert "D0" in v["deepimagej"].failed_rules  # JDLL: the axes without ids (D12) and the covers map

    (folder / "rdf.yaml").write_text(yaml.safe_dump({**rdf, "format_version": "0.5.4"}, sort_keys=False))
    results = {r.reader: r for r in reader_results(folder)}
    assert results["biapy"].status == "passed" and results["zoo-ci"].status == "passed", results


def test_environment_readers_begin_before_the_network_runs(zoo_fixture, monkeypatch):
    """validate starts the readers' interpreters once the files are judged, so they overlap the engine runs."""
    import threading

    from bioimgzoo.validation import check_package, reproduction
    from bioimgzoo.validation.consumers import readers

    started = threading.Event()
    waited = []

    def fake_in_env(s, r):  # the reader's interpreter, without building its environment
        started.set()
        return readers.ReaderResult(r.name, r.title, r.version, "passed",
                                    f"{r.title} (test) opens it", "")

    real_load = reproduction.load_model

    def load_after_the_readers_began(ctx, weights_format):
        waited.append(started.wait(20))  # before: the readers began only after every network run
        return real_load(ctx, weights_format)

    monkeypatch.setattr(readers, "_in_env", fake_in_env)
    monkeypatch.setattr(reproduction, "load_model", load_after_the_readers_began)
    report = check_package(zoo_fixture, weights="onnx")
    assert waited and all(waited), waited
    msgs = [f.message for f in report.findings if f.check in ("readers.biapy", "readers.zoo-ci")]
    assert len(msgs) == 2 and all("(test) opens it" in m for m in msgs), msgs
