"""One reading of a model description, from its raw YAML, for the consumer rules.

The consumer tools parse the ``rdf.yaml`` themselves (JDLL, ilastik's tiktorch,
QuPath's extension, BiaPy), format 0.4 and 0.5 alike, and several of their rules
are about how the description is *written* (an axis id left to its default, a
list where a scalar is expected).  So the rules read :class:`ModelView`, built
from the raw mapping of any format from 0.3 to 0.5, and never need
bioimageio.spec's upgrade: a 0.4 description that spec refuses still gets its
verdicts.  Nothing here reads a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["AxisView", "ProcView", "TensorView", "WeightsView", "ModelView", "model_view", "version_tuple"]

#: 0.4 axis letters -> (type, 0.5 id)
_LETTERS = {"b": ("batch", "batch"), "c": ("channel", "channel"), "t": ("time", "time"), "i": ("index", "index"),
            "x": ("space", "x"), "y": ("space", "y"), "z": ("space", "z")}
#: 0.5 default ids per axis type (what bioimageio.spec fills in when ``id`` is left out)
_DEFAULT_IDS = {"batch": "batch", "channel": "channel", "time": "time", "index": "index", "space": "x"}


def version_tuple(v: Any) -> tuple[int, ...]:
    """``"0.5.3"`` -> ``(0, 5, 3)``; ``"2.5.1+cu121"`` -> ``(2, 5, 1)``; unreadable -> ``()``."""
    return tuple(int(n) for n in re.findall(r"\d+", str(v or ""))[:3])


@dataclass
class AxisView:
    """One axis of a tensor, as written.

    ``kind`` is ``"fixed"`` (``size``), ``"param"`` (``min``, ``step``), ``"ref"``
    (``ref_tensor``, ``ref_axis``, ``offset``; with ``scale`` the axis' own scale)
    or ``"any"`` (a batch axis without size).
    """

    id: str
    type: str
    explicit_id: bool = True
    kind: str = "any"
    size: int | None = None
    min: int | None = None
    step: int | None = None
    ref_tensor: str | None = None
    ref_axis: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    halo: int = 0
    channel_names: list | None = None
    unit: Any = None
    #: 0.4: the axis' scale in the reference formula (out = ref * scale + 2 * offset)
    ref_scale: float = 1.0

    @property
    def letter(self) -> str:
        return {"batch": "b", "channel": "c", "time": "t", "index": "i"}.get(self.type, self.id)


@dataclass
class ProcView:
    """One pre- or postprocessing step as written: op id (0.4 ``name``) and raw kwargs."""

    id: str
    kwargs: Any = field(default_factory=dict)

    @property
    def kw(self) -> dict:
        return dict(self.kwargs) if isinstance(self.kwargs, Mapping) else {}


@dataclass
class TensorView:
    id: str
    role: str  # "input" or "output"
    axes: list[AxisView]
    procs: list[ProcView]
    dtype: str = "float32"
    test: str | None = None
    test_sha256: str | None = None
    sample: str | None = None
    raw: Mapping = field(default_factory=dict)

    def axis(self, axis_id: str) -> AxisView | None:
        return next((a for a in self.axes if a.id == axis_id), None)

    @property
    def spatial(self) -> list[AxisView]:
        return [a for a in self.axes if a.type == "space"]

    def has(self, axis_type: str) -> bool:
        return any(a.type == axis_type for a in self.axes)


@dataclass
class WeightsView:
    format: str  # normalised: pytorch_script -> torchscript
    written_as: str
    source: str | None
    raw: Mapping

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


@dataclass
class ModelView:
    raw: Mapping
    format_version: Any
    version: tuple[int, ...]
    inputs: list[TensorView]
    outputs: list[TensorView]
    weights: dict[str, WeightsView]
    tags: list[str]
    name: str

    @property
    def v05(self) -> bool:
        return self.version[:2] >= (0, 5)

    @property
    def config(self) -> Mapping:
        cfg = self.raw.get("config")
        return cfg if isinstance(cfg, Mapping) else {}

    @property
    def tensors(self) -> list[TensorView]:
        return self.inputs + self.outputs

    def tensor(self, tensor_id: str | None) -> TensorView | None:
        return next((t for t in self.tensors if t.id == tensor_id), None)


def _src(value: Any) -> str | None:
    """A file reference: a plain string or a mapping with ``source``."""
    if isinstance(value, Mapping):
        value = value.get("source")
    return str(value) if value not in (None, "") else None


def _mappings(value: Any) -> list[Mapping]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _procs(value: Any) -> list[ProcView]:
    out = []
    for p in _mappings(value):
        if "id" in p or "name" in p:
            out.append(ProcView(str(p.get("id") or p.get("name")), p.get("kwargs") if "kwargs" in p else {}))
        elif len(p) == 1 and isinstance(next(iter(p.values())), (Mapping, type(None))):
            # format 0.3: {op_name: {kwargs: {...}}}
            op, body = next(iter(p.items()))
            out.append(ProcView(str(op), (body or {}).get("kwargs", {}) if isinstance(body, Mapping) else {}))
        else:
            out.append(ProcView("?", {}))
    return out


def _num(value: Any, default: Any = None) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _axes_05(t: Mapping) -> list[AxisView]:
    out = []
    for a in t.get("axes") or []:
        if not isinstance(a, Mapping):
            out.append(AxisView(id="?", type="?", explicit_id=False))
            continue
        typ = str(a.get("type", "?"))
        aid = a.get("id")
        ax = AxisView(id=str(aid if aid is not None else _DEFAULT_IDS.get(typ, "?")), type=typ,
                      explicit_id=aid is not None, scale=float(_num(a.get("scale"), 1.0)),
                      halo=int(_num(a.get("halo"), 0)), unit=a.get("unit"))
        if typ == "channel":
            names = a.get("channel_names")
            ax.channel_names = list(names) if isinstance(names, list) else None
            ax.kind, ax.size = "fixed", len(names) if isinstance(names, list) else _num(a.get("size"))
        size = a.get("size")
        if typ != "channel":
            if isinstance(size, int) and not isinstance(size, bool):
                ax.kind, ax.size = "fixed", size
            elif isinstance(size, Mapping) and "min" in size:
                ax.kind, ax.min, ax.step = "param", _num(size.get("min")), _num(size.get("step"))
            elif isinstance(size, Mapping) and ("tensor_id" in size or "axis_id" in size):
                ax.kind, ax.ref_tensor, ax.ref_axis = "ref", str(size.get("tensor_id")), str(size.get("axis_id"))
                ax.offset = float(_num(size.get("offset"), 0))
        out.append(ax)
    return out


def _at(seq: Any, i: int, default: Any = None) -> Any:
    """``seq[i]`` when ``seq`` is a list that long, else ``default``."""
    return seq[i] if isinstance(seq, list) and i < len(seq) else default


def _axes_04(t: Mapping, role: str) -> list[AxisView]:
    letters = str(t.get("axes") or "")
    shape = t.get("shape")
    halo = t.get("halo") if isinstance(t.get("halo"), list) else []
    out = []
    for i, ch in enumerate(letters):
        typ, aid = _LETTERS.get(ch, ("?", ch))
        ax = AxisView(id=aid, type=typ, halo=int(_num(_at(halo, i, 0), 0)))
        if isinstance(shape, list):
            v = _at(shape, i)
            ax.kind, ax.size = ("fixed", v) if isinstance(v, int) else ("any", None)
        elif isinstance(shape, Mapping) and "min" in shape:
            ax.min = _num(_at(shape.get("min"), i))
            ax.step = _num(_at(shape.get("step"), i))
            ax.kind = "fixed" if not ax.step else "param"
            if ax.kind == "fixed":
                ax.size = ax.min
        elif isinstance(shape, Mapping) and ("reference_tensor" in shape or "reference_input" in shape):
            ref = shape.get("reference_tensor", shape.get("reference_input"))  # 0.3: reference_input
            ax.kind, ax.ref_tensor, ax.ref_axis = "ref", str(ref), aid
            ax.ref_scale = float(_num(_at(shape.get("scale"), i, 1.0), 1.0))
            ax.offset = float(_num(_at(shape.get("offset"), i, 0.0), 0.0))
            # 0.4: out = ref * scale + 2 * offset; as a 0.5 axis scale that is 1 / scale
            ax.scale = 1.0 / ax.ref_scale if ax.ref_scale else 0.0
        if typ == "channel" and ax.kind == "fixed":
            ax.channel_names = None
        out.append(ax)
    return out


def _tensors(raw: Mapping, role: str, v05: bool) -> list[TensorView]:
    key = "inputs" if role == "input" else "outputs"
    procs_key = "preprocessing" if role == "input" else "postprocessing"
    tests = raw.get("test_inputs" if role == "input" else "test_outputs") or []
    samples = raw.get("sample_inputs" if role == "input" else "sample_outputs") or []
    out = []
    for i, t in enumerate(_mappings(raw.get(key))):
        if v05:
            data = t.get("data")
            if isinstance(data, list):
                data = data[0] if data else {}
            dtype = str(data.get("type", "float32")) if isinstance(data, Mapping) else "float32"
            tt = t.get("test_tensor")
            tv = TensorView(id=str(t.get("id", "input" if role == "input" else "output")), role=role,
                            axes=_axes_05(t), procs=_procs(t.get(procs_key)), dtype=dtype, test=_src(tt),
                            test_sha256=tt.get("sha256") if isinstance(tt, Mapping) else None,
                            sample=_src(t.get("sample_tensor")), raw=t)
        else:
            tv = TensorView(id=str(t.get("name", "?")), role=role, axes=_axes_04(t, role),
                            procs=_procs(t.get(procs_key)), dtype=str(t.get("data_type", "float32")),
                            test=_src(_at(tests, i)), sample=_src(_at(samples, i)),
                            raw=t)
        out.append(tv)
    return out


def model_view(raw: Mapping) -> ModelView:
    """Read ``raw`` (an ``rdf.yaml`` mapping of format 0.3 to 0.5) into a :class:`ModelView`."""
    fv = raw.get("format_version")
    version = version_tuple(fv)
    v05 = version[:2] >= (0, 5)
    weights: dict[str, WeightsView] = {}
    raw_weights = raw.get("weights")
    if isinstance(raw_weights, Mapping):
        for name, entry in raw_weights.items():
            if not isinstance(entry, Mapping):
                continue
            fmt = "torchscript" if name == "pytorch_script" else str(name)
            weights[fmt] = WeightsView(fmt, str(name), _src(entry), entry)
    tags = [str(t) for t in raw.get("tags") or [] if isinstance(t, (str, int, float))] \
        if isinstance(raw.get("tags"), list) else []
    return ModelView(raw=raw, format_version=fv, version=version, inputs=_tensors(raw, "input", v05),
                     outputs=_tensors(raw, "output", v05), weights=weights, tags=tags,
                     name=str(raw.get("name", "")))
