"""Zoo ids: preloaded and loaded on request from the configured hub (a real local zoo server), searched by the page."""

from __future__ import annotations

import numpy as np
import pytest

import bioimgzoo
from bioimgzoo.testing.zoo_server import ZooServer


@pytest.fixture
def hub(tiny, monkeypatch):
    with ZooServer() as server:
        server.publish_folder("tiny-shark", tiny.parent, download_count=7)
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        monkeypatch.setenv("BIOIMGZOO_RETRIES", "0")
        yield server


def oip(x):
    return {"inputs": [{"name": "raw", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "parameters": {"axes": "yx"}}


def test_zoo_ids_preloaded_loaded_on_request_and_searched(asgi, hub, tiny, tmp_path):
    s = asgi(hub=True, preload=["tiny-shark"])
    x = np.random.default_rng(0).random((48, 48), dtype=np.float32)

    async def go(c):
        index = (await c.post("/v2/repository/index")).json()
        assert {"name": "tiny-shark", "version": "1", "state": "READY"} in index
        r = await c.post("/v2/models/tiny-shark/infer", json=oip(x))
        assert r.status_code == 200
        o = r.json()["outputs"][0]
        np.testing.assert_array_equal(np.asarray(o["data"], np.float32).reshape(o["shape"]),
                                      bioimgzoo.load(tiny).predict(x, axes="yx"))
        r = await c.post("/v2/models/no-such-model/infer", json=oip(x))  # the hub says: no such id
        assert r.status_code == 404 and set(r.json()) == {"error"}
        hits = (await c.get("/bioimgzoo/v1/hub/search?q=tiny")).json()["hits"]
        assert [h["id"] for h in hits] == ["tiny-shark"]
        # a path, a URL or a draft are never read from a request's model name
        for bad in ("tiny-shark/draft", "http:%2F%2Fevil", str(tmp_path).replace("/", "%2F")):
            assert (await c.post(f"/v2/models/{bad}/infer", json=oip(x))).status_code in (400, 404)

    s.run(go)


def test_no_hub_serves_no_zoo_id(asgi, hub, tiny):
    s = asgi(hub=False, models=[f"local={tiny}"])

    async def go(c):
        r = await c.post("/v2/models/tiny-shark/infer", json=oip(np.zeros((32, 32), np.float32)))
        assert r.status_code == 404 and "no model 'tiny-shark'" in r.json()["error"]
        assert (await c.get("/bioimgzoo/v1/hub/search?q=tiny")).status_code == 403

    s.run(go)
    assert not any("tiny-shark" in path for path in hub.requests)  # the hub was never asked


def test_memory_bound_evicts_idle_models(asgi, tiny):
    s = asgi(models=[f"a={tiny}", f"b={tiny}"], max_models=4, max_memory_bytes=1)  # room for one model at a time
    reg = s.server.registry
    assert [m.name for m in reg.loaded()] == ["b"]  # a was evicted when b was loaded
    reg.release(reg.acquire("a"))
    assert [m.name for m in reg.loaded()] == ["a"] and reg.reloads == 1
