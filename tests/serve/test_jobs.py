"""Jobs: big images streamed from disk to OME-Zarr in the background, cancelled, resumed after a restart."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.serve.app import Server

from .conftest import Gate, settings

RNG = np.random.default_rng(21)


def zarr_image(path, shape=(256, 224)):
    import zarr

    x = (RNG.random(shape, dtype=np.float32) * 300).astype(np.float32)
    z = zarr.create_array(str(path), shape=x.shape, chunks=(64, 64), dtype="float32")
    z[...] = x
    return x


def wait_for(fn, what: str, seconds: float = 180):
    end = time.monotonic() + seconds  # a bound so a broken server fails the test instead of hanging it
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def read_output(path):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return np.asarray(group["0"][...])


def test_a_job_streams_the_image_and_equals_in_process(asgi, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    x = zarr_image(data / "big.zarr")
    s = asgi(models=[f"tiny={tiny}"], data_roots=[data], state_dir=tmp_path / "state")
    expected = bioimgzoo.load(tiny).predict(x, axes="yx", tile=64)

    async def go(c):
        r = await c.post("/bioimgzoo/v1/jobs", json={"model": "tiny", "input": str(data / "big.zarr"),
                                                     "output": "out.ome.zarr", "axes": "yx", "tile": 64,
                                                     "work_unit": 64})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/bioimgzoo/v1/jobs/{job['id']}" and job["state"] in ("queued", "running")
        assert job["pixels_total"] == x.size
        import asyncio

        for _ in range(3600):
            job = (await c.get(f"/bioimgzoo/v1/jobs/{job['id']}")).json()
            if job["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        assert job["state"] == "done", job
        assert job["units_done"] == 16 and job["progress"] == 1.0 and job["mp_per_s"] > 0 and job["eta_s"] == 0
        assert [j["id"] for j in (await c.get("/bioimgzoo/v1/jobs")).json()["jobs"]] == [job["id"]]
        text = (await c.get("/metrics")).text
        assert 'bioimgzoo_jobs{state="done"} 1.0' in text

    s.run(go)
    got = read_output(data / "out.ome.zarr")
    assert np.abs(got.reshape(expected.shape) - expected).max() <= 1e-5  # the streaming executor's own tolerance
    assert json.loads(next((tmp_path / "state" / "jobs").glob("*.json")).read_text())["state"] == "done"


def test_jobs_refuse_paths_outside_the_roots_and_write_nothing(asgi, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    zarr_image(data / "in.zarr", (64, 64))
    (tmp_path / "secret.zarr").mkdir()
    (data / "exists.zarr").mkdir()
    (data / "link").symlink_to(tmp_path)
    s = asgi(models=[f"tiny={tiny}"], data_roots=[data])
    off = asgi(models=[f"tiny={tiny}"])
    before = sorted(p.name for p in tmp_path.rglob("*"))

    async def go(c):
        cases = [
            ({"model": "tiny", "input": str(tmp_path / "secret.zarr"), "output": "o.zarr"}, 403, "outside"),
            ({"model": "tiny", "input": "in.zarr", "output": str(tmp_path / "o.zarr")}, 403, "outside"),
            ({"model": "tiny", "input": "link/secret.zarr", "output": "o.zarr"}, 403, "outside"),  # a link out
            ({"model": "tiny", "input": "../secret.zarr", "output": "o.zarr"}, 403, "outside"),
            ({"model": "tiny", "input": "missing.zarr", "output": "o.zarr"}, 404, "does not exist"),
            ({"model": "tiny", "input": "in.zarr", "output": "exists.zarr"}, 409, "exists"),
            ({"model": "tiny", "input": "in.zarr", "output": "o.tif"}, 400, ".zarr"),
            ({"model": "tiny", "input": "in.zarr", "output": "o.zarr", "trust_code": True}, 400, "unknown job field"),
            ({"model": "nope", "input": "in.zarr", "output": "o.zarr"}, 404, "no model"),
            ({"input": "in.zarr", "output": "o.zarr"}, 400, "no 'model'"),
        ]
        for body, status, words in cases:
            r = await c.post("/bioimgzoo/v1/jobs", json=body)
            assert r.status_code == status and words in r.json()["error"], (body, r.text)
        assert (await c.get("/bioimgzoo/v1/jobs/abc")).status_code == 404
        assert (await c.get("/bioimgzoo/v1/jobs")).json() == {"jobs": []}

    s.run(go)

    async def jobs_off(c):
        r = await c.post("/bioimgzoo/v1/jobs", json={"model": "tiny", "input": "in.zarr", "output": "o.zarr"})
        assert r.status_code == 403 and "--data-root" in r.json()["error"]

    off.run(jobs_off)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_cancel_a_running_job(asgi, tiny, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    zarr_image(data / "in.zarr", (192, 192))
    s = asgi(models=[f"tiny={tiny}"], data_roots=[data])
    entry = s.server.registry.loaded()[0]
    gate = Gate(entry.model.engine, allow=1)
    entry.model.engine = gate

    async def go(c):
        job = (await c.post("/bioimgzoo/v1/jobs", json={"model": "tiny", "input": "in.zarr", "output": "o.zarr",
                                                        "axes": "yx", "tile": 64, "work_unit": 64})).json()
        await _until(lambda: gate.entered.is_set())
        r = await c.delete(f"/bioimgzoo/v1/jobs/{job['id']}")
        assert r.status_code == 202  # running: it stops at its next work unit
        gate.release.set()

        async def state():
            return (await c.get(f"/bioimgzoo/v1/jobs/{job['id']}")).json()

        for _ in range(3600):
            j = await state()
            if j["state"] != "running":
                break
            import asyncio

            await asyncio.sleep(0.05)
        assert j["state"] == "cancelled" and 0 < j["units_done"] < 9

    s.run(go)


async def _until(fn, seconds=120):
    import asyncio

    end = time.monotonic() + seconds
    while not fn():
        assert time.monotonic() < end, "gave up waiting"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("how", ["sigterm", "crash"])
def test_a_job_interrupted_by_a_restart_resumes(tiny, tmp_path, how):
    data = tmp_path / "data"
    data.mkdir()
    x = zarr_image(data / "in.zarr", (256, 256))
    conf = settings(models=[f"tiny={tiny}"], data_roots=[data], state_dir=tmp_path / "state").checked()
    first = Server(conf)
    first.preload()
    entry = first.registry.loaded()[0]
    gate = Gate(entry.model.engine, allow=5)
    entry.model.engine = gate
    job = first.jobs.submit({"model": "tiny", "input": "in.zarr", "output": "o.zarr", "axes": "yx", "tile": 64,
                             "work_unit": 64}, check_model=first.registry.source)
    wait_for(gate.entered.is_set, "the job to reach the gate")
    stopping = threading.Thread(target=first.close)  # what SIGTERM does: jobs stop at their next unit
    stopping.start()
    time.sleep(0.2)
    gate.release.set()
    stopping.join(120)
    record = tmp_path / "state" / "jobs" / f"{job.id}.json"
    saved = json.loads(record.read_text())
    assert saved["state"] == "queued" and 0 < saved["units_done"] < 16
    if how == "crash":  # a killed server leaves the job marked running
        saved["state"] = "running"
        record.write_text(json.dumps(saved))
    second = Server(conf)
    assert second.jobs.get(job.id).state == "queued"
    second.preload()  # starts the job worker
    done = wait_for(lambda: second.jobs.get(job.id).state not in ("queued", "running") and second.jobs.get(job.id),
                    "the resumed job")
    assert done.state == "done" and done.runs == 2, done
    assert 0 < done.pixels_computed < done.pixels_total  # the units written before the restart are kept
    second.close()
    expected = bioimgzoo.load(tiny).predict(x, axes="yx", tile=64)
    assert np.abs(read_output(data / "o.zarr").reshape(expected.shape) - expected).max() <= 1e-5


@pytest.mark.slow
def test_jobs_run_on_the_dask_cluster_the_server_was_given(asgi, tiny, tmp_path):
    from distributed import LocalCluster

    data = tmp_path / "data"
    data.mkdir()
    x = zarr_image(data / "in.zarr", (192, 160))
    expected = bioimgzoo.load(tiny).predict(x, axes="yx", tile=64)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        s = asgi(models=[f"tiny={tiny}"], data_roots=[data], scheduler=cluster.scheduler_address)
        job = s.server.jobs.submit({"model": "tiny", "input": "in.zarr", "output": "o.zarr", "axes": "yx", "tile": 64,
                                    "work_unit": 64}, check_model=s.server.registry.source)
        done = wait_for(lambda: s.server.jobs.get(job.id).state not in ("queued", "running") and s.server.jobs.get(
            job.id), "the cluster job")
        assert done.state == "done", done.error
        assert done.units_done == 9
        s.close()
    assert np.abs(read_output(data / "o.zarr").reshape(expected.shape) - expected).max() <= 1e-5


def test_a_tiff_input_job(asgi, tiny, tmp_path):
    import tifffile

    data = tmp_path / "data"
    data.mkdir()
    x = (RNG.random((160, 144)) * 4000).astype(np.uint16)
    tifffile.imwrite(data / "in.tif", x, imagej=True)
    s = asgi(models=[f"tiny={tiny}"], data_roots=[data])
    job = s.server.jobs.submit({"model": "tiny", "input": "in.tif", "output": "o.zarr", "tile": 64},
                               check_model=s.server.registry.source)
    done = wait_for(lambda: s.server.jobs.get(job.id).state not in ("queued", "running") and s.server.jobs.get(job.id),
                    "the TIFF job")
    assert done.state == "done", done.error
    expected = bioimgzoo.load(tiny).predict(x, axes="yx", tile=64)
    assert np.abs(read_output(data / "o.zarr").reshape(expected.shape) - expected).max() <= 1e-5
