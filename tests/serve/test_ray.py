"""The same protocol on Ray Serve (item 10), on a local Ray instance started by the test."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import bioimgzoo

from .conftest import TOKEN, settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_serve():
    ray = pytest.importorskip("ray", reason="ray is not installed (the ray extra: pip install 'bioimgzoo[ray]')")
    serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=200 << 20)
    except Exception as e:  # noqa: BLE001 -- a machine where Ray cannot start: say why
        pytest.skip(f"a local Ray instance cannot start here: {type(e).__name__}: {e}")
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield serve, f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_ray_serve_speaks_the_same_protocol(ray_serve, tiny):
    import httpx

    from bioimgzoo.serve.ray_serve import build_app

    serve, url = ray_serve
    serve.run(build_app(settings(models=[f"tiny={tiny}"], token=TOKEN), max_replicas=2, models_per_replica=2),
              name="bioimgzoo", route_prefix="/")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    x = (np.random.default_rng(0).random((1, 1, 64, 80)) * 100).astype(np.float32)
    expected = bioimgzoo.load(tiny).predict(x)
    with httpx.Client(base_url=url, timeout=120) as c:
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/v2/models/tiny", headers=auth).json()["inputs"][0]["shape"] == [-1, 1, -1, -1]
        doc = {"inputs": [{"name": "raw", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = c.post("/v2/models/tiny/infer", json=doc, headers={**auth, "serve_multiplexed_model_id": "tiny"})
        assert r.status_code == 200, r.text
        o = r.json()["outputs"][0]
        np.testing.assert_array_equal(np.asarray(o["data"], np.float32).reshape(o["shape"]), expected)
        r = c.post("/v2/models/tiny/infer", json=doc)  # the same door: no token, no prediction
        assert r.status_code == 401 and "token" in r.json()["error"]
        r = c.post("/v2/models/elsewhere/infer", json=doc, headers=auth)
        assert r.status_code == 404 and set(r.json()) == {"error"}
    status = serve.status().applications["bioimgzoo"].deployments["bioimgzoo"]
    assert status.status in ("HEALTHY", "UPSCALING", "DOWNSCALING")
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(url.split("//")[1])
    inp = tritonclient.InferInput("raw", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    got = client.infer("tiny", [inp], headers=auth).as_numpy("out")
    np.testing.assert_array_equal(got, expected)
    client.close()
    serve.delete("bioimgzoo")
