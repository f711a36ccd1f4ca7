"""The measured receptive field: keyed by everything that decides the network, checked when read, and honest
about networks that tiles cannot reproduce (issue 20).

Fixed-size packages (64x64 in and out, no halo, as CAREamics writes them) are
made here with state-dict weights and an architecture file whose kwargs
change the network: two packages sharing one state dict but built with
dilation 1 and 3 must not share a measure; cache entries edited to radius 0,
10**6, -1, strings, or copied under another key are misses, measured again,
even when re-signed with the user's own secret; networks with a positional
term, coordinate channels, a normalisation over the window or global pooling
are found out when measured and run as one window or are refused with the
reason, never tiled silently wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shutil
import textwrap

import numpy as np
import pytest
import yaml

import bioimgzoo
import bioimgzoo.testing as T
from bioimgzoo.errors import InputError

torch = pytest.importorskip("torch")

ARCH = textwrap.dedent('''
    import torch
    from torch import nn


    class Dilated(nn.Module):
        """Two 3x3 convolutions of a given dilation: receptive-field radius 2 * dilation."""

        def __init__(self, dilation: int = 1):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=dilation, dilation=dilation)
            self.c2 = nn.Conv2d(4, 1, 3, padding=dilation, dilation=dilation)

        def forward(self, x):
            return self.c2(torch.tanh(self.c1(x)))


    class Positional(nn.Module):
        """A convolution plus a learned positional term, cut to the window: takes windows up to 256."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.pos = nn.Parameter(torch.linspace(0, 30, 256 * 256).reshape(1, 1, 256, 256))

        def forward(self, x):
            h, w = x.shape[-2:]
            return self.conv(x) + self.pos[..., :h, :w]


    class CoordChannels(nn.Module):
        """CoordConv: the window's own coordinates (-1 to 1) as extra channels."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            n, _, h, w = x.shape
            yy = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
            xx = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
            return self.conv(torch.cat([x, yy, xx], 1))


    class WindowNorm(nn.Module):
        """A convolution, then the window normalised by its own mean and deviation."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return (y - y.mean()) / (y.std() + 1e-6)


    class GlobalGate(nn.Module):
        """Squeeze-and-excite: a global average pooling gates the convolution's output."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(2, 2)
            self.head = nn.Conv2d(2, 1, 1)

        def forward(self, x):
            y = self.conv(x)
            gate = torch.sigmoid(self.fc(y.mean(dim=(2, 3))))[..., None, None]
            return self.head(y * gate)


    class OnlyItsSize(nn.Module):
        """A positional term and windows of exactly 64: an image larger than that can only be tiled."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.pos = nn.Parameter(torch.linspace(0, 30, 64 * 64).reshape(1, 1, 64, 64))

        def forward(self, x):
            if x.shape[-1] != 64 or x.shape[-2] != 64:
                raise RuntimeError("64x64 only")
            return self.conv(x) + self.pos
