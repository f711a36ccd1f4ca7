"""Files in, files out: TIFF/PNG/.npy bodies or forms in, Fiji-ready TIFF (or PNG, npy, a JSON preview) out."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import tifffile

import bioimgzoo

RNG = np.random.default_rng(9)


def tiff_bytes(array: np.ndarray, *, pixel_um: float | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {}
    if pixel_um:
        kw = dict(resolution=(1 / pixel_um, 1 / pixel_um), metadata={"axes": "YX", "unit": "um"})
    tifffile.imwrite(buf, array, imagej=True, **kw)
    return buf.getvalue()


def read_as_fiji(data: bytes):
    """What Fiji sees: an ImageJ hyperstack's pixels, axes and calibration (pixel width in its unit)."""
    with tifffile.TiffFile(io.BytesIO(data)) as t:
        assert t.is_imagej
        page = t.pages.first
        num, den = page.tags["XResolution"].value
        return t.asarray(), t.series[0].axes, t.imagej_metadata.get("unit"), den / num


def test_tiff_in_calibrated_tiff_out_equal_to_in_process(asgi, tiny):
    s = asgi(models=[f"tiny={tiny}"])
    x = (RNG.random((72, 64)) * 4000).astype(np.uint16)
    expected = bioimgzoo.load(tiny).predict(x, axes="yx")  # integer images keep their type, as in the CLI

    async def go(c):
        r = await c.post("/bioimgzoo/v1/models/tiny/predict?filename=cells.tif", content=tiff_bytes(x, pixel_um=0.325),
                         headers={"Content-Type": "image/tiff"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/tiff"
        assert 'filename="cells_out.tif"' in r.headers["content-disposition"]
        pixels, axes, unit, width = read_as_fiji(r.content)
        assert axes == "YX" and unit in ("um", "µm", "micron") and width == pytest.approx(0.325)
        np.testing.assert_array_equal(pixels, expected[0])

    s.run(go)


def test_labels_png_npy_multipart_and_preview(asgi, tiny):
    s = asgi(models=[f"tiny={tiny}"])
    x = np.zeros((64, 64), np.float32)
    x[8:24, 8:24] = 1.0  # two bright squares: two objects
    x[40:56, 36:60] = 1.0
    model = bioimgzoo.load(tiny)
    prob = model.predict(x, axes="yx")

    async def go(c):
        npy = io.BytesIO()
        np.save(npy, x)
        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=npy.getvalue(),
                         headers={"Accept": "application/x-npy"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
        np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), prob)
        r = await c.post("/bioimgzoo/v1/models/tiny/predict?labels=1", content=npy.getvalue())
        labels, axes, _, _ = read_as_fiji(r.content)
        from bioimgzoo.runtime.labels import output_to_labels
        from bioimgzoo.runtime.outputs import labels_plan

        plan = labels_plan(model)
        want, _ = output_to_labels(prob, model.output_axes(), spatial=plan.spatial, channels=plan.channels)
        np.testing.assert_array_equal(labels, want.squeeze())  # as `bioimgzoo predict --labels` writes them
        r = await c.post("/bioimgzoo/v1/models/tiny/predict?format=png", files={"file": ("x.npy", npy.getvalue())})
        assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert "scaled" in r.headers["x-bioimgzoo-scaling"]
        r = await c.post("/bioimgzoo/v1/models/tiny/predict?format=json&labels=1&filename=sq.npy",
                         content=npy.getvalue())
        doc = r.json()
        assert doc["output"] == "out" and doc["n_labels"] == int(want.max()) and doc["filename"] == "sq_out.tif"
        for key in ("input_png", "output_png", "labels_png"):
            assert base64.b64decode(doc[key])[:4] == b"\x89PNG"
        pixels, *_ = read_as_fiji(base64.b64decode(doc["tiff"]))
        np.testing.assert_array_equal(pixels, prob.squeeze())

    s.run(go)


def test_bad_uploads_get_one_clear_error(asgi, tiny):
    s = asgi(models=[f"tiny={tiny}"], max_pixels=10_000)

    async def go(c):
        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=b"hello, not an image")
        assert r.status_code == 415 and "TIFF, PNG" in r.json()["error"]
        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=b"")
        assert r.status_code == 400
        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=b"II*\x00garbage" * 10)
        assert r.status_code == 400 and "cannot read image" in r.json()["error"]
        # a small compressed file declaring a big image: refused from its header
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.zeros((2000, 2000), np.uint8), compression="zlib")
        assert len(buf.getvalue()) < 100_000
        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=buf.getvalue())
        assert r.status_code == 413 and "/bioimgzoo/v1/jobs" in r.json()["error"]
        r = await c.post("/bioimgzoo/v1/models/tiny/predict?threshold=3", content=tiff_bytes(np.zeros((40, 40), np.uint8)))
        assert r.status_code == 400 and "threshold" in r.json()["error"]
        r = await c.post("/bioimgzoo/v1/models/tiny/predict?format=gif", content=tiff_bytes(np.zeros((40, 40), np.uint8)))
        assert r.status_code == 400
        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=tiff_bytes(np.zeros((40, 40), np.uint8)))
        assert r.status_code == 200  # still serving

    s.run(go)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_tiff_in_tiff_out(live, tiny, tmp_path):
    """The README's curl line against a real server: TIFF in, TIFF out, read back as Fiji would."""
    s = live(models=[f"tiny={tiny}"])
    x = (RNG.random((48, 40)) * 255).astype(np.uint8)
    src = tmp_path / "in.tif"
    src.write_bytes(tiff_bytes(x, pixel_um=0.5))
    out = tmp_path / "out.tif"
    proc = subprocess.run(["curl", "-sS", "--fail-with-body", "-o", str(out), "--data-binary", f"@{src}",
                           "-H", "Content-Type: image/tiff", f"{s.url}/bioimgzoo/v1/models/tiny/predict"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    pixels, axes, unit, width = read_as_fiji(out.read_bytes())
    np.testing.assert_array_equal(pixels, bioimgzoo.load(tiny).predict(x, axes="yx")[0])
    assert width == pytest.approx(0.5)
    bad = subprocess.run(["curl", "-sS", "--data-binary", f"@{src}", f"{s.url}/bioimgzoo/v1/models/other/predict"],
                         capture_output=True, text=True, timeout=120)
    assert json.loads(bad.stdout) == {"error": json.loads(bad.stdout)["error"]} and "other" in bad.stdout
