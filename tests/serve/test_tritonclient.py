"""Triton's own Python client, unchanged, against a real server: JSON and binary tensors, metadata, errors."""

from __future__ import annotations

import numpy as np
import pytest

import bioimgzoo

from .conftest import TOKEN

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the test extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infers_json_and_binary(live, tiny, binary):
    s = live(models=[f"tiny={tiny}"], token=TOKEN)
    client = httpclient.InferenceServerClient(s.hostport)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny", headers=auth)
    meta = client.get_model_metadata("tiny", headers=auth)
    assert meta["inputs"][0]["shape"] == [-1, 1, -1, -1] and meta["inputs"][0]["datatype"] == "FP32"
    assert client.get_model_repository_index(headers=auth) == [{"name": "tiny", "version": "1", "state": "READY"}]
    x = (RNG.random((1, 1, 100, 72)) * 1000).astype(np.float32)
    inp = httpclient.InferInput("raw", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("out", binary_data=binary)
    result = client.infer("tiny", [inp], outputs=[out], headers=auth, request_id="r-1")
    got = result.as_numpy("out")
    np.testing.assert_array_equal(got, bioimgzoo.load(tiny).predict(x))
    assert result.get_response()["id"] == "r-1"
    # uint16 data in, the parameters of the request (axes) as the protocol carries them
    y = (RNG.random((60, 50)) * 4000).astype(np.uint16)
    inp = httpclient.InferInput("raw", list(y.shape), "UINT16")
    inp.set_data_from_numpy(y, binary_data=binary)
    result = client.infer("tiny", [inp], headers=auth, parameters={"axes": "yx"})
    np.testing.assert_array_equal(result.as_numpy("out"), bioimgzoo.load(tiny).predict(y, axes="yx"))
    client.close()


def test_tritonclient_sees_one_clear_error_each(live, tiny):
    s = live(models=[f"tiny={tiny}"], token=TOKEN)
    client = httpclient.InferenceServerClient(s.hostport)
    x = np.zeros((1, 1, 40, 40), np.float32)
    inp = httpclient.InferInput("raw", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    with pytest.raises(InferenceServerException, match="token"):
        client.infer("tiny", [inp], headers={"Authorization": "Bearer not-the-token"})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(InferenceServerException, match="no model 'nope'"):
        client.infer("nope", [inp], headers=auth)
    wrong = httpclient.InferInput("raw", [1, 3, 40, 40], "FP32")  # 3 channels for a 1-channel model
    wrong.set_data_from_numpy(np.zeros((1, 3, 40, 40), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match="channel"):
        client.infer("tiny", [wrong], headers=auth)
    ok = client.infer("tiny", [inp], headers=auth)  # still serving
    assert ok.as_numpy("out").shape == (1, 1, 40, 40)
    client.close()
