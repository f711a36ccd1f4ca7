"""``bioimgzoo validate`` end to end: the shared fixture passes, its reports (JSON, Markdown, HTML opened in a
real headless Chromium, every image loading), several sources at once (a list, an index page, --jobs),
and --static over the 75 zoo descriptions of 2023."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bioimgzoo.cli import main

RDFS_2023 = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "zoo-rdfs-2023"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# run once the page has loaded: each image's natural size written into the DOM that --dump-dom prints
_PROBE = ("<script>window.addEventListener('load',function(){var o=[];"
          "document.querySelectorAll('img').forEach(function(i){o.push(i.naturalWidth+'x'+i.naturalHeight)});"
          "var p=document.createElement('pre');p.id='probe';p.textContent=o.join(' ');"
          "document.body.appendChild(p)});</script>")


def _image_sizes_in_chromium(html: Path, tmp_path: Path) -> list[tuple[int, int]]:
    """Open ``html`` in headless Chromium; the natural size of every <img> once loaded."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium when run as root)")
    # the report forbids scripts (its CSP); the probe is added to a copy only
    text = html.read_text("utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
                     .replace("</body>", _PROBE + "</body>"), "utf-8")
    profile = tmp_path / "chromium-profile"
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">([^<]*)</pre>', res.stdout)
    assert found, f"chromium printed no probe (rc {res.returncode}): {res.stderr[-2000:]}"
    return [tuple(int(v) for v in s.split("x")) for s in found.group(1).split()]


