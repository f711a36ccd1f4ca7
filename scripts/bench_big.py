"""Benchmark: images larger than memory through the shared fixture (onnx), zarr in -> OME-Zarr out.

Prints, for float32 zarr images of 4096², 8192² and 16384² (``--sizes``):

* peak RSS above the loaded process: each case runs in its own subprocess,
  which reads its own ``VmHWM`` (peak resident set) from /proc/self/status
  after loading the model and opening the image, resets it
  (``/proc/self/clear_refs``), predicts, and reads it again;
* throughput of the streaming executor (zarr in -> OME-Zarr out, with its
  pyramid) against the in-memory executor on the smallest size: against
  ``model.predict(array)`` on an array already in memory (the engine's work
  and nothing else: the target), and against the same job done in memory
  (read the whole zarr, predict, write the OME-Zarr with the same writer);
* a LocalCluster of 2 single-threaded workers against 1 process with 2
  engine threads (the streaming executor), on the smallest size.

The comparisons on the smallest size run ``--repeat`` times each,
alternating, and the best time of each is compared (noise on a shared
machine only ever adds time); every time is printed.  One-time costs of a
process (zarr's threads starting, importing the NGFF models) are paid
before the clock in every case: they are not throughput.

Run: ``python scripts/bench_big.py [--sizes 4096 8192 16384] [--repeat 2]``.
The figures depend on the machine's load: say so with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad"


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def make_input(path: Path, n: int) -> None:
    import numpy as np
    import zarr

    if path.exists():
        return
    z = zarr.create_array(str(path), shape=(n, n), chunks=(1024, 1024), dtype="float32", dimension_names=["y", "x"])
    rng = np.random.default_rng(0)
    for y in range(0, n, 1024):
        z[y:y + 1024] = rng.random((min(1024, n - y), n), dtype=np.float32) * 255


def case(kind: str, path: str, out: str, threads: int) -> dict:
    """One measurement, in this (child) process."""
    import numpy as np

    import bioimgzoo
    from bioimgzoo.runtime.executor.distributed import set_engine_threads

    model = bioimgzoo.load(str(FIXTURE), weights="onnx")
    set_engine_threads(model, threads)
    import zarr
    # one-time costs of a process, not of its throughput, are paid before the clock in every case: zarr's event
    # loop and codec threads start (the in-memory case reads its whole input before the clock anyway), and the
    # NGFF models the writer validates with are imported (about 0.4 s of pydantic schemas)
    import ome_zarr_models.v04.image  # noqa: F401
    import ome_zarr_models.v04.image_label  # noqa: F401

    np.asarray(zarr.open_array(path, mode="r")[:1, :1])
    if kind == "memory":
        x = np.asarray(zarr.open_array(path, mode="r")[...])
    ok = _reset_peak()
    before = _vm("VmHWM") if ok else _vm("VmRSS")
    t = time.perf_counter()
    if kind == "memory":
        model.predict(x, axes="yx")
    elif kind == "memory-zarr":  # the whole job in memory: read, predict, write the same OME-Zarr
        from bioimgzoo.io.zarr import OmeZarrWriter

        y = model.predict(np.asarray(zarr.open_array(path, mode="r")[...]), axes="yx")
        writer = OmeZarrWriter(out, overwrite=True)
        writer.create("mask", shape=y.shape, dtype=y.dtype, chunks=(1, 512, 512), axes="cyx",
                      scale=[1.0, 1.0, 1.0])[...] = y
        writer.finish()
    elif kind == "stream":
        model.predict(path, axes="yx", out=out, overwrite=True)
    elif kind == "cluster":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            # warm up: the cluster starts and each worker loads the model (its plugin) before the clock runs
            warm = Path(out).with_name("warm.zarr")
            make_input(warm, 512)
            model.predict(str(warm), axes="yx", out=str(warm) + ".out.ome.zarr", overwrite=True, scheduler=client)
            t = time.perf_counter()
            model.predict(path, axes="yx", out=out, overwrite=True, scheduler=client)
            seconds = time.perf_counter() - t
        return {"kind": kind, "seconds": seconds, "peak_above_loaded_mb": float("nan"), "peak_reset": ok}
    seconds = time.perf_counter() - t
    return {"kind": kind, "seconds": seconds, "peak_above_loaded_mb": _vm("VmHWM") - before, "peak_reset": ok}


def run_child(kind: str, path: Path, out: Path, threads: int, *, malloc_env: bool = True) -> dict:
    # glibc keeps freed buffers of many threads (zarr's codec pool, reader, writer) in per-thread arenas and
    # raises its mmap threshold: RSS then grows with the run's length, not with what the executor holds
    env = {**({"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)} if malloc_env else {}),
           **os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run([sys.executable, __file__, "--case", kind, str(path), str(out), str(threads)],
                         capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{kind} {path} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--plain-malloc", action="store_true",
                    help="run the children with glibc's default malloc settings (to see what the settings change)")
    ap.add_argument("--only-stream", action="store_true", help="measure the streaming runs only")
    ap.add_argument("--work", default=None, help="folder for the zarr inputs and outputs (default: a temp folder)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each comparison on the smallest size")
    args = ap.parse_args()
    if args.case:
        kind, path, out, threads = args.case
        print(json.dumps(case(kind, path, out, int(threads))))
        return
    if not (FIXTURE / "rdf.yaml").is_file():
        raise SystemExit(f"fixture not found at {FIXTURE}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_big_"))
    malloc_env = not args.plain_malloc
    print(f"machine: {os.cpu_count()} cores (shared, load {os.getloadavg()[0]:.1f}); work folder {work}; children run "
          + ("with MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576" if malloc_env else "with glibc's default malloc"),
          flush=True)
    n0 = min(args.sizes)
    times: dict[str, list[float]] = {"memory": [], "memory-zarr": [], "stream": [], "cluster": []}
    peaks = {}
    for n in sorted(args.sizes):
        src = work / f"in_{n}.zarr"
        make_input(src, n)
        reps = max(1, args.repeat) if n == n0 else 1
        for rep in range(reps):
            if n == n0 and not args.only_stream:
                mem = run_child("memory", src, work / "unused", 2, malloc_env=malloc_env)
                times["memory"].append(mem["seconds"])
                print(f"{n}x{n} in-memory executor, array in memory: {mem['seconds']:.1f} s, peak RSS above loaded "
                      f"{mem['peak_above_loaded_mb']:.0f} MB", flush=True)
            r = run_child("stream", src, work / f"out_{n}.ome.zarr", 2, malloc_env=malloc_env)
            peaks.setdefault(n, r["peak_above_loaded_mb"])  # the first run of each size
            if n == n0:
                times["stream"].append(r["seconds"])
            print(f"{n}x{n} stream zarr->OME-Zarr: {r['seconds']:.1f} s, {n * n / 1e6 / r['seconds']:.2f} MP/s, "
                  f"peak RSS above loaded {r['peak_above_loaded_mb']:.0f} MB", flush=True)
            if n == n0 and not args.only_stream:
                mz = run_child("memory-zarr", src, work / f"out_{n}_memory.ome.zarr", 2, malloc_env=malloc_env)
                times["memory-zarr"].append(mz["seconds"])
                print(f"{n}x{n} in memory zarr->OME-Zarr (read whole, predict, write): {mz['seconds']:.1f} s, peak "
                      f"RSS above loaded {mz['peak_above_loaded_mb']:.0f} MB", flush=True)
                # engine threads are set per worker
                cl = run_child("cluster", src, work / f"out_{n}_cluster.ome.zarr", 1, malloc_env=malloc_env)
                times["cluster"].append(cl["seconds"])
                print(f"{n}x{n} LocalCluster 2 workers x 1 thread: {cl['seconds']:.1f} s", flush=True)
    values = list(peaks.values())
    spread = (max(values) - min(values)) / max(1e-9, min(values))
    print("peak RSS above the loaded process, streaming: " + ", ".join(f"{n}² {v:.0f} MB" for n, v in peaks.items())
          + f" -> max {max(values):.0f} MB (target < 600), spread {100 * spread:.1f}% (target <= 10%)", flush=True)
    if args.only_stream:
        return
    best = {k: min(v) for k, v in times.items()}
    print(f"{n0}x{n0}, best of {len(times['stream'])} each: streaming {best['stream']:.1f} s; in-memory executor "
          f"{best['memory']:.1f} s -> streaming/in-memory throughput {best['memory'] / best['stream']:.2f}x "
          f"(target >= 0.9); the same job in memory (read, predict, write) {best['memory-zarr']:.1f} s -> "
          f"{best['memory-zarr'] / best['stream']:.2f}x", flush=True)
    print(f"{n0}x{n0}, best of {len(times['cluster'])}: LocalCluster 2 workers x 1 thread {best['cluster']:.1f} s; "
          f"1 process x 2 threads {best['stream']:.1f} s -> cluster/process throughput "
          f"{best['stream'] / best['cluster']:.2f}x (target >= 0.9; cluster started and models loaded before "
          "timing; 1024-px work units in both)", flush=True)


if __name__ == "__main__":
    main()
