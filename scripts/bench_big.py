"""Benchmark: images larger than memory through the shared fixture (onnx), zarr in -> OME-Zarr out.

Prints, in one run, for float32 zarr images of 4096², 8192² and 16384²
(``--sizes``):

* **peak RSS above the loaded process** of the streaming executor (zarr in,
  OME-Zarr with its pyramid out): each size runs in its own subprocess,
  which reads its own ``VmHWM`` (peak resident set) from /proc/self/status
  after loading the model and opening the image, resets it
  (``/proc/self/clear_refs``), predicts, and reads it again;
* **throughput** on the smallest size, in one more subprocess that loads
  the model once and then runs, ``--repeat`` rounds, each job once per
  round in a rotating order: the in-memory executor on an array already in
  memory (``model.predict(array)``: the engine's work and nothing else; the
  target's baseline), the streaming executor (zarr in -> OME-Zarr out), the
  same job done in memory (read the whole zarr, predict, write the OME-Zarr
  with the same writer), and a LocalCluster of 2 single-threaded workers
  (started, models loaded, before the clock) against 1 process with 2 engine
  threads.  Ratios are taken within each round (the engine, the process
  and the machine's momentary load are the same for all four jobs of a
  round) and their median is reported, with every time.

One-time costs of a process (the engine's first run, zarr's threads
starting, importing the NGFF models) are paid before any clock: they are
not throughput.

Run: ``python scripts/bench_big.py [--sizes 4096 8192 16384] [--repeat 3]``.
The figures depend on the machine's load: say so with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def _load_warm(path: str, threads: int):
    """The fixture's model, engine run once, zarr and the NGFF models warmed: the one-time costs, paid."""
    import numpy as np
    import zarr

    import bioimgzoo
    from bioimgzoo.runtime.engines import set_threads

    import ome_zarr_models.v04.image  # noqa: F401
    import ome_zarr_models.v04.image_label  # noqa: F401

    model = bioimgzoo.load(str(FIXTURE), weights="onnx")
    set_threads(model.engine, threads)
    np.asarray(zarr.open_array(path, mode="r")[:1, :1])
    model.predict(np.zeros((600, 600), np.float32), axes="yx")
    return model


def peak_case(path: str, out: str, threads: int) -> dict:
    """Peak RSS (and time) of one streamed prediction, in this (child) process.

    Only the model is loaded before the peak is reset: the engine's first run
    (its memory arena, some 190 MB for this model) counts, as it did in the
    figures the issue started from (859 MB at 8192² in memory).
    """
    import numpy as np
    import zarr

    import bioimgzoo
    from bioimgzoo.runtime.engines import set_threads

    model = bioimgzoo.load(str(FIXTURE), weights="onnx")
    set_threads(model.engine, threads)
    np.asarray(zarr.open_array(path, mode="r")[:1, :1])
    ok = _reset_peak()
    before = _vm("VmHWM") if ok else _vm("VmRSS")
    t = time.perf_counter()
    model.predict(path, axes="yx", out=out, overwrite=True)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_above_loaded_mb": _vm("VmHWM") - before, "peak_reset": ok}


JOBS = ("memory", "stream", "memory-zarr", "cluster")


def compare_case(path: str, work: str, rounds: int) -> dict:
    """The throughput comparison (see the module docstring), in this (child) process."""
    import numpy as np
    import zarr
    from distributed import Client, LocalCluster

    from bioimgzoo.io.zarr import OmeZarrWriter

    model = _load_warm(path, 2)
    x = np.asarray(zarr.open_array(path, mode="r")[...])
    times: dict[str, list[float]] = {k: [] for k in JOBS}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        warm = Path(work) / "warm.zarr"  # the cluster starts and each worker loads the model before the clock
        make_input(warm, 512)
        model.predict(str(warm), axes="yx", out=str(warm) + ".out.ome.zarr", overwrite=True, scheduler=client)
        for r in range(rounds):
            for job in JOBS[r % len(JOBS):] + JOBS[:r % len(JOBS)]:  # rotate who goes first
                out = str(Path(work) / f"compare_{job}.ome.zarr")
                t = time.perf_counter()
                if job == "memory":
                    model.predict(x, axes="yx")
                elif job == "stream":
                    model.predict(path, axes="yx", out=out, overwrite=True)
                elif job == "memory-zarr":  # the whole job in memory: read, predict, write the same OME-Zarr
                    y = model.predict(np.asarray(zarr.open_array(path, mode="r")[...]), axes="yx")
                    writer = OmeZarrWriter(out, overwrite=True)
                    writer.create("mask", shape=y.shape, dtype=y.dtype, chunks=(1, 512, 512), axes="cyx",
                                  scale=[1.0, 1.0, 1.0])[...] = y
                    writer.finish()
                    del y
                else:
                    model.predict(path, axes="yx", out=out, overwrite=True, scheduler=client)
                times[job].append(time.perf_counter() - t)
                print(f"round {r + 1} {job}: {times[job][-1]:.1f} s", file=sys.stderr, flush=True)
    return times