@pytest.mark.slow
def test_fixture_passes_with_every_report(zoo_fixture, tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["validate", str(zoo_fixture), "--json", f"{out}.json", "--md", f"{out}.md",
                                    "--html", f"{out}.html"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("PASSED")
    for family in ("format", "files", "safety", "reproduction", "agreement"):
        assert sum(line.split()[0] == family for line in lines[1:]) == 1, res.output
    # DeepImageJ would not run it: one line per tool, beside the status
    assert any(re.match(r"\s+tool deepimagej\s+failed\s+failed rules: D", line) for line in lines), res.output
    d = json.loads(Path(f"{out}.json").read_text())
    assert d["status"] == "passed"
    assert all(set(c) >= {"id", "family", "status", "message"} for c in d["checks"])
    assert d["consumers"]["deepimagej"]["status"] == "failed" and d["consumers"]["deepimagej"]["failed_rules"]
    assert set(d["consumers"]) == {"deepimagej", "icy", "ilastik", "qupath", "biapy", "careamics", "readers"}
    assert d["summary"]["deepimagej"]["status"] == "failed" and d["summary"]["deepimagej"]["format_version"]
    statuses = {c["id"]: c["status"] for c in d["checks"]}
    for check in ("files.sha256", "reproduction.runtime", "agreement.formats", "agreement.determinism",
                  "agreement.tiling", "safety.onnx", "safety.torchscript"):
        assert statuses[check] == "passed", check
    md = Path(f"{out}.md").read_text()
    assert "## Consumer tools" in md and "| deepimagej | failed |" in md

    html = Path(f"{out}.html")
    text = html.read_text("utf-8")
    assert "http://" not in text.split("<body>", 1)[1] and "https://" not in text.split("<body>", 1)[1]
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    alts = re.findall(r'<img alt="([^"]+)"', text)
    for want in ("cover", "test input raw", "expected probability", "produced probability (onnx)",
                 "difference probability (onnx)", "produced probability (torchscript)", "seams probability (onnx)"):
        assert want in alts, (want, alts)
    assert "<th>tool</th>" in text
    sizes = _image_sizes_in_chromium(html, tmp_path)
    assert len(sizes) == len(srcs) and all(w > 0 and h > 0 for w, h in sizes), sizes


def test_report_images_load_in_chromium(tmp_path):
    """A hand-built report: every kind of image the page embeds decodes in a real browser."""
    from bioimgzoo.validation import CheckReport, Finding
    from bioimgzoo.validation.report.images import png_bytes

    rng = np.random.default_rng(0)
    y = rng.random((1, 1, 40, 30)).astype(np.float32)
    arts = {"cover": ("image/png", png_bytes(rng.random((20, 20)))), "input/raw": y, "expected/out": y,
            "produced/onnx/out": y + 0.1, "difference/onnx/out": np.full_like(y, 0.1),
            "seams/onnx/out": np.zeros((40, 30), np.float32)}  # a constant map must still be an image
    report = CheckReport("x", "A <b>name</b>", [Finding("reproduction.runtime", "reproduction", "failed",
                                                          "<script>alert(1)</script>", fix="do this")],
                         families=["reproduction", "deepimagej"], artifacts=arts,
                         consumers={"deepimagej": {"status": "failed", "failed_rules": ["D9"], "fixes": ["x"]}})
    html = tmp_path / "r.html"
    html.write_text(report.to_html(), "utf-8")
    text = html.read_text()
    assert "<script>" not in text and "&lt;b&gt;name&lt;/b&gt;" in text
    sizes = _image_sizes_in_chromium(html, tmp_path)
    assert sizes == [(20, 20), (30, 40), (30, 40), (30, 40), (30, 40), (30, 40)]


@pytest.mark.slow
def test_static_over_the_2023_descriptions(tmp_path, monkeypatch):
    # the deployed readers in their own environments (spec 0.5.7.4, core 0.10.4) are two subprocesses per
    # description: over 75 that is minutes; they are tested on real descriptions in test_readers_venvs and
    # test_export_readers, and JDLL's and YAML 1.1's replays still run here
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")
    rdfs = sorted(RDFS_2023.glob("*/rdf.yaml"))
    if len(rdfs) != 75:
        pytest.skip(f"the 75 zoo descriptions of 2023 are not at {RDFS_2023}")
    out = tmp_path / "all"
    res = CliRunner().invoke(main, ["validate", "--static", "--jobs", "2", *map(str, rdfs), "--json", f"{out}.json",
                                    "--md", f"{out}.md", "--html", f"{out}.html"])
    assert res.exit_code in (0, 1) and res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    data = json.loads(Path(f"{out}.json").read_text())
    assert isinstance(data, list) and len(data) == 75
    for d in data:
        assert d["static"] is True and d["status"] in ("passed", "failed")
        # nothing was read or run: the file, safety, reproduction and agreement checks say why they were skipped
        for c in d["checks"]:
            if c["family"] in ("files", "safety", "reproduction", "agreement") and c["id"] != "files.inside":
                assert c["status"] in ("skipped", "not-applicable"), c
        for tool, v in d["consumers"].items():
            assert v["status"] in ("passed", "failed", "skipped", "not-applicable"), (tool, v)
    index = Path(f"{out}.html").read_text()
    assert index.count("<tr>") == 76 and (tmp_path / "all-75.html").is_file()
    assert Path(f"{out}.md").read_text().startswith("# Validation of 75 packages")
    # one line per package (status, id, version, failing families), then the verdict: 76 lines, not 1,573
    lines = res.output.strip().splitlines()
    assert len(lines) == 76 and re.match(r"\d+ of 75 packages pass", lines[-1]), res.output[-3000:]
    assert all(line.split()[0] in ("PASSED", "FAILED") for line in lines[:-1])
    assert all("failing: " in line for line in lines[:-1] if line.startswith("FAILED"))
    # the index: failures first, id and version columns, and the same table sorted by each column
    statuses = re.findall(r'<tr><td><span class="(passed|failed)">', index)
    assert statuses == sorted(statuses, key=lambda st: st != "failed") and "<th><a href=\"all-by-id.html\"" in index
    assert (tmp_path / "all-by-version.html").is_file()


def test_unknown_required_tool_is_a_usage_error(zoo_fixture):
    res = CliRunner().invoke(main, ["validate", str(zoo_fixture), "--require", "napari"])
    assert res.exit_code != 0 and "napari" in res.output and "Traceback" not in res.output


def test_jobs_start_new_interpreters_not_forks(tmp_path, monkeypatch):
    """validate --jobs never forks the calling process: a fork copies an onnxruntime session without its
    threads, and the child hangs in its destructor (validate --jobs hung under pytest-xdist that way)."""
    import concurrent.futures

    rdfs = sorted(RDFS_2023.glob("*/rdf.yaml"))[:2]
    if len(rdfs) != 2:
        pytest.skip(f"the zoo descriptions of 2023 are not at {RDFS_2023}")
    methods = []
    real = concurrent.futures.ProcessPoolExecutor

    def recording(*args, **kwargs):
        methods.append(kwargs["mp_context"].get_start_method() if kwargs.get("mp_context") else "default")
        return real(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", recording)
    monkeypatch.setenv("BIOIMGZOO_READERS", "off")
    res = CliRunner().invoke(main, ["validate", "--static", "--jobs", "2", *map(str, rdfs)])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert methods == ["spawn"], methods
    assert res.output.strip().splitlines()[-1].startswith(("0 of 2", "1 of 2", "2 of 2")), res.output