''')

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rf-arch")
    path = folder / "rf_nets.py"
    path.write_text(ARCH)
    ns: dict = {}
    exec(compile(ARCH, str(path), "exec"), ns)
    return path, ns


def _package(folder, arch_file, name: str, kwargs: dict, *, seed: int = 0):
    path, ns = arch_file
    torch.manual_seed(seed)
    net = ns[name](**kwargs).eval()
    for p in net.parameters():
        p.data = torch.randn(p.shape) * 0.5 if p.numel() < 1000 else p.data
    x = RNG.random((1, 1, 64, 64), dtype=np.float32)
    rdf = T.write_package(folder, net, inputs=[T.TensorDef("input", "bcyx", sizes={"y": 64, "x": 64}, test=x)],
                          outputs=[T.TensorDef("output", "bcyx", refs={"y": ("input", "y"), "x": ("input", "x")})],
                          formats=(), name=f"{name} " + "-".join(f"{k} {v}" for k, v in kwargs.items()), state_dict_architecture=(str(path), name, kwargs))
    return rdf, net


def _whole(net, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(image[None, None])).numpy()[0, 0]


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def _entry(cache_dir):
    return sorted((cache_dir / "receptive-fields").glob("*.json"))


def _resign(path) -> None:
    """Re-sign an edited entry with this user's own secret (an attacker with the user's access)."""
    from bioimgzoo import config

    data = json.loads(path.read_text())
    data.pop("mac", None)
    secret = (config.cache_dir() / "keys" / "secret").read_bytes()
    data["mac"] = hmac.new(secret, json.dumps(data, sort_keys=True).encode(), "sha256").hexdigest()
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def dilated(tmp_path_factory, arch_file):
    """Two packages whose weights files are byte for byte one state dict, built with dilation 1 and 3."""
    tmp = tmp_path_factory.mktemp("dilated")
    rdf1, net1 = _package(tmp / "d1", arch_file, "Dilated", {"dilation": 1})
    rdf3, _ = _package(tmp / "d3", arch_file, "Dilated", {"dilation": 3})
    shutil.copyfile(rdf1.parent / "weights_sd.pt", rdf3.parent / "weights_sd.pt")
    descr = yaml.safe_load(rdf3.read_text())
    descr["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(
        (rdf3.parent / "weights_sd.pt").read_bytes()).hexdigest()
    net3 = arch_file[1]["Dilated"](dilation=3).eval()
    net3.load_state_dict(net1.state_dict())  # (its test tensors stay those of its own weights: never read here)
    rdf3.write_text(yaml.safe_dump(descr, sort_keys=False))
    return rdf1, net1, rdf3, net3


@pytest.mark.slow
def test_a_shared_state_dict_with_other_kwargs_is_measured_on_its_own(dilated, caplog):
    from bioimgzoo import config

    rdf1, net1, rdf3, net3 = dilated
    image = RNG.random((256, 256), dtype=np.float32)
    caplog.set_level(logging.INFO, logger="bioimgzoo")
    m1 = bioimgzoo.load(rdf1, trust_code=True)
    m3 = bioimgzoo.load(rdf3, trust_code=True)
    assert m1.package.descr.weights.pytorch_state_dict.sha256 == m3.package.descr.weights.pytorch_state_dict.sha256
    t1 = m1.predict(image, axes="yx", tile=64)
    t3 = m3.predict(image, axes="yx", tile=64)
    assert caplog.text.count("measured the receptive field") == 2
    assert "y: 2 px" in caplog.text and "y: 6 px" in caplog.text
    assert _rel(t1, _whole(net1, image)) < 1e-5
    assert _rel(t3, _whole(net3, image)) < 1e-5  # was off by hundreds with one entry per weights
    assert len(_entry(config.cache_dir())) == 2


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["radius 0", "radius 1e6", "radius -1", "radius string", "accepted odd",
                                  "measured_on huge", "other key"])
@pytest.mark.parametrize("resign", [False, True])
def test_an_edited_cache_entry_is_a_miss(dilated, caplog, edit, resign):
    from bioimgzoo import config

    _rdf1, _net1, rdf3, net3 = dilated
    image = RNG.random((192, 192), dtype=np.float32)
    caplog.set_level(logging.INFO, logger="bioimgzoo")
    bioimgzoo.load(rdf3, trust_code=True).predict(image, axes="yx", tile=64)
    (path,) = _entry(config.cache_dir())
    data = json.loads(path.read_text())
    measure = data["inputs"]["input"]["measure"]
    if edit == "radius 0":
        measure["radius"] = {"y": 0, "x": 0}
    elif edit == "radius 1e6":
        measure["radius"] = {"y": 10 ** 6, "x": 10 ** 6}
    elif edit == "radius -1":
        measure["radius"] = {"y": -1, "x": 6}
    elif edit == "radius string":
        measure["radius"] = {"y": "6", "x": [6]}
    elif edit == "accepted odd":
        measure["accepted"] = {"y": [1, 0], "x": [64, -8]}
    elif edit == "measured_on huge":
        measure["measured_on"] = {"y": 10 ** 6, "x": 10 ** 6}
    elif edit == "other key":
        data["key"]["architecture"]["kwargs"] = {"dilation": 1}
    path.write_text(json.dumps(data))
    if resign:
        _resign(path)
    caplog.clear()
    tiled = bioimgzoo.load(rdf3, trust_code=True).predict(image, axes="yx", tile=64)
    assert "measured the receptive field" in caplog.text, (edit, resign)
    assert _rel(tiled, _whole(net3, image)) < 1e-5


@pytest.fixture(scope="module")
def odd_networks(tmp_path_factory, arch_file):
    tmp = tmp_path_factory.mktemp("odd")
    return {name: _package(tmp / name, arch_file, name, {})
            for name in ("Positional", "CoordChannels", "WindowNorm", "GlobalGate", "OnlyItsSize")}


@pytest.mark.slow
@pytest.mark.parametrize("name,words", [
    ("Positional", "where a pixel sits in the window"), ("CoordChannels", "where a pixel sits in the window"),
    ("WindowNorm", "depends on the whole window"), ("GlobalGate", "depends on the whole window"),
])
def test_networks_tiles_cannot_reproduce_run_whole_or_are_refused(odd_networks, name, words, caplog):
    rdf, net = odd_networks[name]
    image = RNG.random((160, 160), dtype=np.float32)
    caplog.set_level(logging.INFO, logger="bioimgzoo")
    model = bioimgzoo.load(rdf, trust_code=True)
    with pytest.raises(InputError, match="not translation-equivariant") as info:
        model.predict(image, axes="yx", tile=64)
    assert words in str(info.value) and "strict_sizes=True" in str(info.value)
    # the default: the image fits one window the network takes, so it runs whole
    got = model.predict(image, axes="yx")
    assert _rel(got, _whole(net, image)) < 1e-5
    assert "runs as one 160x160 window" in caplog.text
    # asked for strictly by the package's contract: tiled, seams accepted by the caller
    strict = bioimgzoo.load(rdf, trust_code=True, strict_sizes=True).predict(image, axes="yx")
    assert strict.shape == got.shape


@pytest.mark.slow
def test_a_positional_network_that_takes_only_its_size_is_refused_for_larger_images(odd_networks):
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    rdf, _net = odd_networks["OnlyItsSize"]
    image = RNG.random((128, 128), dtype=np.float32)
    with pytest.raises(InputError, match="where a pixel sits in the window") as info:
        bioimgzoo.load(rdf, trust_code=True).predict(image, axes="yx")
    assert "does not fit" not in str(info.value) or "crop" in str(info.value)
    small = RNG.random((64, 64), dtype=np.float32)
    assert bioimgzoo.load(rdf, trust_code=True).predict(small, axes="yx").shape[-2:] == (64, 64)
    np.save(odd_networks["OnlyItsSize"][0].parent / "big.npy", image)
    r = CliRunner().invoke(main, ["predict", str(rdf), str(rdf.parent / "big.npy"), "-o", str(rdf.parent / "out"),
                                  "--axes", "yx", "--trust-code"])
    assert r.exit_code == 1 and "not translation-equivariant" in r.output and "Traceback" not in r.output


def test_a_convolutional_network_passes_the_check():
    """Dilated convolutions, measured directly: equivariant, radius exactly 2 * dilation."""
    from fractions import Fraction

    from bioimgzoo.descr.axes import AxisInfo
    from bioimgzoo.descr.sizes import AxisSizes
    from bioimgzoo.descr.tensors import TensorSpec
    from bioimgzoo.runtime.receptive_field import measure_receptive_field

    axes = (AxisInfo("batch", "batch", None), AxisInfo("channel", "channel", 1),
            AxisInfo("y", "space", 32), AxisInfo("x", "space", 32))
    sizes = {"batch": None, "channel": AxisSizes(1), "y": AxisSizes(32), "x": AxisSizes(32)}
    spec = TensorSpec("in", axes, sizes, {a.id: 1.0 for a in axes}, {}, "float32")
    out = TensorSpec("out", axes, sizes, {a.id: 1.0 for a in axes}, {}, "float32")
    links = {"out": {"y": ("y", Fraction(1), 0), "x": ("x", Fraction(1), 0)}}
    ns: dict = {}
    exec(ARCH, ns)
    for dilation in (1, 2, 3):
        torch.manual_seed(0)
        net = ns["Dilated"](dilation=dilation).eval()

        def run(arrays, net=net):
            with torch.no_grad():
                return [net(torch.from_numpy(arrays[0])).numpy()]

        m = measure_receptive_field(run, spec, [out], links, ["y", "x"])
        assert m.equivariant and m.radius == {"y": 2 * dilation, "x": 2 * dilation}, m
    torch.manual_seed(0)
    pos = ns["CoordChannels"]().eval()

    def run_pos(arrays):
        with torch.no_grad():
            return [pos(torch.from_numpy(arrays[0])).numpy()]

    from bioimgzoo.descr.sizes import SizeRef

    # checked by tiles against the whole image (outputs that follow the input), and by shifted windows (not)
    follows = TensorSpec("out", axes, {**sizes, "y": SizeRef("in", "y"), "x": SizeRef("in", "x")},
                         {a.id: 1.0 for a in axes}, {}, "float32")
    for o in (follows, out):
        m = measure_receptive_field(run_pos, spec, [o], links, ["y", "x"])
        assert not m.equivariant and "where a pixel sits" in m.reason, o


def test_an_entry_holds_only_for_the_engine_and_key_it_was_written_for():
    """Written for one engine's input shapes and one key: another engine, key or a forged digest is a miss."""
    from bioimgzoo.descr.axes import AxisInfo
    from bioimgzoo.descr.sizes import AxisSizes
    from bioimgzoo.descr.tensors import TensorSpec
    from bioimgzoo.runtime import receptive_field as rf

    axes = (AxisInfo("batch", "batch", None), AxisInfo("channel", "channel", 1),
            AxisInfo("y", "space", 64), AxisInfo("x", "space", 64))
    sizes = {"batch": None, "channel": AxisSizes(1), "y": AxisSizes(64), "x": AxisSizes(64)}
    spec = TensorSpec("input", axes, sizes, {a.id: 1.0 for a in axes}, {}, "float32")
    m = rf.FieldMeasure("input", {"y": 3, "x": 3}, {"y": (64, 8), "x": (64, 8)}, False, {"y": 128, "x": 128})
    key = ("a" * 64, {"version": 2, "weights": "w"})
    rf.cache.write_cached(key, m, [[1, 1, "h", "w"]])
    assert rf.read_cached(key, spec, ["y", "x"], engine_shapes=[[1, 1, "h", "w"]]) == m
    assert rf.read_cached(key, spec, ["y", "x"], engine_shapes=[[1, 1, 64, 64]]) is None
    assert rf.read_cached(("a" * 64, {"version": 2, "weights": "other"}), spec, ["y", "x"]) is None
    # values no network has on these windows, each a miss
    for bad in ({"radius": {"y": 129, "x": 3}}, {"radius": {"y": -1, "x": 3}},
                {"accepted": {"y": (32, 8), "x": (64, 8)}}, {"measured_on": {"y": 130, "x": 128}},
                {"accepted": {"y": (64, 0), "x": (64, 8)}}):
        forged = rf.FieldMeasure(**{**m.__dict__, **bad})
        assert not forged.plausible({"y": AxisSizes(64), "x": AxisSizes(64)}, ["y", "x"]), bad
    assert m.plausible({"y": AxisSizes(64), "x": AxisSizes(64)}, ["y", "x"])
