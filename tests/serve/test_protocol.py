"""The Open Inference Protocol's wire format: JSON and binary tensors in, outputs out, one clear error each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioimgzoo.serve.protocol import (HEADER_LENGTH, RequestRefused, encode_infer_response, parse_infer_request)


def binary_body(header: dict, *arrays: np.ndarray) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(a.tobytes() for a in arrays), str(len(head))


def test_json_tensor_is_read_row_major_flat_or_nested():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for data in (x.ravel().tolist(), x.tolist()):
        req = parse_infer_request(json.dumps({"inputs": [{"name": "raw", "shape": [3, 4], "datatype": "FP32",
                                                          "data": data}]}).encode(), None)
        assert req.inputs[0].array.dtype == np.float32
        np.testing.assert_array_equal(req.inputs[0].array, x)


def test_binary_tensors_follow_the_json_header_in_order():
    a = np.arange(6, dtype=np.uint16).reshape(2, 3)
    b = np.linspace(0, 1, 4, dtype=np.float32).reshape(1, 4)
    body, n = binary_body({"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "UINT16", "parameters": {"binary_data_size": a.nbytes}},
        {"name": "b", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": b.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}], "id": "r1"}, a, b)
    req = parse_infer_request(body, n)
    np.testing.assert_array_equal(req.inputs[0].array, a)
    np.testing.assert_array_equal(req.inputs[1].array, b)
    assert req.outputs == {"y": True} and req.id == "r1"


@pytest.mark.parametrize("tensor, header, words", [
    ({"name": "raw", "shape": [2, 2], "datatype": "FP99", "data": [1, 2, 3, 4]}, None, "datatype 'FP99'"),
    ({"name": "raw", "shape": [2, 2], "datatype": "BYTES", "data": ["a"]}, None, "BYTES"),
    ({"name": "raw", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4]}, None, "do not fill shape"),
    ({"name": "raw", "shape": [2, -1], "datatype": "FP32", "data": [1, 2]}, None, "shape must be a list"),
    ({"name": "raw", "shape": [2], "datatype": "UINT8", "data": [1.5, 2]}, None, "does not fit datatype"),
    ({"name": "raw", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}, None, "does not fit datatype"),
    ({"name": "raw", "shape": [2], "datatype": "FP32"}, None, "neither 'data' nor"),
    ({"name": "raw", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}, "bin",
     "binary_data_size is 12"),
])
def test_malformed_tensors_get_one_400_naming_the_tensor(tensor, header, words):
    doc = {"inputs": [tensor]}
    if header == "bin":
        body, n = binary_body(doc, np.zeros(3, np.float32))
    else:
        body, n = json.dumps(doc).encode(), None
    with pytest.raises(RequestRefused) as e:
        parse_infer_request(body, n)
    assert e.value.status == 400
    assert words in str(e.value) and "raw" in str(e.value)


def test_bodies_that_are_not_requests():
    for body, n, words in [(b"{oops", None, "not JSON"), (b"[1, 2]", None, "JSON object"),
                           (b'{"inputs": []}', None, "no 'inputs'"), (b'{"inputs": [1]}', "999", "Length is 999"),
                           (b'{"inputs": [1]}', "abc", "not a number")]:
        with pytest.raises(RequestRefused, match=words):
            parse_infer_request(body, n)
    # binary bytes that no input claims
    body, n = binary_body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
                          np.zeros(2, np.float32))
    with pytest.raises(RequestRefused, match="no input claims"):
        parse_infer_request(body, n)


def test_pixel_cap_refuses_before_the_data_is_converted():
    doc = {"inputs": [{"name": "raw", "shape": [4096, 4096], "datatype": "FP32", "data": [0]}]}
    with pytest.raises(RequestRefused) as e:
        parse_infer_request(json.dumps(doc).encode(), None, max_pixels=1000)
    assert e.value.status == 413 and "/bioimgzoo/v1/jobs" in str(e.value)


def test_response_json_and_binary():
    req = parse_infer_request(json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                                          "id": "abc"}).encode(), None)
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, headers = encode_infer_response("m", "1", req, [("y", y, {"axes": "yx"})])
    doc = json.loads(body)
    assert doc["id"] == "abc" and doc["outputs"][0]["shape"] == [2, 3] and doc["outputs"][0]["datatype"] == "FP32"
    assert doc["outputs"][0]["data"] == y.ravel().tolist() and doc["outputs"][0]["parameters"] == {"axes": "yx"}
    req.binary_default = True
    body, headers = encode_infer_response("m", "1", req, [("y", y, {})])
    n = int(headers[HEADER_LENGTH.lower()])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes
    np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32).reshape(2, 3), y)


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
def test_binary_tensors_are_aligned_whatever_the_header_length(pad):
    """numpy sums unaligned data in another order: statistics (and outputs) would differ from in-process."""
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    header = {"inputs": [{"name": "raw", "shape": [64, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes}}], "id": "x" * pad}
    body, n = binary_body(header, x)
    arr = parse_infer_request(body, n).inputs[0].array
    assert arr.flags.aligned and arr.flags.writeable and arr.dtype == np.float32
    assert arr.sum(dtype=np.float64) == x.sum(dtype=np.float64) and arr.mean() == x.mean()
