"""Tiny model packages for tests and benchmarks (not part of the public API).

:func:`write_package` turns a small torch module into a complete zoo
package folder, built with bioimageio.spec's classes: torchscript and/or
onnx (and optionally state-dict) weights, test tensors whose outputs come
from bioimageio.core (the reference consumer), so the package reproduces
itself under ``bioimageio.core.test_model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["TensorDef", "write_package", "SameConv", "Upsample2x", "TwoInTwoOut", "Conv3d", "Classifier", "Identity"]


def _torch():
    import torch

    return torch


def _modules():
    torch = _torch()
    nn = torch.nn

    class SameConv(nn.Module):
        """Two 3x3 convolutions: receptive-field radius 2, same size out."""

        def __init__(self, cin: int = 1, cout: int = 1, seed: int = 0):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.c1 = nn.Conv2d(cin, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, cout, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.3

        def forward(self, x):
            return self.c2(torch.relu(self.c1(x)))

    class Upsample2x(nn.Module):
        def __init__(self, seed: int = 0):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.3

        def forward(self, x):
            return self.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))

    class TwoInTwoOut(nn.Module):
        def __init__(self, seed: int = 0):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.3

        def forward(self, a, b):
            y = self.conv(torch.cat([a, b], 1))
            return y[:, :1] + b, a * b

    class Conv3d(nn.Module):
        def __init__(self, seed: int = 0):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.conv = nn.Conv3d(1, 1, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.3

        def forward(self, x):
            return self.conv(x)

    class Classifier(nn.Module):
        def __init__(self, n_classes: int = 3, seed: int = 0):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.conv = nn.Conv2d(1, n_classes, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.3

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    class Identity(nn.Module):
        """A 1x1 convolution of weight 1: the output is the input (probabilities in, probabilities out)."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            with torch.no_grad():
                self.conv.weight.fill_(1.0)
                self.conv.bias.zero_()

        def forward(self, x):
            return self.conv(x)

    return dict(SameConv=SameConv, Upsample2x=Upsample2x, TwoInTwoOut=TwoInTwoOut, Conv3d=Conv3d,
                Classifier=Classifier, Identity=Identity)


def __getattr__(name: str):
    mods = _modules()
    if name in mods:
        return mods[name]
    raise AttributeError(name)


@dataclass
class TensorDef:
    """One tensor of a test package.

    ``axes``: letters (``b`` batch, ``c`` channel, ``z``/``y``/``x`` space).
    ``sizes``: input axis -> int (fixed) or ``(min, step)``.
    ``refs``: output axis -> ``(input_id, input_axis)``; ``scale``: axis -> scale.
    """

    id: str
    axes: str
    channels: int = 1
    sizes: Mapping[str, Any] = field(default_factory=dict)
    refs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    scale: Mapping[str, float] = field(default_factory=dict)
    halo: Mapping[str, int] = field(default_factory=dict)
    offset: Mapping[str, int] = field(default_factory=dict)
    processing: Sequence[Any] = ()
    test: np.ndarray | None = None  # inputs: the test input array (laid out as axes)
    batch: int | None = None  # fixed batch size (None: any)


def _axes(t: TensorDef, *, is_input: bool):
    from bioimageio.spec.model import v0_5 as s

    out = []
    for ch in t.axes:
        if ch == "b":
            out.append(s.BatchAxis(size=t.batch))
        elif ch == "c":
            out.append(s.ChannelAxis(channel_names=[s.Identifier(f"c{i}") for i in range(t.channels)]))
        else:
            aid = s.AxisId(ch)
            scale = t.scale.get(ch, 1.0)
            if is_input:
                sz = t.sizes.get(ch)
                size = s.ParameterizedSize(min=sz[0], step=sz[1]) if isinstance(sz, tuple) else int(sz)
                out.append(s.SpaceInputAxis(id=aid, size=size, scale=scale))
            else:
                if ch in t.refs:
                    tid, ax = t.refs[ch]
                    size = s.SizeReference(tensor_id=s.TensorId(tid), axis_id=s.AxisId(ax), offset=t.offset.get(ch, 0))
                else:
                    size = int(t.sizes[ch])
                if t.halo.get(ch):
                    out.append(s.SpaceOutputAxisWithHalo(id=aid, size=size, scale=scale, halo=t.halo[ch]))
                else:
                    out.append(s.SpaceOutputAxis(id=aid, size=size, scale=scale))
    return out


