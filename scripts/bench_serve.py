"""Benchmark: ``bioimgzoo serve`` against in-process prediction, side by side, in one run.

Prints the figures issue 22 asks for, each as a ratio of two jobs measured
in the same run, in alternating rounds (the machine's momentary load is
shared by both sides of a ratio; the median of per-round ratios is kept):

A. **Latency, 512x512, binary OIP** (shared fixture, onnx): p50/p95 and
   throughput of sequential requests (concurrency 1) to a server process
   against ``model.predict`` in this process (targets: p50 within +10 ms,
   throughput >= 0.9x).
B. **Batching across requests** (a small conv net, onnx, any batch size):
   throughput and p95 of 128x128 images from 8 concurrent clients, against
   a server with ``--max-batch 8`` and one with ``--max-batch 1`` (targets:
   >= 1.3x throughput, p95 <= 1.5x); the same with 1024x1024 images (target
   >= 0.95x: batching never hurts); and the largest difference between a
   batched response and the in-process prediction.
C. **Warm vs cold first request** (fixture, 512x512): a request to a model
   loaded on demand from an allow-listed folder (unloaded with the admin
   token between rounds) against the next request (target >= 5x).
D. **Two models alternating under an LRU of 2**: model loads counted from
   ``/metrics`` while the fixture and the small net alternate (target: 0
   reloads); the same with ``--max-models 1`` for contrast.
E. **A job on an NxN zarr** (default 8192, fixture): submitted to the
   server, against the streaming run the CLI makes (``model.predict(path,
   out=...)`` in a fresh process, model loaded before the clock); the
   server's RSS sampled while the job runs (target >= 0.95x, RSS flat).

Servers run as ``python -m bioimgzoo.cli serve`` subprocesses on 127.0.0.1;
clients are httpx in this process.  ``uptime`` is printed before and after:
the machine may be shared, say so with the figures.

Run: ``python scripts/bench_serve.py [--rounds 3] [--n 30] [--job-size 8192] [--skip-job]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad"
ADMIN = "bench-admin-token-0123456789abcdef"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, work: Path, *args: str):
        self.log = open(work / f"server-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bioimgzoo.cli", "serve", "--port", "0",
                                      "--state-dir", str(work / "state"), *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = ""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"a server did not start: see {self.log.name}")
            if "listening on" in line:
                self.url = line.split("listening on", 1)[1].strip()
                break
        import httpx

        self.client = httpx.Client(base_url=self.url, timeout=600)

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)


def oip_body(x: np.ndarray, axes: str) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "raw", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"axes": axes, "binary_data_output": True}}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def decode(r) -> np.ndarray:
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])["outputs"][0]
    return np.frombuffer(r.content[n:], np.float32).reshape(meta["shape"])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def load_clients(url: str, model: str, bodies: list, n: int, concurrency: int) -> tuple[list[float], float, list]:
    """``n`` requests from ``concurrency`` clients (one connection each); latencies, wall seconds, responses."""
    import httpx

    clients = [httpx.Client(base_url=url, timeout=600) for _ in range(concurrency)]
    lat: list[float] = [0.0] * n
    out: list = [None] * n

    def one(k: int) -> None:
        body, headers = bodies[k % len(bodies)]
        t = time.perf_counter()
        r = clients[k % concurrency].post(f"/v2/models/{model}/infer", content=body, headers=headers)
        lat[k] = time.perf_counter() - t
        r.raise_for_status()
        out[k] = decode(r)

    # one warm-up request per client (connections, the server's threads)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))
        t0 = time.perf_counter()
        list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return lat, wall, out


def small_net_package(work: Path) -> Path:
    """A small conv net (1 -> 16 -> 16 -> 1 channels, 3x3, sigmoid; any batch), exported as a zoo package."""
    import torch
    from bioimageio.spec.model import v0_5 as s

    import bioimgzoo.testing as T

    class SmallNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.c1 = torch.nn.Conv2d(1, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
            self.c3 = torch.nn.Conv2d(16, 1, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.2

        def forward(self, x):
            return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))

    zmuv = s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId("y"), s.AxisId("x")]))
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    return T.write_package(work / "smallnet", SmallNet(), name="small net",
                           inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (32, 16), "x": (32, 16)}, test=x,
                                               processing=[zmuv])],
                           outputs=[T.TensorDef("out", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")},
                                                halo={"y": 4, "x": 4}, processing=[s.SigmoidDescr()])],
                           formats=("onnx",))


# ---------------------------------------------------------------------- A
def bench_latency(work: Path, rounds: int, n: int) -> dict:
    """Sequential requests to a server against ``model.predict`` here, twice: onnxruntime's default session
    (as ``bioimgzoo.load`` gives it), and the session settings the server uses (no spin-waiting)."""
    import bioimgzoo
    from bioimgzoo.runtime.engines import set_threads

    plain = bioimgzoo.load(FIXTURE, weights="onnx")
    same = bioimgzoo.load(FIXTURE, weights="onnx")
    set_threads(same.engine, os.cpu_count() or 1)  # what the server does to the sessions it loads
    srv = Server(work, f"fixture={FIXTURE}", "--weights", "onnx")
    x = (np.random.default_rng(0).random((512, 512), dtype=np.float32) * 255)
    body = [oip_body(x, "yx")]
    lat: dict[str, list[float]] = {"default": [], "same": [], "server": []}
    ratios: dict[str, list[float]] = {"default": [], "same": []}
    for m in (plain, same):
        m.predict(x, axes="yx")
    for r in range(rounds):
        walls = {}
        for key, m in (("default", plain), ("same", same)):
            t0 = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                ref = m.predict(x, axes="yx")
                lat[key].append(time.perf_counter() - t)
            walls[key] = time.perf_counter() - t0
        remote, wall_remote, outs = load_clients(srv.url, "fixture", body, n, 1)
        assert np.array_equal(outs[-1], ref), "the server's answer differs from model.predict"
        lat["server"] += remote
        for key in ratios:
            ratios[key].append(walls[key] / wall_remote)
    srv.stop()
    out = {f"{k}_p50_ms": pct(v, 50) for k, v in lat.items()}
    out.update({f"{k}_p95_ms": pct(v, 95) for k, v in lat.items()})
    out.update({f"{k}_per_s": len(v) / sum(v) for k, v in lat.items()})
    out.update({f"throughput_vs_{k}": statistics.median(v) for k, v in ratios.items()})
    out["round_ratios"] = ratios
    return out


# ---------------------------------------------------------------------- B
def bench_batching(work: Path, pkg: Path, rounds: int, n: int) -> dict:
    import bioimgzoo

    model = bioimgzoo.load(pkg)
    on = Server(work, f"net={pkg}", "--max-batch", "8", "--workers", "8")
    off = Server(work, f"net={pkg}", "--max-batch", "1", "--workers", "8")
    result = {}
    for size, count in ((128, n * 8), (1024, max(16, n))):
        rng = np.random.default_rng(size)
        images = [(rng.random((size, size), dtype=np.float32) * (i + 1) * 50) for i in range(8)]
        bodies = [oip_body(im, "yx") for im in images]
        refs = [model.predict(im, axes="yx") for im in images]
        tp, p95, diff = [], [], 0.0
        p95_on_all, p95_off_all = [], []
        for r in range(rounds):
            # each round alternates short bursts of both sides, so a swing of the machine's load hits both
            got = {"on": ([], 0.0), "off": ([], 0.0)}
            for burst in range(4):
                order = [(on, "on"), (off, "off")] if (r + burst) % 2 == 0 else [(off, "off"), (on, "on")]
                for srv, label in order:
                    lat, wall, outs = load_clients(srv.url, "net", bodies, max(8, count // 4), 8)
                    got[label] = (got[label][0] + lat, got[label][1] + wall)
                    if label == "on":
                        diff = max(diff, max(float(np.abs(o - refs[k % 8]).max()) for k, o in enumerate(outs)))
            tp.append(got["off"][1] / got["on"][1])
            p95.append(pct(got["on"][0], 95) / pct(got["off"][0], 95))
            p95_on_all.append(pct(got["on"][0], 95))
            p95_off_all.append(pct(got["off"][0], 95))
        calls, execs = on.metric('bioimgzoo_inferences_total{model="net"}'), on.metric(
            'bioimgzoo_executions_total{model="net"}')
        result[size] = {"throughput_on_vs_off": statistics.median(tp), "p95_on_vs_off": statistics.median(p95),
                        "p95_on_ms": statistics.median(p95_on_all), "p95_off_ms": statistics.median(p95_off_all),
                        "max_abs_diff_vs_in_process": diff, "round_ratios": tp,
                        "mean_calls_per_engine_run_so_far": calls / max(execs, 1)}
    on.stop()
    off.stop()
    return result


# ---------------------------------------------------------------------- C
def bench_cold_warm(work: Path, pkg: Path, rounds: int) -> dict:
    """First request to a model loaded on demand (allow-listed folder) against the next one, per model."""
    folder = work / "allowed"
    folder.mkdir(exist_ok=True)
    if not (folder / "smallnet").exists():
        shutil.copytree(pkg.parent, folder / "smallnet")
    out = {}
    for name, allowed in ((FIXTURE.name, FIXTURE.parent), ("smallnet", folder)):
        srv = Server(work, "--allow-folder", str(allowed), "--admin-token", ADMIN, "--no-hub")
        x = np.random.default_rng(1).random((512, 512), dtype=np.float32)
        body = oip_body(x, "yx")
        cold, warm = [], []
        for _ in range(rounds):
            cold.append(one_request(srv.url, name, body))
            warm.append(one_request(srv.url, name, body))
            r = srv.client.post(f"/v2/repository/models/{name}/unload", headers={"Authorization": f"Bearer {ADMIN}"})
            r.raise_for_status()
        srv.stop()
        out[name] = {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
                     "cold_vs_warm": statistics.median([c / w for c, w in zip(cold, warm)])}
    return out


def one_request(url: str, model: str, request: tuple[bytes, dict]) -> float:
    """Seconds of one request on a new connection."""
    import httpx

    with httpx.Client(base_url=url, timeout=600) as c:
        body, headers = request
        t = time.perf_counter()
        c.post(f"/v2/models/{model}/infer", content=body, headers=headers).raise_for_status()
        return time.perf_counter() - t


# ---------------------------------------------------------------------- D
def bench_lru(work: Path, pkg: Path, n: int) -> dict:
    out = {}
    x = np.random.default_rng(2).random((256, 256), dtype=np.float32)
    body = oip_body(x, "yx")
    for max_models in (2, 1):
        srv = Server(work, f"fixture={FIXTURE}", f"net={pkg}", "--max-models", str(max_models))
        before = srv.metric("bioimgzoo_model_load_seconds_count")
        t0 = time.perf_counter()
        for k in range(n):
            one_request(srv.url, ("fixture", "net")[k % 2], body)
        seconds = time.perf_counter() - t0
        out[max_models] = {"reloads": int(srv.metric("bioimgzoo_model_load_seconds_count") - before),
                           "requests": n, "seconds_per_request": seconds / n}
        srv.stop()
    return out


# ---------------------------------------------------------------------- E
_STREAM = """
import sys, time, bioimgzoo, numpy as np
from pathlib import Path
def vm(key):
    return next(int(l.split()[1]) / 1024 for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith(key + ":"))
