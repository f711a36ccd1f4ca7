"""The web page at / in headless Chromium (Debian's, driven by Playwright): upload an image, see the result."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from .conftest import TOKEN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium when run as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def squares() -> np.ndarray:
    x = np.zeros((96, 128), np.uint16)
    x[10:34, 12:40] = 3000  # three bright objects on a dark background
    x[50:80, 20:44] = 2500
    x[30:70, 80:116] = 3500
    return x


def test_the_page_uploads_an_image_and_shows_input_result_and_labels(live, tiny, browser, tmp_path):
    s = live(models=[f"tiny={tiny}"], token=TOKEN, data_roots=[tmp_path])
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, squares(), imagej=True)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(s.url + "/")
    page.wait_for_selector("#status.error")  # no token yet: the page says what is wrong
    assert "token" in page.inner_text("#status")
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    assert page.input_value("#model") == "tiny"
    page.set_input_files("#file", str(image))
    page.check("#labels")
    page.click("#predict")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=120_000)
    assert page.inner_text("#status").endswith("3 objects")
    caption = page.inner_text("#output-caption")
    assert caption == "Result: output 'out', cyx 1x96x128 float32, 3 objects"
    sizes = page.evaluate("['input-img', 'output-img', 'labels-img'].map(id => { const i = document.getElementById(id);"
                          " return [i.naturalWidth, i.naturalHeight, getComputedStyle(i).display]; })")
    assert sizes == [[128, 96, "block"]] * 3
    # the labels overlay colours the three objects, and is clear elsewhere
    colours = page.evaluate("""() => { const i = document.getElementById('labels-img'); const c = document.createElement('canvas');
        c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; const seen = new Set(); let clear = 0;
        for (let k = 0; k < d.length; k += 4) { if (d[k + 3] === 0) clear++; else seen.add(d[k] + ',' + d[k + 1] + ',' + d[k + 2]); }
        return [seen.size, clear]; }""")
    assert colours[0] == 3 and colours[1] > 96 * 128 // 2
    link = page.query_selector("#download")
    assert link.get_attribute("download") == "cells_out.tif" and link.get_attribute("href").startswith("blob:")
    with page.expect_download() as dl:
        link.click()
    saved = tmp_path / "downloaded.tif"
    dl.value.save_as(saved)
    with tifffile.TiffFile(saved) as t:
        assert t.is_imagej and t.asarray().shape == (96, 128)
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_page_runs_a_job_and_shows_its_progress(live, tiny, browser, tmp_path):
    import zarr

    z = zarr.create_array(str(tmp_path / "big.zarr"), shape=(256, 256), chunks=(64, 64), dtype="float32")
    z[...] = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    s = live(models=[f"tiny={tiny}"], data_roots=[tmp_path])
    page = browser.new_page()
    page.goto(s.url + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    page.fill("#job-input", str(tmp_path / "big.zarr"))
    page.fill("#job-output", str(tmp_path / "big-out.zarr"))
    page.click("#submit-job")
    page.wait_for_selector("#job-status.ok")
    page.wait_for_function("document.querySelector('#jobs tbody tr td:nth-child(3)')?.textContent === 'done'",
                           timeout=120_000)
    assert page.evaluate("document.querySelector('#jobs progress').value") == 1
    page.click("#submit-job")  # the same output again: the server's refusal, shown as it says it
    page.wait_for_selector("#job-status.error")
    assert "exists" in page.inner_text("#job-status")
    assert (tmp_path / "big-out.zarr").is_dir()
