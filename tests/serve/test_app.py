"""The server's HTTP surface through httpx's ASGI transport: protocol, security at the door, limits, metrics."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest

import bioimgzoo

from .conftest import ADMIN, TOKEN, Gate

RNG = np.random.default_rng(5)


def oip(x: np.ndarray, name: str = "raw", **params) -> dict:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "parameters": params}


def out_array(doc: dict, i: int = 0) -> np.ndarray:
    o = doc["outputs"][i]
    return np.asarray(o["data"], np.float32).reshape(o["shape"])


def test_metadata_index_and_json_inference_equal_in_process(asgi, tiny):
    s = asgi(models=[f"tiny={tiny}"])
    x = RNG.random((1, 1, 80, 96), dtype=np.float32) * 100
    expected = bioimgzoo.load(tiny).predict(x)

    async def go(c):
        assert (await c.get("/v2")).json()["name"] == "bioimgzoo"
        assert (await c.get("/v2/health/live")).status_code == 200
        assert (await c.get("/v2/health/ready")).json() == {"ready": True}
        meta = (await c.get("/v2/models/tiny")).json()
        assert meta["inputs"] == [{"name": "raw", "datatype": "FP32", "shape": [-1, 1, -1, -1],
                                   "parameters": {"axes": "bcyx"}}]
        assert meta["outputs"][0]["name"] == "out" and meta["versions"] == ["1"]
        assert (await c.get("/v2/models/tiny/versions/1")).json() == meta
        assert (await c.get("/v2/models/tiny/ready")).status_code == 200
        assert (await c.post("/v2/repository/index")).json() == [{"name": "tiny", "version": "1", "state": "READY"}]
        listed = (await c.get("/bioimgzoo/v1/models")).json()["models"]
        assert listed[0]["name"] == "tiny" and listed[0]["weights"] == "onnx"
        r = await c.post("/v2/models/tiny/versions/1/infer", json=oip(x))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == "tiny" and doc["outputs"][0]["parameters"]["axes"] == "bcyx"
        np.testing.assert_array_equal(out_array(doc), expected)
        # a 2D image, axes given as a parameter: the same pixels, laid out yx
        r = await c.post("/v2/models/tiny/infer", json=oip(x[0, 0], axes="yx"))
        np.testing.assert_array_equal(out_array(r.json()), expected[0])
        # binary tensors in and out
        head = json.dumps({"inputs": [{"name": "raw", "shape": list(x.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "outputs": [{"name": "out", "parameters": {"binary_data": True}}]}).encode()
        r = await c.post("/v2/models/tiny/infer", content=head + x.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(head))})
        n = int(r.headers["inference-header-content-length"])
        got = np.frombuffer(r.content[n:], np.float32).reshape(json.loads(r.content[:n])["outputs"][0]["shape"])
        np.testing.assert_array_equal(got, expected)

    s.run(go)


@pytest.mark.parametrize("request_doc, status, words", [
    ({"inputs": [{"name": "raw", "shape": [1, 2, 40, 40], "datatype": "FP32", "data": [0.0] * 3200}]}, 400,
     "channel"),  # wrong shape: 2 channels into a 1-channel model
    ({"inputs": [{"name": "raw", "shape": [4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, 400, "BYTES"),
    ({"inputs": [{"name": "raw", "shape": [40, 40], "datatype": "FP32", "data": [0.0] * 10}]}, 400,
     "do not fill"),
    ({"inputs": [{"name": "nope", "shape": [40, 40], "datatype": "FP32", "data": [0.0] * 1600}]}, 400,
     "no input nope"),
    ({"inputs": [{"name": "raw", "shape": [40, 40], "datatype": "FP32", "data": [0.0] * 1600}],
      "outputs": [{"name": "nope"}]}, 400, "no output nope"),
    ({"inputs": [{"name": "raw", "shape": [40, 40], "datatype": "FP32", "data": [0.0] * 1600}],
      "parameters": {"trust_code": True}}, 400, "unknown parameter"),
    ({"inputs": [{"name": "raw", "shape": [40, 40], "datatype": "FP32", "data": [0.0] * 1600}],
      "parameters": {"weights": "tensorflow"}}, 400, "weight format"),
])
def test_bad_requests_get_one_clear_error_and_the_server_goes_on(asgi, tiny, request_doc, status, words):
    s = asgi(models=[f"tiny={tiny}"])
    x = RNG.random((40, 40), dtype=np.float32)

    async def go(c):
        r = await c.post("/v2/models/tiny/infer", json=request_doc)
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error"} and words in body["error"] and "Traceback" not in body["error"]
        assert (await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"))).status_code == 200

    s.run(go)


def test_models_come_only_from_the_command_line_allow_list_or_zoo_ids(asgi, tiny, allow_folder):
    s = asgi(models=[f"tiny={tiny}"], allow_folders=[allow_folder])
    x = RNG.random((48, 48), dtype=np.float32)

    async def go(c):
        names = {r["name"]: r["state"] for r in (await c.post("/v2/repository/index")).json()}
        assert names == {"tiny": "READY", "seg": "UNAVAILABLE", "coded": "UNAVAILABLE"}
        r = await c.post("/v2/models/seg/infer", json=oip(x, axes="yx"))  # allow-listed: loaded on request
        assert r.status_code == 200
        r = await c.post("/v2/models/coded/infer", json=oip(x, axes="yx"))  # its code is not trusted
        assert r.status_code == 403 and "trust" in r.json()["error"]
        r = await c.post("/v2/models/elsewhere/infer", json=oip(x, axes="yx"))  # no hub here: unknown
        assert r.status_code == 404 and "no model 'elsewhere'" in r.json()["error"]
        for bad in ("..", ".hidden", "a%2F..%2Fetc"):
            r = await c.post(f"/v2/models/{bad}/infer", json=oip(x, axes="yx"))
            assert r.status_code in (400, 404), bad
        r = await c.post("/v2/models/tiny/versions/7/infer", json=oip(x, axes="yx"))
        assert r.status_code == 404 and "version" in r.json()["error"]
        r = await c.post("/v2/repository/models/seg/load")
        assert r.status_code == 403 and "--admin-token" in r.json()["error"]
        assert (await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"))).status_code == 200

    s.run(go)


def test_the_operator_trusts_command_line_models_only(asgi, needs_trust, allow_folder):
    s = asgi(models=[f"mine={needs_trust}"], trust_code=True, allow_folders=[allow_folder])
    x = RNG.random((32, 32), dtype=np.float32)

    async def go(c):
        assert (await c.post("/v2/models/mine/infer", json=oip(x, axes="yx"))).status_code == 200
        r = await c.post("/v2/models/coded/infer", json=oip(x, axes="yx"))  # the same code, not named by the operator
        assert r.status_code == 403

    s.run(go)


def test_tokens_bearer_constant_time_and_admin(asgi, tiny, allow_folder):
    s = asgi(models=[f"tiny={tiny}"], allow_folders=[allow_folder], token=TOKEN, admin_token=ADMIN)
    x = RNG.random((32, 32), dtype=np.float32)
    user = {"Authorization": f"Bearer {TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}

    async def go(c):
        assert (await c.get("/v2/health/ready")).status_code == 200  # probes need no token
        assert (await c.get("/")).status_code == 200  # nor the page
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN[:-1]}"}):
            r = await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"), headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "token" in r.json()["error"]
            assert (await c.get("/metrics", headers=headers)).status_code == 401
        assert (await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"), headers=user)).status_code == 200
        r = await c.post("/v2/repository/models/seg/load", headers=user)  # the user token cannot load
        assert r.status_code == 401 and "admin" in r.json()["error"]
        r = await c.post("/v2/repository/models/seg/load", headers=admin,
                         json={"parameters": {"trust_code": True}})  # trust never comes from a request
        assert r.status_code == 400 and "trust_code" in r.json()["error"]
        assert (await c.post("/v2/repository/models/seg/load", headers=admin)).status_code == 200
        states = {r["name"]: r["state"] for r in (await c.post("/v2/repository/index", headers=user)).json()}
        assert states["seg"] == "READY"
        assert (await c.post("/v2/repository/models/seg/unload", headers=admin)).status_code == 200
        states = {r["name"]: r["state"] for r in (await c.post("/v2/repository/index", headers=user)).json()}
        assert states["seg"] == "UNAVAILABLE"

    s.run(go)


def test_body_limits_413_before_buffering_and_pixel_cap_names_jobs(asgi, tiny):
    s = asgi(models=[f"tiny={tiny}"], max_body_bytes=1 << 20, max_pixels=100_000)

    async def go(c):
        r = await c.post("/v2/models/tiny/infer", content=b"x" * (2 << 20))  # Content-Length says it
        assert r.status_code == 413 and "--max-body-mb" in r.json()["error"]

        async def endless():  # no Content-Length: counted as it streams
            for _ in range(64):
                yield b"\0" * (64 << 10)

        r = await c.post("/bioimgzoo/v1/models/tiny/predict", content=endless())
        assert r.status_code == 413 and "more than" in r.json()["error"]
        big = np.zeros((400, 400), np.float32)
        head = json.dumps({"inputs": [{"name": "raw", "shape": [400, 400], "datatype": "FP32",
                                       "parameters": {"binary_data_size": big.nbytes}}]}).encode()
        r = await c.post("/v2/models/tiny/infer", content=head + big.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(head))})
        assert r.status_code == 413 and "/bioimgzoo/v1/jobs" in r.json()["error"]
        r = await c.post("/v2/models/tiny/infer", content=b"{}", headers={"Content-Encoding": "gzip"})
        assert r.status_code == 415

    s.run(go)


def test_a_full_queue_answers_429_a_slow_request_504_and_stopping_503(asgi, tiny):
    s = asgi(models=[f"tiny={tiny}"], queue=1, timeout=0.5)
    model = s.server.registry.loaded()[0].model
    gate = Gate(model.engine)
    model.engine = gate  # a public attribute: this model's predictions now wait at the gate
    x = RNG.random((32, 32), dtype=np.float32)

    async def go(c):
        first = asyncio.create_task(c.post("/v2/models/tiny/infer", json=oip(x, axes="yx")))
        while not gate.entered.is_set():
            await asyncio.sleep(0.01)
        r = await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"))
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        r = await first
        assert r.status_code == 504 and "jobs" in r.json()["error"]
        gate.release.set()
        while s.server.admitted:  # the held prediction finishes and frees its slot
            await asyncio.sleep(0.01)
        assert (await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"))).status_code == 200
        s.server.begin_draining()
        assert (await c.get("/v2/health/ready")).status_code == 503
        r = await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"))
        assert r.status_code == 503 and "retry-after" in r.headers

    s.run(go)


def test_metrics_and_one_access_log_line_per_request(asgi, tiny, caplog):
    s = asgi(models=[f"tiny={tiny}"])
    x = RNG.random((32, 32), dtype=np.float32)

    async def go(c):
        with caplog.at_level(logging.INFO, logger="bioimgzoo.serve.access"):
            for _ in range(3):
                assert (await c.post("/v2/models/tiny/infer", json=oip(x, axes="yx"))).status_code == 200
            assert (await c.post("/v2/models/tiny/infer", json={"inputs": []})).status_code == 400
        lines = [r.getMessage() for r in caplog.records if r.name == "bioimgzoo.serve.access"]
        assert len(lines) == 4 and all('"POST /v2/models/tiny/infer"' in ln for ln in lines)
        assert " 400 " in lines[-1]
        text = (await c.get("/metrics")).text
        assert 'bioimgzoo_requests_total{endpoint="infer",model="tiny",status="200"} 3.0' in text
        assert 'bioimgzoo_requests_total{endpoint="infer",model="tiny",status="400"} 1.0' in text
        assert 'bioimgzoo_inferences_total{model="tiny"} 3.0' in text
        assert 'bioimgzoo_executions_total{model="tiny"} 3.0' in text
        assert "bioimgzoo_models_loaded 1.0" in text and "process_resident_memory_bytes" in text
        assert 'bioimgzoo_request_compute_seconds_count{model="tiny"} 3.0' in text
        assert 'bioimgzoo_model_load_seconds_count{model="tiny"} 1.0' in text
        assert 'bioimgzoo_jobs{state="running"} 0.0' in text

    s.run(go)


def test_lru_keeps_two_alternating_models_warm_and_never_evicts_one_in_use(asgi, tiny, allow_folder):
    s = asgi(models=[f"a={tiny}", f"b={tiny}"], max_models=2)
    reg = s.server.registry
    x = RNG.random((32, 32), dtype=np.float32)

    async def go(c):
        for name in "abababab":
            assert (await c.post(f"/v2/models/{name}/infer", json=oip(x, axes="yx"))).status_code == 200
        assert reg.reloads == 0

    s.run(go)
    small = asgi(models=[f"a={tiny}", f"b={tiny}"], max_models=1)
    reg = small.server.registry
    held = reg.acquire("b")  # preloading left b loaded (a was evicted for it); hold it in use
    from bioimgzoo.serve.protocol import RequestRefused

    with pytest.raises(RequestRefused) as e:
        reg.acquire("a", timeout=0.2)  # b is in use: never evicted, the load waits, then 503
    assert e.value.status == 503 and "in use" in str(e.value)
    reg.release(held)
    entry = reg.acquire("a", timeout=5)
    assert [m.name for m in reg.loaded()] == ["a"]
    reg.release(entry)


def test_request_parameters_tile_channels_weights_nan_policy_and_a_zip_package(asgi, tiny, tmp_path):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "tiny-zip"), "zip", tiny.parent)
    s = asgi(models=[f"tiny={tiny}", archive])
    x = RNG.random((2, 72, 88), dtype=np.float32) * 10
    onnx, torchscript = bioimgzoo.load(tiny, weights="onnx"), bioimgzoo.load(tiny, weights="torchscript")

    async def go(c):
        r = await c.post("/v2/models/tiny/infer", json=oip(x[0], axes="yx", tile=32))
        np.testing.assert_array_equal(out_array(r.json()), onnx.predict(x[0], axes="yx", tile=32))
        r = await c.post("/v2/models/tiny/infer", json=oip(x, axes="cyx", channels="1"))
        np.testing.assert_array_equal(out_array(r.json()), onnx.predict(x, axes="cyx", channels=[1]))
        r = await c.post("/v2/models/tiny/infer", json=oip(x[0], axes="yx", weights="torchscript"))
        np.testing.assert_array_equal(out_array(r.json()), torchscript.predict(x[0], axes="yx"))
        bad = x[0].copy()
        bad[3, 4] = np.nan
        # NaN in JSON tensors: Python's json (and tritonclient's) writes it as NaN
        r = await c.post("/v2/models/tiny/infer", content=json.dumps(oip(bad, axes="yx", nan_policy="fail")))
        assert r.status_code == 400 and "non-finite" in r.json()["error"]
        r = await c.post("/v2/models/tiny/infer", content=json.dumps(oip(bad, axes="yx", nan_policy="zero")))
        np.testing.assert_array_equal(out_array(r.json()), onnx.predict(bad, axes="yx", nan_policy="zero"))
        r = await c.post("/v2/models/tiny/infer", json=oip(x[0], axes="yx", tile="y=32,x=nope"))
        assert r.status_code == 400 and "tile" in r.json()["error"]
        r = await c.post("/v2/models/tiny-zip/infer", json=oip(x[0], axes="yx"))  # named by the zip's name
        np.testing.assert_array_equal(out_array(r.json()), onnx.predict(x[0], axes="yx"))

    s.run(go)