model = bioimgzoo.load(sys.argv[1], weights="onnx")
model.predict(np.zeros((600, 600), np.float32), axes="yx")
Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
base = vm("VmHWM")
t = time.perf_counter()
model.predict(sys.argv[2], axes="yx", out=sys.argv[3], overwrite=True)
print(time.perf_counter() - t, vm("VmHWM") - base)
"""


def bench_job(work: Path, size: int) -> dict:
    import zarr

    data = work / "data"
    data.mkdir(exist_ok=True)
    src = data / f"in{size}.zarr"
    z = zarr.create_array(str(src), shape=(size, size), chunks=(1024, 1024), dtype="float32")
    rng = np.random.default_rng(0)
    for y in range(0, size, 1024):
        z[y:y + 1024] = rng.random((min(1024, size - y), size), dtype=np.float32) * 255
    srv = Server(work, f"fixture={FIXTURE}", "--weights", "onnx", "--data-root", str(data))
    # the engine's first run (its arena) before the RSS baseline, as the streaming run below does
    x = np.zeros((600, 600), np.float32)
    one_request(srv.url, "fixture", oip_body(x, "yx"))
    base = rss_mb(srv.proc.pid)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(srv.proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    job = srv.client.post("/bioimgzoo/v1/jobs", json={"model": "fixture", "input": str(src),
                                                       "output": str(data / "job.ome.zarr"), "axes": "yx"}).json()
    while job["state"] in ("queued", "running"):
        time.sleep(0.5)
        job = srv.client.get(f"/bioimgzoo/v1/jobs/{job['id']}").json()
    job_s = time.perf_counter() - t
    done.set()
    sampler.join()
    srv.stop()
    if job["state"] != "done":
        raise SystemExit(f"the job failed: {job}")
    stream = subprocess.run([sys.executable, "-c", _STREAM, str(FIXTURE), str(src), str(data / "cli.ome.zarr")],
                            capture_output=True, text=True, check=True)
    stream_s, stream_peak = (float(v) for v in stream.stdout.strip().splitlines()[-1].split())
    a = np.asarray(zarr.open_group(str(data / "job.ome.zarr"), mode="r")["0"][4096 % size:4096 % size + 512])
    b = np.asarray(zarr.open_group(str(data / "cli.ome.zarr"), mode="r")["0"][4096 % size:4096 % size + 512])
    return {"size": size, "job_s": job_s, "stream_s": stream_s, "job_vs_stream": stream_s / job_s,
            "job_mp_per_s": size * size / 1e6 / job_s, "server_rss_before_mb": base,
            "server_rss_peak_above_mb": peak[0] - base, "stream_peak_above_mb": stream_peak,
            "same_output": bool(np.array_equal(a, b))}


def report_latency(a: dict, args: argparse.Namespace) -> None:
    print(f"\nA. 512x512 binary OIP, fixture onnx, concurrency 1 ({args.rounds} rounds x {args.n}):")
    for key, label in (("default", "in process, default session "), ("same", "in process, server's session "),
                       ("server", "server                       ")):
        print(f"   {label} p50 {a[key + '_p50_ms']:7.1f} ms  p95 {a[key + '_p95_ms']:7.1f} ms  "
              f"{a[key + '_per_s']:.2f}/s")
    for key in ("default", "same"):
        print(f"   vs in process ({key} session): p50 {a['server_p50_ms'] - a[key + '_p50_ms']:+.1f} ms (target "
              f"<= +10), throughput {a['throughput_vs_' + key]:.3f}x (target >= 0.9; rounds "
              f"{', '.join(f'{v:.3f}' for v in a['round_ratios'][key])})", flush=True)


def report_batching(b: dict) -> None:
    for size, v in b.items():
        target = "target >= 1.3" if size == 128 else "target >= 0.95"
        print(f"\nB. batching across requests, small net, {size}x{size}, 8 clients:\n"
              f"   throughput on/off {v['throughput_on_vs_off']:.3f}x ({target}; rounds "
              f"{', '.join(f'{r:.3f}' for r in v['round_ratios'])})\n"
              f"   p95 on {v['p95_on_ms']:.1f} ms vs off {v['p95_off_ms']:.1f} ms: {v['p95_on_vs_off']:.3f}x "
              f"(target <= 1.5)\n"
              f"   requests per engine run (batching on): {v['mean_calls_per_engine_run_so_far']:.2f}; "
              f"largest |batched - in-process|: {v['max_abs_diff_vs_in_process']:.3g}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=30, help="requests per round (x8 for 128x128 batching)")
    ap.add_argument("--job-size", type=int, default=8192)
    ap.add_argument("--skip-job", action="store_true")
    ap.add_argument("--only", default="ABCDE", help="sections to run, e.g. BE (default: all)")
    ap.add_argument("--make-net", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_net:
        small_net_package(Path(args.make_net))
        return
    if not (FIXTURE / "rdf.yaml").is_file():
        raise SystemExit(f"the shared fixture is missing at {FIXTURE}")
    print(f"machine: {os.cpu_count()} cores; {uptime()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        # built in a subprocess: torch's threads never run in this process, whose timings are compared
        subprocess.run([sys.executable, __file__, "--make-net", str(work)], check=True)
        pkg = work / "smallnet" / "package" / "rdf.yaml"
        if "A" in args.only:
            report_latency(bench_latency(work, args.rounds, args.n), args)
        if "B" in args.only:
            report_batching(bench_batching(work, pkg, args.rounds, args.n))
        if "C" in args.only:
            for name, v in bench_cold_warm(work, pkg, args.rounds).items():
                print(f"\nC. first request, {name} 512x512: cold (loaded on demand) {v['cold_s']:.3f} s, warm "
                      f"{v['warm_s']:.3f} s: {v['cold_vs_warm']:.2f}x (target >= 5)", flush=True)
        if "D" in args.only:
            d = bench_lru(work, pkg, 20)
            print(f"\nD. two models alternating, 20 requests: --max-models 2: {d[2]['reloads']} reloads "
                  f"({d[2]['seconds_per_request'] * 1000:.0f} ms/request; target 0); --max-models 1: "
                  f"{d[1]['reloads']} reloads ({d[1]['seconds_per_request'] * 1000:.0f} ms/request)", flush=True)
        if "E" in args.only and not args.skip_job:
            e = bench_job(work, args.job_size)
            print(f"\nE. job on a {e['size']}x{e['size']} zarr (fixture onnx): {e['job_s']:.1f} s "
                  f"({e['job_mp_per_s']:.2f} MP/s) vs the CLI's streaming run {e['stream_s']:.1f} s: "
                  f"{e['job_vs_stream']:.3f}x (target >= 0.95); server RSS {e['server_rss_before_mb']:.0f} MB "
                  f"before, peak +{e['server_rss_peak_above_mb']:.0f} MB during the job (the streaming run: peak "
                  f"+{e['stream_peak_above_mb']:.0f} MB above its loaded process); outputs equal: "
                  f"{e['same_output']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine after: {uptime()}")


if __name__ == "__main__":
    main()
