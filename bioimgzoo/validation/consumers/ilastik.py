"""ilastik 1.4.2 neural-network workflow (tiktorch runs bioimageio.core 0.10): rules ``I1``-``I5``.

The zoo CI checks only I1 plus bioimageio.core's test inside ilastik's env, so
I3 and I4 (what ilastik's workflow needs of the axes) and the tiling simulation
are reported as warnings: they predict trouble in ilastik, not the CI's verdict.
``ilastik.simulation`` predicts the test input as ilastik tiles it (``min + n *
step`` grown toward 512 (2D) or 64 (3D), ``reflect`` padding by the output halo,
cropped) with our runtime and compares with the test output.
"""

from __future__ import annotations

from typing import Iterator

from .._registry import FAILED, NOT_APPLICABLE, PASSED, SKIPPED
from ._base import NeedsFiles, Subject, tool
from .deepimagej import load_file, render_markdown
from ._jdll import arch_imports, join_list

__all__ = ["TOOL", "ilastik_tile"]

TOOL = tool("ilastik", "ilastik rules", order=52, render_markdown=render_markdown)

_ILASTIK_ENV = {"torch", "torchvision", "numpy", "scipy", "vigra", "h5py", "skimage", "yaml", "xarray",
                "bioimageio", "tiktorch", "pydantic", "typing_extensions", "imageio", "tifffile"}
_IDS = {"batch", "channel", "time", "z", "y", "x"}


@TOOL.rule("I1", title="one input, one output, 2D or 3D",
           fix="Give the model exactly one input and one output with 2 or 3 spatial axes.")
def i1(s: Subject) -> Iterator[tuple]:
    v = s.view
    problems = []
    if len(v.inputs) != 1 or len(v.outputs) != 1:
        problems.append(f"{len(v.inputs)} inputs and {len(v.outputs)} outputs: ilastik needs exactly 1 and 1")
    for t in v.inputs:
        n = len(t.spatial)
        if n not in (2, 3):
            problems.append(f"input {t.id!r} has {n} spatial axes (ilastik runs 2D or 3D)")
    if problems:
        yield FAILED, "; ".join(problems)
    else:
        yield PASSED, f"one input, one output, {len(v.inputs[0].spatial)}D"


@TOOL.rule("I2", title="weights ilastik loads",
           fix="Add torchscript weights (ilastik's env has no onnxruntime or tensorflow), or a state dict whose "
               "architecture imports only torch, numpy, scipy and the like.")
def i2(s: Subject) -> Iterator[tuple]:
    formats = list(s.view.weights)
    if "torchscript" in formats:
        yield PASSED, "torchscript weights"
        return
    if "pytorch_state_dict" not in formats:
        yield FAILED, f"weights {formats or 'none'}: ilastik loads torchscript or pytorch_state_dict only"
        return
    try:
        mods = arch_imports(s, s.view.weights["pytorch_state_dict"].raw)
    except NeedsFiles as e:
        yield PASSED, "pytorch_state_dict weights"
        yield SKIPPED, f"whether the architecture imports in ilastik's env is not read ({e})"
        return
    other = [m for m in mods if m not in _ILASTIK_ENV]
    if other:
        yield FAILED, f"the state-dict architecture imports {other}, which ilastik's env lacks"
    else:
        yield PASSED, f"pytorch_state_dict; its architecture imports {mods or 'nothing outside the stdlib'}"


@TOOL.rule("I3", severity="warning", title="axis ids; batch and channel",
           fix="Use only the axis ids batch, channel, time, z, y, x and give the input batch and channel axes.")
def i3(s: Subject) -> Iterator[tuple]:
    problems = []
    for t in s.view.tensors:
        bad = [a.id for a in t.axes if a.id not in _IDS]
        if bad:
            problems.append(f"{t.role} {t.id!r} has axis ids {bad}")
    for t in s.view.inputs:
        missing = [k for k in ("batch", "channel") if not t.has(k)]
        if missing:
            problems.append(f"input {t.id!r} has no {' / '.join(missing)} axis")
    if problems:
        yield FAILED, join_list(problems) + " (ilastik's workflow; the zoo CI does not check this)"
    else:
        yield PASSED, "axis ids ilastik knows; the input has batch and channel axes"


@TOOL.rule("I4", severity="warning", title="output axes like the input's",
           fix="Give the output a channel axis and the input's axes in the input's order, spatial sizes by "
               "reference (scale 1, offset 0).")
