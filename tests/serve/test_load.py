"""The server as users run it (``bioimgzoo serve`` in its own process): load, oversized uploads, SIGTERM, the CLI.

Bounded in count and time: every request has a timeout, every wait a limit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import bioimgzoo

from .conftest import TOKEN


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class ServerProcess:
    """``python -m bioimgzoo.cli serve ...`` on 127.0.0.1, a free port; stderr (the logs) kept in a file."""

    def __init__(self, args: list[str], tmp: Path):
        self.log = tmp / "server.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bioimgzoo.cli", "serve", "--port", "0",
                                      "--state-dir", str(tmp / "state"), *args],
                                     stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True, env=env)
        self.url = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                self.url = line.split("listening on", 1)[1].strip()
                break
        assert self.url, f"the server did not start: {self.log.read_text()[-3000:]}"

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def run_server(tmp_path):
    made = []

    def start(*args) -> ServerProcess:
        s = ServerProcess(list(args), tmp_path)
        made.append(s)
        return s

    yield start
    for s in made:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(30)


def binary_request(x: np.ndarray) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "raw", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"axes": "yx", "binary_data_output": True}}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Authorization": f"Bearer {TOKEN}"}


def decode(r: httpx.Response) -> np.ndarray:
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])["outputs"][0]
    return np.frombuffer(r.content[n:], np.float32).reshape(meta["shape"])


@pytest.mark.slow
def test_1000_requests_from_16_clients_no_5xx_outputs_equal_rss_flat(run_server, tiny):
    s = run_server(f"tiny={tiny}", "--token", TOKEN, "--workers", "8", "--queue", "64")
    rng = np.random.default_rng(0)
    images = [(rng.random((64, 64), dtype=np.float32) * (i + 1) * 100) for i in range(8)]
    model = bioimgzoo.load(tiny)
    expected = [model.predict(x, axes="yx") for x in images]
    bodies = [binary_request(x) for x in images]
    clients = [httpx.Client(base_url=s.url, timeout=60) for _ in range(16)]

    def one(k: int) -> tuple[int, bool]:
        body, headers = bodies[k % len(bodies)]
        r = clients[k % 16].post("/v2/models/tiny/infer", content=body, headers=headers)
        if r.status_code != 200:
            return r.status_code, False
        return 200, bool(np.array_equal(decode(r), expected[k % len(bodies)]))

    with ThreadPoolExecutor(16) as pool:
        warm = list(pool.map(one, range(200)))  # warm-up: allocator arenas, onnxruntime's buffers
        before = rss(s.proc.pid)
        results = list(pool.map(one, range(1000)))
        after = rss(s.proc.pid)
    for c in clients:
        c.close()
    statuses = [st for st, _ in warm + results]
    assert not [st for st in statuses if st >= 500], statuses
    assert statuses.count(200) == 1200  # the queue (64) is never full with 16 clients: nothing refused
    assert all(ok for _, ok in results)  # every output equals the in-process prediction, bit for bit
    assert (after - before) / before < 0.05, f"RSS grew from {before / 1e6:.1f} MB to {after / 1e6:.1f} MB"
    text = httpx.get(s.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'bioimgzoo_requests_total{endpoint="infer",model="tiny",status="200"} 1200.0' in text
    assert s.stop() == 0


@pytest.mark.slow
def test_an_oversized_upload_gets_413_without_memory_growth(run_server, tiny):
    s = run_server(f"tiny={tiny}", "--max-body-mb", "8")
    host, port = s.url.rsplit("//", 1)[1].split(":")
    x = np.zeros((64, 64), np.float32)
    body, headers = binary_request(x)
    headers.pop("Authorization")
    assert httpx.post(s.url + "/v2/models/tiny/infer", content=body, headers=headers).status_code == 200
    before = rss(s.proc.pid)
    # a declared size over the limit: refused before one byte of the body is read
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /bioimgzoo/v1/models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (10 << 30) + b"x" * 100)
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
    # no Content-Length (chunked), 256 MB: counted as it streams, refused at 8 MB; the connection ends there
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /bioimgzoo/v1/models/tiny/predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: image/tiff\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
        try:
            while sent < 256:
                sock.sendall(chunk)
                sent += 1
        except OSError:
            pass  # the server stopped reading and closed the connection: what a limit should do
        try:
            answer = sock.recv(65536)
        except OSError:
            pass
    assert sent < 256  # the server closed the connection: it never took the whole body
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413")  # (empty when the close outran the answer)
    after = rss(s.proc.pid)
    assert after - before < 32 << 20, f"RSS grew by {(after - before) / 1e6:.1f} MB on a refused upload"
    assert '" 413 ' in s.log.read_text().replace('POST /bioimgzoo/v1/models/tiny/predict" 413', '" 413 ')
    assert httpx.post(s.url + "/v2/models/tiny/infer", content=body, headers=headers).status_code == 200
    assert s.stop() == 0


@pytest.mark.slow
def test_sigterm_during_load_drops_nothing_and_exits_0(run_server, tiny):
    s = run_server(f"tiny={tiny}", "--workers", "4")
    x = np.random.default_rng(1).random((256, 256), dtype=np.float32)
    expected = bioimgzoo.load(tiny).predict(x, axes="yx")
    body, headers = binary_request(x)
    headers.pop("Authorization")
    outcomes: list[str] = []
    lock = threading.Lock()
    answered_200 = [0]
    start = threading.Barrier(9)

    def client() -> None:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            start.wait()
            for _ in range(400):  # bounded: the server stops long before
                try:
                    r = c.post("/v2/models/tiny/infer", content=body, headers=headers)
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                    with lock:
                        outcomes.append(type(e).__name__)
                    return  # the server is gone: nothing more to send
                with lock:
                    if r.status_code == 200:
                        answered_200[0] += 1
                        outcomes.append("200" if np.array_equal(decode(r), expected) else "200-wrong")
                    else:
                        outcomes.append(f"{r.status_code}:{r.headers.get('retry-after')}")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait()
    deadline = time.monotonic() + 120
    while answered_200[0] < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.proc.send_signal(signal.SIGTERM)  # with requests in flight
    code = s.proc.wait(120)
    for t in threads:
        t.join(120)
    assert code == 0
    assert "200-wrong" not in outcomes
    # besides 200s, only what a stopping server may say: 503 with Retry-After, or no connection at all
    assert set(outcomes) <= {"200", "503:5", "ConnectError", "RemoteProtocolError", "ReadError"}, set(outcomes)
    log = s.log.read_text()
    line = [ln for ln in log.splitlines() if "request(s) answered of" in ln][-1]
    answered, received = (int(w) for w in line.split("stopped: ")[1].split()[0:5:4])
    assert answered == received  # every request that reached the server got its whole answer
    assert outcomes.count("200") == log.count('/infer" 200 ')  # every 200 the server sent was received


def test_the_cli_refuses_unsafe_settings_with_one_message(tiny):
    from click.testing import CliRunner

    from bioimgzoo.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["serve", str(tiny), "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "needs a token" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["serve", str(tiny), "--host", "0.0.0.0", "--token", "short"])
    assert r.exit_code == 1 and "at least 16" in r.output
    r = runner.invoke(main, ["serve", str(tiny), "--token", TOKEN, "--admin-token", TOKEN])
    assert r.exit_code == 1 and "must differ" in r.output
    r = runner.invoke(main, ["serve", str(tiny), "--allow-folder", "/no/such/folder"])
    assert r.exit_code == 1 and "not a folder" in r.output
    r = runner.invoke(main, ["serve", str(tiny) + "-missing"])
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output
