"""Fixtures of the server tests: tiny packages, an app behind httpx's ASGI transport, a real uvicorn server.

The serve extra (starlette, uvicorn, prometheus-client, python-multipart) is
needed; without it every test here is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'bioimgzoo[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'bioimgzoo[serve]'")
pytest.importorskip("prometheus_client", reason="the serve extra is not installed: pip install 'bioimgzoo[serve]'")

import httpx  # noqa: E402

from bioimgzoo.serve import ServeSettings, create_app  # noqa: E402

T = pytest.importorskip("bioimgzoo.testing")

TOKEN = "t0ken-for-the-tests-0123456789"
ADMIN = "adm1n-for-the-tests-0123456789"


def zmuv():
    from bioimageio.spec.model import v0_5 as s

    return s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId("y"), s.AxisId("x")]))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """1 channel in (per-sample zero mean, unit variance), 1 probability channel out, any size 32 + k*16, halo 4."""
    from bioimageio.spec.model import v0_5 as s

    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    return T.write_package(
        tmp_path_factory.mktemp("tiny"), T.SameConv(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x, processing=[zmuv()])],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 4, "x": 4},
                             processing=[s.SigmoidDescr()])], formats=("onnx", "torchscript"))


@pytest.fixture(scope="session")
def needs_trust(tmp_path_factory) -> Path:
    """Only pytorch_state_dict weights with an architecture file: loading runs the package's code."""
    folder = tmp_path_factory.mktemp("trust")
    arch = folder / "arch.py"
    arch.write_text("import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.c1 = torch.nn.Conv2d(1, 4, 3, padding=1)\n        self.c2 = torch.nn.Conv2d(4, 1, 3, padding=1)\n"
                    "    def forward(self, x):\n        return self.c2(torch.relu(self.c1(x)))\n")
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    return T.write_package(
        folder, T.SameConv(), inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 8), "x": (16, 8)}, test=x)],
        outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")})], formats=(),
        state_dict_architecture=(str(arch), "Net", {}))


@pytest.fixture(scope="session")
def allow_folder(tmp_path_factory, tiny, needs_trust) -> Path:
    """An allow-listed folder: 'seg' (tiny, a copy) and 'coded' (needs trust)."""
    root = tmp_path_factory.mktemp("allowed")
    shutil.copytree(tiny.parent, root / "seg")
    shutil.copytree(needs_trust.parent, root / "coded")
    return root


class Gate:
    """An engine that runs ``allow`` calls, then waits for ``release`` (a prediction held in flight)."""

    def __init__(self, inner, allow: int = 0):
        self.inner, self.allow, self.calls = inner, allow, 0
        self.format, self.device = inner.format, inner.device
        self.entered = threading.Event()  # a call is waiting at the gate
        self.release = threading.Event()

    def run(self, inputs):
        self.calls += 1
        if self.calls > self.allow:
            self.entered.set()
            self.release.wait(120)
        return self.inner.run(inputs)

    def __getattr__(self, name):  # session, threads: the wrapped engine's
        return getattr(self.inner, name)


def settings(**kw) -> ServeSettings:
    kw.setdefault("hub", False)
    kw.setdefault("workers", 4)
    return ServeSettings(**kw)


class AsgiServer:
    """The app behind httpx's ASGI transport (no sockets), preloaded, closed at the end."""

    def __init__(self, **kw):
        self.app = create_app(settings(**kw))
        self.server = self.app.state.server
        self.server.preload()

    def client(self, **kw) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://serve", **kw)

    def run(self, coro_fn):
        async def go():
            async with self.client() as c:
                return await coro_fn(c)

        return asyncio.run(go())

    def close(self):
        self.server.close()


def _servers(cls):
    """A factory fixture's body: servers made on demand, all closed at the end of the test."""
    made = []

    def make(**kw):
        made.append(cls(**kw))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def asgi():
    yield from _servers(AsgiServer)


class LiveServer:
    """A real uvicorn server on 127.0.0.1 (a free port) in a thread of this process."""

    def __init__(self, **kw):
        import uvicorn

        self.app = create_app(settings(**kw))
        self.server = self.app.state.server
        self.server.preload()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                lifespan="on")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        for _ in range(600):
            if self.uvicorn.started or not self.thread.is_alive():
                break
            self.thread.join(0.05)
        assert self.uvicorn.started, "uvicorn did not start"
        port = self.uvicorn.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.hostport = f"127.0.0.1:{port}"

    def close(self):
        self.uvicorn.should_exit = True
        self.thread.join(60)


@pytest.fixture
def live():
    yield from _servers(LiveServer)
