"""Inference engines behind one small protocol.

An :class:`Engine` takes a list of input arrays (model axis order, batch
first when the model has a batch axis) and returns a list of output arrays,
both in the order the description lists its tensors.  Implementations:

* :class:`OnnxEngine` — onnxruntime; CUDA provider when asked for and present.
* :class:`TorchScriptEngine` — ``torch.jit.load``.
* :class:`StateDictEngine` — architecture code + ``torch.load(weights_only=True)``;
  runs code the package names, so it follows :mod:`bioimgzoo.trust` (``trust_code=True``
  unless the architecture is one of bioimgzoo's own networks).

torch and onnxruntime are imported inside the engines that use them, so
an ONNX-only user never pays for importing torch.  Errors from the
libraries are translated into :class:`~bioimgzoo.errors.WeightsError`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .. import trust
from .devices import cuda_index
from ..errors import WeightsError

log = logging.getLogger(__name__)



class Engine(Protocol):
    """Runs the network: arrays in, arrays out, positional like the description.

    Engines may also have ``set_threads(n)`` (see :func:`set_threads`) and ``close()``.
    """

    format: str
    device: str

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def set_threads(engine: Any, threads: int) -> None:
    """Run ``engine`` on ``threads`` CPU threads when it can be told (engines in other processes cannot)."""
    setter = getattr(engine, "set_threads", None)
    if callable(setter):
        setter(max(1, int(threads)))


_ONNX_TYPES = {
    "tensor(float)": np.dtype("float32"), "tensor(double)": np.dtype("float64"),
    "tensor(float16)": np.dtype("float16"), "tensor(uint8)": np.dtype("uint8"), "tensor(int8)": np.dtype("int8"),
    "tensor(uint16)": np.dtype("uint16"), "tensor(int16)": np.dtype("int16"), "tensor(int32)": np.dtype("int32"),
    "tensor(int64)": np.dtype("int64"), "tensor(bool)": np.dtype("bool"),
}


class OnnxEngine:
    format = "onnx"

    def __init__(self, path: Path, *, device: str, n_outputs: int):
        import onnxruntime as ort

        self.device = device
        providers: list = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_index(device)}))
        self.path, self.threads = path, None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise WeightsError(f"onnxruntime cannot load {path.name}: {_first_line(e)}. The file is corrupt or not "
                               "an ONNX model: re-download the package or choose other weights (--weights)") from e
        self.input_names = [i.name for i in self.session.get_inputs()]
        # onnxruntime wants exact element types: cast to what the graph declares
        self.input_dtypes = [_ONNX_TYPES.get(i.type) for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(self.output_names) < n_outputs:
            raise WeightsError(f"{path.name} has {len(self.output_names)} outputs but the description declares "
                               f"{n_outputs}: the package is inconsistent")

    def set_threads(self, threads: int) -> None:
        """``threads`` intra-op threads that do not spin-wait between ops.

        Why: beside the streaming executor's reader and writer threads (or a server's request
        threads, or other workers) spinning threads take the cores the others need (measured: 2048²
        through the shared fixture on 2 cores, 11.6 s spinning, 9.4 s not).
        """
        import onnxruntime as ort

        if self.threads == threads:
            return
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                            providers=self.session.get_providers())
        self.threads = threads

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {name: np.ascontiguousarray(a if dt is None or a.dtype == dt else a.astype(dt))
                for name, dt, a in zip(self.input_names, self.input_dtypes, inputs)}
        try:
            return self.session.run(self.output_names, feed)
        except Exception as e:
            raise WeightsError(f"onnxruntime failed to run the model: {_first_line(e)}") from e


class _TorchEngine:
    format = "torch"
    module: Any
    device: str
    threads: int | None = None

    def set_threads(self, threads: int) -> None:
        """torch's intra-op threads (process-wide: torch has no per-module setting)."""
        import torch

        torch.set_num_threads(threads)
        self.threads = threads

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
            try:
                out = self.module(*tensors)
            except Exception as e:
                raise WeightsError(f"the {self.format} model failed to run: {_first_line(e)}") from e
            if isinstance(out, torch.Tensor):
                out = [out]
            elif isinstance(out, dict):
                out = list(out.values())
            return [o.detach().cpu().numpy() for o in out]


class TorchScriptEngine(_TorchEngine):
    format = "torchscript"

    def __init__(self, path: Path, *, device: str):
        import torch

        self.device = device
        try:
            self.module = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise WeightsError(f"torch cannot load the TorchScript file {path.name}: {_first_line(e)}. "
                               "It is corrupt or not TorchScript: re-download the package or use --weights") from e
        self.module.eval()


class StateDictEngine(_TorchEngine):
    format = "pytorch_state_dict"

    def __init__(self, weights_path: Path, architecture: Any, *, package: Any, device: str, trust_code: bool):
        import torch

        self.device = device
        try:
            factory = trust.load_architecture(architecture, package=package, trust_code=trust_code,
                                              where=getattr(package, "name", "this package"))
        except WeightsError as e:
            _raise_if_missing_module(e, package)
            raise
        kwargs = dict(getattr(architecture, "kwargs", None) or {})
        try:
            module = factory(**kwargs)
        except Exception as e:
            _raise_if_missing_module(e, package)  # architectures that import lazily, when built
            raise WeightsError(f"building the architecture {getattr(architecture, 'callable', '?')}(**{kwargs}) "
                               f"failed: {_first_line(e)}") from e
        try:
            state = torch.load(str(weights_path), map_location=device, weights_only=True)
        except Exception as e:
            raise WeightsError(f"cannot read the state dict {weights_path.name} (loaded with `torch.load(weights_only=True)`): "
                               f"{_first_line(e)}. The file is corrupt or holds more than tensors") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            module.load_state_dict(state)
        except Exception as e:
            raise WeightsError(f"the state dict {weights_path.name} does not fit the architecture: "
                               f"{_first_line(e)}") from e
        self.module = module.to(device).eval()


def create_engine(package: Any, weights_format: str, *, device: str, trust_code: bool, n_outputs: int) -> Engine:
    """Fetch exactly the weights file needed and load it."""
    entry = getattr(package.descr.weights, weights_format)
    # refuse before downloading anything when the package names code the caller does not trust
    # (an architecture for state dicts; custom processing ops for every format)
    for ref in trust.code_refs(package.descr, weights_format=weights_format):
        trust.check_trusted(ref, trust_code=trust_code, what=getattr(package, "name", "this package"))
    if weights_format == "pytorch_state_dict":
        arch = entry.architecture
        return StateDictEngine(package.file(entry), arch, package=package, device=device, trust_code=trust_code)
    path = package.file(entry)
    if weights_format == "onnx":
        return OnnxEngine(path, device=device, n_outputs=n_outputs)
    if weights_format == "torchscript":
        return TorchScriptEngine(path, device=device)
    raise WeightsError(f"unknown weight format {weights_format!r}")  # pragma: no cover


def _raise_if_missing_module(e: BaseException, package: Any) -> None:
    """An architecture that fails on a missing module: say which, what the package declares, how to install."""
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__ or cause.__context__
    if cause is None or not getattr(cause, "name", None):
        return
    from .dependencies import missing_dependency_message

    raise WeightsError(missing_dependency_message(cause.name, package)) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
