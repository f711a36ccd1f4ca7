"""Connecting to a dask scheduler is a bounded wait with a check that it is one (issue 20).

Servers made here: a silent socket (accepts, never answers), an HTTP server
(waits for a request), a talker (an SSH-like greeting), a liar (a length
prefix of exabytes), a dripper (a valid-looking prefix, then nothing), a
closed port; and a real scheduler, which must still connect.  A no-timing
test: the wait is bounded because the call returns at all (each is run under
BIOIMGZOO_TIMEOUT=1 and would hang without the bound).
"""

from __future__ import annotations

import http.server
import socket
import struct
import threading

import numpy as np
import pytest

from bioimgzoo.errors import InputError
from bioimgzoo.runtime.executor.distributed import connect

from .test_streaming import same_conv  # noqa: F401 (fixture: a tiny onnx package)


class _Server:
    def __init__(self, greet):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.conns: list = []
        self.greet = greet
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.greet:
                try:
                    c.sendall(self.greet)
                except OSError:
                    pass

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture(autouse=True)
def _short_wait(monkeypatch):
    monkeypatch.setenv("BIOIMGZOO_TIMEOUT", "1")


@pytest.mark.parametrize("greet,words", [
    (b"", "said nothing"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not as a dask scheduler"),
    (struct.pack("Q", 1 << 60), "not as a dask scheduler"),
    (struct.pack("Q", 4096) + b"\x02\x00", "said nothing"),  # a prefix, then silence
    (struct.pack("Q", 24) + b"\x01" + b"\x00" * 23, "not as a dask scheduler"),  # framing, no handshake
])
def test_something_that_is_not_a_scheduler_is_one_message(greet, words):
    server = _Server(greet)
    try:
        with pytest.raises(InputError, match=words):
            connect(server.address)
    finally:
        server.close()


def test_an_http_server_and_a_closed_port():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(InputError, match="HTTP server"):
            connect(f"tcp://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(InputError, match="cannot reach the dask scheduler"):
        connect("tcp://127.0.0.1:9")
    with pytest.raises(InputError, match="not an address|tcp://host:port"):
        connect("tcp://[::1")


def test_the_cli_says_it_in_one_line(same_conv, tmp_path):
    import zarr
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    zarr.create_array(str(tmp_path / "in.zarr"), shape=(64, 64), chunks=(32, 32), dtype="float32")[...] = \
        np.random.default_rng(0).random((64, 64), dtype="float32")
    server = _Server(b"")
    try:
        r = CliRunner().invoke(main, ["predict", str(same_conv), str(tmp_path / "in.zarr"), "-o",
                                      str(tmp_path / "o.ome.zarr"), "--axes", "yx", "--scheduler", server.address])
    finally:
        server.close()
    assert r.exit_code == 1 and "Traceback" not in r.output and "said nothing within 1 s" in r.output, r.output
    assert r.output.strip().count("\n") == 0


@pytest.mark.slow
def test_a_real_scheduler_still_connects():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster:
        client, started, _threads = connect(cluster.scheduler_address)
        try:
            assert started is None and client.scheduler_info()["address"] == cluster.scheduler_address
        finally:
            client.close()