def write_package(folder: str | Path, module: Any, *, inputs: Sequence[TensorDef], outputs: Sequence[TensorDef],
                  formats: Sequence[str] = ("torchscript", "onnx"), name: str = "tiny test model",
                  state_dict_architecture: tuple[str, str, dict] | None = None,
                  format_version: str | None = None) -> Path:
    """Write a package folder for ``module``; returns the rdf.yaml path.

    ``state_dict_architecture``: ``(python_file, callable_name, kwargs)`` to
    also ship ``pytorch_state_dict`` weights with an architecture file.
    ``format_version``: the format written (default: the oldest that carries the
    package, as the exporter writes; ``"0.5.12"`` for bioimageio.spec's form).
    """
    from bioimageio.spec import save_bioimageio_package_as_folder
    from bioimageio.spec.model import v0_5 as s

    torch = _torch()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    examples = [torch.from_numpy(np.ascontiguousarray(t.test, dtype=np.float32)) for t in inputs]
    for t in inputs:
        np.save(folder / f"test_{t.id}.npy", t.test.astype(np.float32))
    with torch.no_grad():  # placeholder of the right shape, replaced by core's prediction below
        raw = module(*examples)
    raw = [raw] if isinstance(raw, torch.Tensor) else list(raw)
    for t, r in zip(outputs, raw):
        np.save(folder / f"test_{t.id}.npy", r.numpy().astype(np.float32))
    (folder / "README.md").write_text(f"# {name}\n\nA tiny model made by bioimgzoo's tests.\n")
    weights: dict[str, Any] = {}
    if "torchscript" in formats:
        ts = torch.jit.trace(module, tuple(examples)) if len(examples) > 1 else torch.jit.trace(module, examples[0])
        ts.save(str(folder / "weights.pt"))
        weights["torchscript"] = s.TorchscriptWeightsDescr(source=folder / "weights.pt",
                                                           pytorch_version=s.Version(torch.__version__.split("+")[0]))
    if "onnx" in formats:
        dyn = {}
        for t in inputs:
            dyn[t.id] = {i: f"{t.id}_{ch}" for i, ch in enumerate(t.axes) if ch in "bxyz"}
        for t in outputs:
            dyn[t.id] = {i: f"{t.id}_{ch}" for i, ch in enumerate(t.axes) if ch in "bxyz"}
        torch.onnx.export(module, tuple(examples), str(folder / "weights.onnx"), input_names=[t.id for t in inputs],
                          output_names=[t.id for t in outputs], dynamic_axes=dyn, opset_version=17, dynamo=False)
        weights["onnx"] = s.OnnxWeightsDescr(source=folder / "weights.onnx", opset_version=17)
    if state_dict_architecture is not None:
        src, fn, kwargs = state_dict_architecture
        torch.save(module.state_dict(), folder / "weights_sd.pt")
        weights["pytorch_state_dict"] = s.PytorchStateDictWeightsDescr(
            source=folder / "weights_sd.pt",
            architecture=s.ArchitectureFromFileDescr(source=Path(src), callable=s.Identifier(fn), kwargs=kwargs),
            pytorch_version=s.Version(torch.__version__.split("+")[0]))
    if len(weights) > 1:  # one entry without parent, the others name it
        first = next(iter(weights))
        for k in list(weights)[1:]:
            weights[k] = weights[k].model_copy(update={"parent": first})

    def build():
        ins = [s.InputTensorDescr(id=s.TensorId(t.id), axes=_axes(t, is_input=True),
                                  test_tensor=s.FileDescr(source=folder / f"test_{t.id}.npy"),
                                  preprocessing=list(t.processing)) for t in inputs]
        outs = [s.OutputTensorDescr(id=s.TensorId(t.id), axes=_axes(t, is_input=False),
                                    test_tensor=s.FileDescr(source=folder / f"test_{t.id}.npy"),
                                    postprocessing=list(t.processing)) for t in outputs]
        return s.ModelDescr(
            name=name, description="A tiny model for bioimgzoo tests.",
            authors=[s.Author(name="bioimgzoo tests")], cite=[s.CiteEntry(text="bioimgzoo", doi=s.Doi("10.1234/5678"))],
            license=s.LicenseId("MIT"), documentation=s.FileDescr(source=folder / "README.md"), inputs=ins, outputs=outs,
            weights=s.WeightsDescr(**weights),
        )

    descr = build()
    # test outputs from the reference consumer, so the package reproduces itself
    # (core 0.11 pads inputs by the output halo unless told not to; test tensors are
    # the network run on the input as given, like the zoo's own)
    from bioimageio.core import Sample, create_prediction_pipeline

    pp = create_prediction_pipeline(descr)
    sample = pp.predict_sample_without_blocking(
        Sample(members={t.id: _core_tensor(t) for t in inputs}, stat={}, id=0),
        skip_input_padding=True, skip_output_cropping=True)
    for t in outputs:
        np.save(folder / f"test_{t.id}.npy", sample.members[s.TensorId(t.id)].data.values.astype(np.float32))
    descr = build()
    out_dir = folder / "package"
    save_bioimageio_package_as_folder(descr, output_path=out_dir)
    # written as bioimgzoo's exporter writes descriptions: the oldest format that carries it, for its readers
    from .._yaml import dump_portable_yaml, load_yaml
    from ..descr.readable import readable_rdf

    rdf_path = out_dir / "rdf.yaml"
    rdf, _, _ = readable_rdf(load_yaml(rdf_path.read_bytes(), "rdf.yaml"), format_version=format_version)
    rdf_path.write_text(dump_portable_yaml(rdf), encoding="utf-8")
    return rdf_path


def _core_tensor(t: TensorDef):
    from bioimageio.core import Tensor

    dims = [{"b": "batch", "c": "channel"}.get(ch, ch) for ch in t.axes]
    return Tensor(t.test.astype(np.float32), dims=dims)
