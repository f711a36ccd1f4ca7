"""Which device a computation runs on: one resolver for prediction and training.

``"auto"`` (or None) takes the GPU when the engine can use one; ``"cpu"``;
``"cuda"`` / ``"gpu"``; ``"cuda:N"`` for the N-th GPU.  The answer is a plain
string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) that torch takes as it is and
the onnxruntime engine turns into a provider with a ``device_id``.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import BioimgzooError, WeightsError

__all__ = ["resolve_device", "cuda_index", "cuda_available"]

_CUDA = re.compile(r"^(?:cuda|gpu)(?::(\d+))?$")


def cuda_available(engine: str) -> bool:
    """True when ``engine`` (``"onnx"`` or a torch format) can use a CUDA GPU here."""
    if engine == "onnx":
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    import torch

    return bool(torch.cuda.is_available())


def cuda_index(device: str) -> int:
    """The GPU number of a resolved device string (``"cuda"`` -> 0, ``"cuda:2"`` -> 2)."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def resolve_device(device: Any, engine: str, *, option: str = "device",
                   error: type[BioimgzooError] = WeightsError) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for ``engine``; ``None``/``"auto"``: cuda when usable.

    ``error`` is the error class raised (the caller's room); ``option``
    names the argument in the message (``"--device"`` for the CLI).
    """
    text = "auto" if device is None else str(device).strip().lower()
    match = _CUDA.match(text)
    if text not in ("auto", "cpu") and not match:
        raise error(f"unknown {option} {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if text == "cpu":
        return "cpu"
    ok = cuda_available(engine)
    if text == "auto":
        return "cuda" if ok else "cpu"
    if not ok:
        what = "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)" if engine == "onnx" \
            else "torch sees no CUDA device (a CPU build of torch, or no GPU)"
        raise error(f"{option} {device!r} was asked for, but {what}: use {option} cpu")
    index = int(match.group(1)) if match.group(1) else None
    if index is not None and engine != "onnx":
        import torch

        if index >= torch.cuda.device_count():
            raise error(f"{option} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        "numbered from 0")
    return "cuda" if index is None else f"cuda:{index}"
