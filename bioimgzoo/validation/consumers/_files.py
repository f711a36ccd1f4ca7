"""What the consumer rules read of a package's files, without running anything.

- :func:`npy_header`: a test tensor's shape and dtype, from the ``.npy`` header only;
- :func:`onnx_info`: the ONNX graph's opset, IR version, input/output element types and
  external-data references (``onnx.load(load_external_data=False)``: the weights are not loaded);
- :func:`torchscript_info`: whether a file is a TorchScript archive and its file-format
  version, read from the zip (nothing is unpickled or loaded).

Each raises :class:`~._base.NeedsFiles` (via :meth:`Subject.file`) when files may not be read,
and caches its answer on the subject.
"""

from __future__ import annotations

import zipfile
from typing import Any

from ._base import Subject
from ._view import TensorView

__all__ = ["npy_header", "onnx_info", "torchscript_info", "ONNX_ELEM"]

ONNX_ELEM = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
             9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64",
             15: "complex128", 16: "bfloat16"}


def npy_header(s: Subject, t: TensorView) -> tuple[tuple[int, ...], str]:
    """``(shape, dtype)`` of ``t``'s test tensor, from the ``.npy`` header."""
    def read() -> tuple[tuple[int, ...], str]:
        import numpy as np

        path = s.file(t.test, f"test tensor of {t.id!r}")
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = reader(fh)
        return tuple(int(n) for n in shape), str(dtype)

    return s.once(f"npyhdr:{t.test}", read)


def onnx_info(s: Subject) -> dict[str, Any]:
    """Opset, IR version, inputs/outputs ``(name, elem type, ndim)`` and external data of the ONNX weights."""
    def read() -> dict[str, Any]:
        w = s.view.weights["onnx"]
        path = s.file(w.source, "ONNX weights file")  # first: a static check stops here, before the import
        import onnx  # about a second to import: only when a file is really read

        model = onnx.load(str(path), load_external_data=False)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        inits = {i.name for i in model.graph.initializer}

        def io(v: Any) -> tuple[str, str, int | None]:
            tt = v.type.tensor_type
            ndim = len(tt.shape.dim) if tt.HasField("shape") else None
            return v.name, ONNX_ELEM.get(tt.elem_type, f"type {tt.elem_type}"), ndim

        external = sorted({e.value for i in model.graph.initializer
                           if i.data_location == onnx.TensorProto.EXTERNAL
                           for e in i.external_data if e.key == "location"})
        return {"opset": opset, "ir_version": int(model.ir_version),
                "inputs": [io(i) for i in model.graph.input if i.name not in inits],
                "outputs": [io(o) for o in model.graph.output], "external": external}

    return s.once("onnx_info", read)


def torchscript_info(s: Subject) -> dict[str, Any]:
    """``{"torchscript": bool, "why": str, "version": int | None}`` of the TorchScript weights file.

    A TorchScript archive is a zip with one top folder holding ``data.pkl``,
    ``constants.pkl``, ``version`` and ``code/`` (a plain ``torch.save`` zip lacks
    ``code/`` and ``constants.pkl``).
    """
    def read() -> dict[str, Any]:
        w = s.view.weights["torchscript"]
        path = s.file(w.source, "TorchScript weights file")
        if not zipfile.is_zipfile(path):
            return {"torchscript": False, "why": "not a zip archive", "version": None}
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            roots = {n.split("/", 1)[0] for n in names if "/" in n}
            if len(roots) != 1:
                return {"torchscript": False, "why": f"{len(roots)} top folders, expected one", "version": None}
            root = roots.pop()
            have = set(names)
            missing = [m for m in ("data.pkl", "constants.pkl", "version") if f"{root}/{m}" not in have]
            if not any(n.startswith(f"{root}/code/") for n in names):
                missing.append("code/")
            if missing:
                return {"torchscript": False, "why": f"no {', '.join(missing)} in the archive "
                        "(a torch.save file, not torch.jit.save?)", "version": None}
            raw = zf.read(f"{root}/version").decode("ascii", "replace").strip()
        try:
            version = int(raw)
        except ValueError:
            return {"torchscript": False, "why": f"unreadable version {raw[:20]!r}", "version": None}
        return {"torchscript": True, "why": "", "version": version}

    return s.once("torchscript_info", read)