def run_child(args: list[str], *, malloc_env: bool = True, threads: int = 2) -> dict:
    # glibc keeps freed buffers of many threads (zarr's codec pool, reader, writer) in per-thread arenas and
    # raises its mmap threshold: RSS then grows with the run's length, not with what the executor holds
    env = {**({"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)} if malloc_env else {}),
           **os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run([sys.executable, __file__, "--case", *args], stdout=subprocess.PIPE, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{args[0]} {args[1]} failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--plain-malloc", action="store_true",
                    help="run the children with glibc's default malloc settings (to see what the settings change)")
    ap.add_argument("--only-stream", action="store_true", help="measure the streaming runs only")
    ap.add_argument("--work", default=None, help="folder for the zarr inputs and outputs (default: a temp folder)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the throughput comparison")
    args = ap.parse_args()
    if args.case:
        kind, *rest = args.case
        if kind == "peak":
            print(json.dumps(peak_case(rest[0], rest[1], 2)))
        else:
            print(json.dumps(compare_case(rest[0], rest[1], int(rest[2]))))
        return
    if not (FIXTURE / "rdf.yaml").is_file():
        raise SystemExit(f"fixture not found at {FIXTURE}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_big_"))
    malloc_env = not args.plain_malloc
    print(f"machine: {os.cpu_count()} cores (shared, load {os.getloadavg()[0]:.1f}); work folder {work}; children run "
          + ("with MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576" if malloc_env else "with glibc's default malloc"),
          flush=True)
    peaks = {}
    for n in sorted(args.sizes):
        src = work / f"in_{n}.zarr"
        make_input(src, n)
        r = run_child(["peak", str(src), str(work / f"out_{n}.ome.zarr")], malloc_env=malloc_env)
        peaks[n] = r["peak_above_loaded_mb"]
        print(f"{n}x{n} stream zarr->OME-Zarr: {r['seconds']:.1f} s, {n * n / 1e6 / r['seconds']:.2f} MP/s, "
              f"peak RSS above loaded {r['peak_above_loaded_mb']:.0f} MB", flush=True)
    values = list(peaks.values())
    spread = (max(values) - min(values)) / max(1e-9, min(values))
    print("peak RSS above the loaded process, streaming: " + ", ".join(f"{n}² {v:.0f} MB" for n, v in peaks.items())
          + f" -> max {max(values):.0f} MB (target < 600), spread {100 * spread:.1f}% (target <= 10%)", flush=True)
    if args.only_stream:
        return
    n0 = min(args.sizes)
    times = run_child(["compare", str(work / f"in_{n0}.zarr"), str(work), str(max(1, args.repeat))],
                      malloc_env=malloc_env)
    rounds = len(times["stream"])
    for job in JOBS:
        print(f"{n0}x{n0} {job}: " + ", ".join(f"{t:.1f}" for t in times[job]) + " s", flush=True)

    def median_ratio(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(times[num], times[den]))

    print(f"{n0}x{n0}, median of {rounds} rounds: streaming/in-memory executor throughput "
          f"{median_ratio('memory', 'stream'):.2f}x (target >= 0.9); streaming against the same job in memory "
          f"(read, predict, write) {median_ratio('memory-zarr', 'stream'):.2f}x", flush=True)
    print(f"{n0}x{n0}, median of {rounds} rounds: LocalCluster 2 workers x 1 thread against 1 process x 2 threads "
          f"(streaming) {median_ratio('stream', 'cluster'):.2f}x (target >= 0.9; 1024-px work units in both)",
          flush=True)


if __name__ == "__main__":
    main()
