"""The README's screenshot of the page of ``bioimgzoo serve``: the shared fixture on its own test image, with labels.

Starts ``bioimgzoo serve`` on 127.0.0.1 (a free port), opens the page in
Debian's headless Chromium (Playwright, ``executable_path``), uploads the
fixture's test input as a TIFF with "instance labels" ticked, and writes
``docs/serve-page.png``.

Run: ``python scripts/serve_page_screenshot.py [--out docs/serve-page.png]``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "serve-page.png"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="serve-shot-"))
    image = work / "nuclei.tif"
    tifffile.imwrite(image, np.load(FIXTURE / "test_input.npy")[0, 0].astype(np.uint16), imagej=True,
                     resolution=(1 / 0.65, 1 / 0.65), metadata={"axes": "YX", "unit": "um"})
    proc = subprocess.Popen([sys.executable, "-m", "bioimgzoo.cli", "serve", f"nuclei={FIXTURE}", "--port", "0",
                             "--state-dir", str(work / "state"), "--no-hub"], stdout=subprocess.PIPE, text=True)
    try:
        url = ""
        while "listening on" not in url:
            url = proc.stdout.readline()
            if not url:
                raise SystemExit("the server did not start")
        url = url.split("listening on", 1)[1].strip()
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(url + "/")
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            page.set_input_files("#file", str(image))
            page.check("#labels")
            page.click("#predict")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')",
                                   timeout=300_000)
            page.screenshot(path=args.out, full_page=True)
            print(f"{args.out}: {page.inner_text('#status')}")
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