def i4(s: Subject) -> Iterator[tuple]:
    v = s.view
    if len(v.inputs) != 1 or len(v.outputs) != 1:
        yield NOT_APPLICABLE, "not one input and one output (I1)"
        return
    t_in, t_out = v.inputs[0], v.outputs[0]
    problems = []
    if not t_out.has("channel"):
        problems.append(f"output {t_out.id!r} has no channel axis (ilastik counts its classes on it)")
    if [a.id for a in t_out.axes] != [a.id for a in t_in.axes]:
        problems.append(f"output axes {[a.id for a in t_out.axes]} are not the input's {[a.id for a in t_in.axes]}")
    for a in t_out.spatial:
        ref = t_in.axis(a.id)
        same = (a.kind == "ref" and a.ref_tensor == t_in.id and a.ref_axis == a.id and a.scale == 1
                and a.ref_scale == 1 and not a.offset) or \
               (a.kind == "fixed" and ref is not None and ref.kind == "fixed" and ref.size == a.size)
        if not same:
            problems.append(f"output axis {a.id} is not sized like the input's")
    if problems:
        yield FAILED, join_list(problems) + " (ilastik's workflow; the zoo CI does not check this)"
    else:
        yield PASSED, "the output has the input's axes and spatial size, plus channels"


@TOOL.rule("I5", title="description bioimageio.spec validates",
           fix="Make the description valid for bioimageio.spec (bioimgzoo validate lists the errors).")
def i5(s: Subject) -> Iterator[tuple]:
    if s.descr is None:
        yield FAILED, "bioimageio.spec cannot read this description: tiktorch (bioimageio.core) refuses it"
    else:
        yield PASSED, f"bioimageio.spec reads it (format {s.view.format_version})"


def ilastik_tile(a, image: int, *, dims: int) -> int:
    """ilastik's tile along one spatial axis: ``min + n * step`` grown toward 512 (2D) or 64 (3D)."""
    target = 512 if dims == 2 else 64
    if a.kind == "fixed":
        return a.size
    if a.kind != "param":
        return image
    lo, step = a.min or 1, a.step or 0
    if not step:
        return lo
    n = max(0, (target - lo) // step)
    return lo + n * step


@TOOL.rule("I5", name="simulation", severity="warning", title="ilastik's reflect-padded tiles, simulated",
           fix="Declare a halo large enough for the network's receptive field and keep normalisation out of the "
               "network, so that ilastik's tiles agree with the whole-image prediction.")
def simulation(s: Subject) -> Iterator[tuple]:
    from ._simulate import ATOL, RTOL, zoo_ci_mismatch

    v = s.view
    if len(v.inputs) != 1 or len(v.outputs) != 1:
        yield NOT_APPLICABLE, "not one input and one output (I1)"
        return
    t_in, t_out = v.inputs[0], v.outputs[0]
    x = load_file(s, t_in.test, f"test tensor of {t_in.id!r}")
    expected = load_file(s, t_out.test, f"test tensor of {t_out.id!r}")
    fmt = next((f for f in ("torchscript", "pytorch_state_dict") if f in v.weights), None)
    if fmt is None:
        yield NOT_APPLICABLE, "no weights ilastik loads (I2)"
        return
    if fmt == "pytorch_state_dict":
        yield SKIPPED, "state-dict weights run code from the package: not run here without trust"
        return
    if s.descr is None or s.static or s.refused:
        raise NeedsFiles("static check or unreadable description: the network is not run")
    from ...runtime.model import Model
    from .deepimagej import engine_for

    fmt, engine = engine_for(s, (fmt,))
    model = s.once(f"model:{fmt}", lambda: Model(s.pkg, engine, weights_format=fmt, device="cpu"))
    dims = len(t_in.spatial)
    tile = {a.id: ilastik_tile(a, n, dims=dims) for a, n in zip(t_in.axes, x.shape) if a.type == "space"}
    halo = {}
    for a in t_out.spatial:
        if a.halo:
            key = a.ref_axis if a.kind == "ref" else a.id
            halo[key] = max(halo.get(key, 0), int(a.halo))
    letters = "".join(a.letter for a in t_in.axes)
    try:
        got = model.predict(x, axes=letters, tile=tile, halo=halo or 0, pad_mode="reflect")
    except Exception as e:
        yield SKIPPED, f"the tiled prediction did not run here ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        return
    m = zoo_ci_mismatch(got, expected)
    details = {"weights_format": fmt, "tile": tile, "halo": halo, **m}
    if m["shape_mismatch"]:
        yield FAILED, f"ilastik's tiled output has the shape {m['actual_shape']}, the test output " \
                      f"{m['expected_shape']}", details
    elif m["mismatched"]:
        yield FAILED, f"{m['mismatched']} of {m['total']} pixels of the reflect-tiled prediction (tile {tile}, " \
                      f"halo {halo}) differ from the test output (max {m['max_abs']:.3g})", details
    else:
        yield PASSED, f"the reflect-tiled prediction (tile {tile}, halo {halo}) matches the test output within " \
                      f"{ATOL:g} + {RTOL:g}|expected|", details

