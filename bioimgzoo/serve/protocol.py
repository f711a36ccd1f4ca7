"""The Open Inference Protocol v2 on the wire: tensors in and out, JSON and binary (no HTTP here).

KServe v2 / Triton's HTTP protocol, as ``tritonclient.http`` speaks it::

    request   {"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "parameters"?, "data"?}],
               "outputs"?: [{"name", "parameters"?: {"binary_data": bool}}]}
    response  {"model_name", "model_version", "id"?, "outputs": [{"name", "shape", "datatype",
               "parameters"?, "data"?}]}

The binary-data extension puts the JSON header first and raw little-endian
tensors after it: the header's length is the ``Inference-Header-Content-Length``
header, and each binary tensor says its size in ``parameters.binary_data_size``
(in the order the tensors are listed).  Outputs are sent binary when the
request asks (``outputs[i].parameters.binary_data``, or the request's
``parameters.binary_data_output``).

Everything a client can get wrong here raises :class:`RequestRefused`
(status 400) naming the tensor and what to fix: an unknown datatype, data
that does not fill the shape, a binary size that does not match, JSON that
does not parse.  :class:`RequestRefused` is also how the rest of the
server says "no" with another status (401, 403, 404, 413, 429, 503, 504).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BioimgzooError

__all__ = ["RequestRefused", "InferInput", "InferRequest", "parse_infer_request", "encode_infer_response",
           "DATATYPES", "datatype_of", "HEADER_LENGTH"]

#: the binary-data extension's header: the length of the JSON part of a body
HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("uint8"), "UINT16": np.dtype("uint16"),
    "UINT32": np.dtype("uint32"), "UINT64": np.dtype("uint64"), "INT8": np.dtype("int8"),
    "INT16": np.dtype("int16"), "INT32": np.dtype("int32"), "INT64": np.dtype("int64"),
    "FP16": np.dtype("float16"), "FP32": np.dtype("float32"), "FP64": np.dtype("float64"),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}


class RequestRefused(BioimgzooError):
    """The server refuses a request: an HTTP status, one message, optional headers (``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


def datatype_of(dtype: Any) -> str:
    """The protocol's name of a numpy dtype (``float32`` -> ``FP32``)."""
    dt = np.dtype(dtype)
    try:
        return _BY_DTYPE[dt.newbyteorder("=") if dt.byteorder not in "=|" else dt]
    except KeyError:
        raise RequestRefused(500, f"the result has type {dt}, which the inference protocol cannot carry") from None


@dataclass
class InferInput:
    name: str
    array: np.ndarray
    parameters: dict = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    parameters: dict
    inputs: list[InferInput]
    #: output name -> send binary; empty: every output, binary as ``binary_default`` says
    outputs: dict[str, bool]
    binary_default: bool


def _bad(message: str) -> RequestRefused:
    return RequestRefused(400, message)


def _parameters(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{where}: 'parameters' must be an object of names to values")
    return value


def parse_infer_request(body: bytes, header_length: str | None, *, max_pixels: int | None = None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON + binary tensors when ``header_length`` is given).

    ``max_pixels``: refuse (413) a tensor with more elements before its data is converted.
    """
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise _bad(f"{HEADER_LENGTH} is {header_length!r}, not a number of bytes") from None
        if not 0 < n <= len(body):
            raise _bad(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes: send the JSON header's "
                       "length in bytes")
        head, rest = body[:n], memoryview(body)[n:]
    else:
        head, rest = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        hint = f" (binary tensors need the {HEADER_LENGTH} header)" if header_length is None else ""
        raise _bad(f"the request body is not JSON{hint}: {e}") from None
    if not isinstance(doc, dict):
        raise _bad("the request must be a JSON object with 'inputs'")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("the request has no 'inputs': send a list of tensors {name, shape, datatype, data}")
    offset = 0
    parsed = []
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _bad(f"input {i} must be an object with a 'name'")
        name = t["name"]
        params = _parameters(t.get("parameters"), f"input '{name}'")
        shape = _shape(t.get("shape"), name)
        dtype = _dtype(t.get("datatype"), name)
        count = math.prod(shape)
        if max_pixels is not None and count > max_pixels:
            raise RequestRefused(413, f"input '{name}' has {count:,} values, more than this server takes in one "
                                 f"request ({max_pixels:,}): send large images as a job (POST /bioimgzoo/v1/jobs) "
                                 "or crop them")
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise _bad(f"input '{name}': binary_data_size must be a whole number of bytes")
            if size != count * dtype.itemsize:
                raise _bad(f"input '{name}': binary_data_size is {size} bytes but shape {list(shape)} of "
                           f"{t['datatype']} needs {count * dtype.itemsize}")
            if offset + size > len(rest):
                raise _bad(f"input '{name}': the body ends before its {size} bytes of binary data")
            # copied out of the body: after a JSON header of any length the bytes are rarely aligned, and numpy
            # sums unaligned data in another order (statistics would differ from an in-process prediction)
            array = np.frombuffer(rest[offset:offset + size], dtype=dtype.newbyteorder("<")).reshape(shape) \
                .astype(dtype, copy=True)
            offset += size
        else:
            if "data" not in t:
                raise _bad(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
            array = _json_data(t["data"], shape, dtype, name)
        parsed.append(InferInput(name, array, {k: v for k, v in params.items() if k != "binary_data_size"}))
    if offset != len(rest):
        raise _bad(f"the body has {len(rest) - offset} bytes of binary data no input claims")
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise _bad("an input is given twice: send each input once")
    params = _parameters(doc.get("parameters"), "the request")
    outputs = {}
    for j, o in enumerate(doc.get("outputs") or []):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise _bad(f"output {j} must be an object with a 'name'")
        oparams = _parameters(o.get("parameters"), f"output '{o['name']}'")
        outputs[o["name"]] = bool(oparams.get("binary_data", params.get("binary_data_output", False)))
    rid = doc.get("id")
    return InferRequest(str(rid) if rid is not None else None, params, parsed, outputs,
                        bool(params.get("binary_data_output", False)))


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in value):
        raise _bad(f"input '{name}': shape must be a list of whole numbers (e.g. [1, 1, 512, 512]), got {value!r}")
    return tuple(value)


def _dtype(value: Any, name: str) -> np.dtype:
    if value == "BYTES":
        raise _bad(f"input '{name}' is BYTES: images are numbers; send e.g. UINT8, UINT16 or FP32")
    if value not in DATATYPES:
        raise _bad(f"input '{name}': datatype {value!r} is not one of {', '.join(DATATYPES)}")
    return DATATYPES[value]


def _json_data(data: Any, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise _bad(f"input '{name}': data must be a list of numbers (row-major, flat or nested)")
    try:
        with np.errstate(all="ignore"):
            raw = np.asarray(data)
        if raw.dtype.kind not in "biuf":
            raise ValueError(f"values of type {raw.dtype}")
        array = raw.astype(dtype, copy=False)
        if raw.dtype.kind == "f" and dtype.kind in "biu" and not np.array_equal(array, raw):
            raise ValueError("fractions or out-of-range values for an integer datatype")
    except (ValueError, TypeError, OverflowError) as e:
        raise _bad(f"input '{name}': data does not fit datatype {_BY_DTYPE[dtype]} ({e})") from None
    if array.size != math.prod(shape):
        raise _bad(f"input '{name}': {array.size} values do not fill shape {list(shape)} "
                   f"({math.prod(shape)} values)")
    return array.reshape(shape)


def encode_infer_response(model_name: str, version: str, request: InferRequest,
                          outputs: Sequence[tuple[str, np.ndarray, dict]]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; binary outputs after the JSON when asked for."""
    head_outputs, blobs = [], []
    for name, array, params in outputs:
        array = np.asarray(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        binary = request.outputs.get(name, request.binary_default)
        params = dict(params)
        if binary:
            data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            params["binary_data_size"] = len(data)
            blobs.append(data)
        else:
            entry["data"] = _json_values(array)
        if params:
            entry["parameters"] = params
        head_outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": head_outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH.lower(): str(len(head))}


def _json_values(array: np.ndarray) -> list:
    flat = array.reshape(-1)
    if flat.dtype.kind == "f":
        # NaN/inf are not JSON numbers: Python's json writes NaN/Infinity, which tritonclient reads back
        return flat.astype(np.float64).tolist()
    return flat.tolist()
