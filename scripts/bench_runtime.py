#!/usr/bin/env python
"""Runtime benchmark: bioimgzoo vs bioimageio.core vs the bare engine, side by side in one run.

(a) many small images: N images of 64x64 through one loaded model (a small
    U-Net packaged here with torchscript + onnx weights):
      - bioimgzoo ``predict_many`` (batched)           vs
      - bioimageio.core ``predict_many``               (target: ours >= 50x)
      - a bare engine loop at batch size 1             (target: ours >= 0.85x)
(b) one 2048x2048 image through the zoo fixture unet2d-nuclei-broad (fixed
    512x512 input, halo 32: it must be tiled), onnx weights:
      - bioimgzoo tiled predict                        vs
      - a bare onnxruntime loop over the same tiles    (target: ours >= 0.95x)
      - bioimageio.core tiled predict (input_block_shape 512x512)
    each with its deviation from the whole-image torchscript prediction and
    its peak memory (each method runs in its own process; peak RSS above the
    process's RSS just before the run).

Ratios, not absolute times, are the result: the machines are noisy.
Usage: python scripts/bench_runtime.py [--n 200] [--n-core 20] [--skip-core]
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad"


# ----------------------------------------------------------------------------- helpers
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) on Linux
    except OSError:
        pass


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ------------------------------------------------------------------ (a) many small images
def make_small_unet_package(folder: Path) -> Path:
    import torch
    from bioimageio.spec.model import v0_5 as s

    from bioimgzoo import testing as T
    from bioimgzoo.train.nets import UNet2d

    torch.manual_seed(0)
    net = UNet2d(in_channels=1, out_channels=1, depth=2, base=8).eval()
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    zmuv = s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId("y"), s.AxisId("x")]))
    return T.write_package(
        folder, net,
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (16, 4), "x": (16, 4)}, test=x, processing=[zmuv])],
        outputs=[T.TensorDef("prob", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")},
                             processing=[s.SigmoidDescr()])])


def bench_small(n: int, n_core: int, skip_core: bool, repeat: int) -> dict:
    import onnxruntime as ort
    import torch

    import bioimgzoo

    tmp = Path(tempfile.mkdtemp(prefix="bench-small-"))
    rdf = make_small_unet_package(tmp)
    rng = np.random.default_rng(1)
    images = [rng.random((64, 64), dtype=np.float32) * 1000 for _ in range(n)]
    res: dict = {"n_images": n}
    for fmt in ("torchscript", "onnx"):
        model = bioimgzoo.load(rdf, weights=fmt)
        model.predict_many(images[:8])  # warm-up
        ours = _best_of(lambda: model.predict_many(images), repeat)
        ours_bs1 = _best_of(lambda: model.predict_many(images, batch_size=1), repeat)
        # the bare engine at batch size 1 on the same (pre-normalised) arrays: no pre/post at all
        normed = [((im - im.mean()) / (im.std() + 1e-6))[None, None].astype(np.float32) for im in images]
        if fmt == "torchscript":
            ts = torch.jit.load(str(rdf.parent / "weights.pt")).eval()

            def bare():
                with torch.inference_mode():
                    for a in normed:
                        ts(torch.from_numpy(a)).numpy()
        else:
            sess = ort.InferenceSession(str(rdf.parent / "weights.onnx"), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name

            def bare():
                for a in normed:
                    sess.run(None, {name: a})
        bare()
        t_bare = _best_of(bare, repeat)
        res[fmt] = {
            "ours_s": ours, "ours_batch1_s": ours_bs1, "bare_engine_batch1_s": t_bare,
            "ratio_vs_bare": t_bare / ours, "ratio_vs_bare_ours_batch1": t_bare / ours_bs1,
            "ms_per_image_ours": 1e3 * ours / n, "ms_per_image_bare": 1e3 * t_bare / n,
        }
    if not skip_core:
        from bioimageio.core import Tensor, predict_many
        from bioimageio.spec import load_model_description

        descr = load_model_description(rdf, perform_io_checks=False)
        core_inputs = [{"raw": Tensor(im[None, None], dims=("batch", "channel", "y", "x"))} for im in images[:n_core]]
        t = time.perf_counter()
        for _ in predict_many(model=descr, inputs=core_inputs):
            pass
        t_core = (time.perf_counter() - t) * n / n_core  # extrapolated to n images
        res["core_predict_many_s"] = t_core
        res["core_ms_per_image"] = 1e3 * t_core / n
        for fmt in ("torchscript", "onnx"):
            res[fmt]["ratio_vs_core"] = t_core / res[fmt]["ours_s"]
    return res


# -------------------------------------------------------------------- (b) 2048^2 tiled
def _big_image() -> np.ndarray:
    x = np.load(FIXTURE / "test_input.npy")[0, 0]
    return np.tile(x, (4, 4)).astype(np.float32)


def _whole_reference(big: np.ndarray) -> np.ndarray:
    import torch

    ts = torch.jit.load(str(FIXTURE / "weights.pt")).eval()
    norm = (big - big.mean()) / (big.std() + 1e-6)
    with torch.inference_mode():
        return torch.sigmoid(ts(torch.from_numpy(norm[None, None]))).numpy()[0, 0]


def child_tiled(method: str, repeat: int) -> dict:
    """Run one method in this (child) process; report time, output, peak memory."""
    big = _big_image()
    if method == "ours":
        import bioimgzoo

        model = bioimgzoo.load(FIXTURE, weights="onnx")
        model.predict(big[:512, :512])  # warm-up

        def run():
            return model.predict(big)[0]
    elif method == "bare":
        import onnxruntime as ort

        from bioimgzoo.runtime.plan import plan_tiles

        sess = ort.InferenceSession(str(FIXTURE / "weights.onnx"), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        tiles = plan_tiles({"y": 2048, "x": 2048}, {"y": 512, "x": 512}, halo={"y": 32, "x": 32},
                           align={"y": 64, "x": 64})

        def run():
            norm = ((big - big.mean()) / (big.std() + 1e-6)).astype(np.float32)
            out = np.empty_like(norm)
            for t in tiles:
                wy, wx = t.windows["y"], t.windows["x"]
                o = sess.run(None, {name: norm[None, None, wy.start:wy.stop, wx.start:wx.stop]})[0][0, 0]
                out[wy.inner_start:wy.inner_stop, wx.inner_start:wx.inner_stop] = o[
                    wy.inner_start - wy.start:wy.inner_stop - wy.start, wx.inner_start - wx.start:wx.inner_stop - wx.start]
            return 1 / (1 + np.exp(-out))
        sess.run(None, {name: np.zeros((1, 1, 512, 512), np.float32)})
    elif method == "core":
        from bioimageio.core import Tensor, create_prediction_pipeline, predict
        from bioimageio.spec import load_model_description

        descr = load_model_description(FIXTURE / "rdf.yaml", perform_io_checks=False)
        pp = create_prediction_pipeline(descr, weight_format="onnx")

        def run():
            s = predict(model=pp, inputs={"raw": Tensor(big[None, None], dims=("batch", "channel", "y", "x"))},
                        input_block_shape={"raw": {"y": 512, "x": 512}})
            return s.members["probability"].data.values[0, 0]
    else:
        raise SystemExit(f"unknown method {method}")
    times = []
    peak = 0
    out = None
    for _ in range(repeat):
        base = _rss_kib("VmRSS")
        _reset_peak()
        t = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t)
        peak = max(peak, _rss_kib("VmHWM") - base)
        del out
    out = run()
    ref_path = os.environ["BENCH_REF"]
    ref = np.load(ref_path)
    diff = np.abs(np.asarray(out, np.float32) - ref)
    return {"s": min(times), "peak_extra_mib": peak / 1024, "max_abs_dev": float(diff.max()),
            "mean_abs_dev": float(diff.mean())}


def bench_tiled(skip_core: bool, repeat: int) -> dict:
    big = _big_image()
    ref = _whole_reference(big)
    ref_path = Path(tempfile.mkdtemp(prefix="bench-ref-")) / "ref.npy"
    np.save(ref_path, ref)
    res: dict = {"image_mib": big.nbytes / 2**20}
    methods = ["ours", "bare"] + ([] if skip_core else ["core"])
    for method in methods:
        env = dict(os.environ, BENCH_REF=str(ref_path))
        proc = subprocess.run([sys.executable, __file__, "--child", method, "--repeat", str(repeat)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            res[method] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
            continue
        res[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "s" in res.get("bare", {}) and "s" in res.get("ours", {}):
        res["ratio_vs_bare"] = res["bare"]["s"] / res["ours"]["s"]
    if "s" in res.get("core", {}) and "s" in res.get("ours", {}):
        res["ratio_vs_core"] = res["core"]["s"] / res["ours"]["s"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-core", type=int, default=20, help="images run through core (its time is extrapolated)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-core", action="store_true")
    ap.add_argument("--only", choices=["small", "tiled"], default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_tiled(args.child, args.repeat)))
        return
    import logging

    logging.disable(logging.WARNING)
    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, cpus={os.cpu_count()}")
    if args.only in (None, "small"):
        r = bench_small(args.n, args.n_core, args.skip_core, args.repeat)
        print(f"\n(a) {r['n_images']} images of 64x64, small U-Net (depth 2, base 8)")
        if "core_predict_many_s" in r:
            print(f"    bioimageio.core predict_many: {r['core_ms_per_image']:.1f} ms/image (from {args.n_core} images)")
        for fmt in ("torchscript", "onnx"):
            f = r[fmt]
            line = (f"    {fmt:12s} ours {f['ms_per_image_ours']:.2f} ms/image, bare engine bs=1 "
                    f"{f['ms_per_image_bare']:.2f} ms/image -> ours/bare throughput {f['ratio_vs_bare']:.2f}x "
                    f"(ours at bs=1: {f['ratio_vs_bare_ours_batch1']:.2f}x)")
            if "ratio_vs_core" in f:
                line += f", vs core {f['ratio_vs_core']:.0f}x"
            print(line)
    if args.only in (None, "tiled"):
        if not (FIXTURE / "rdf.yaml").is_file():
            print(f"\n(b) skipped: fixture not found at {FIXTURE}")
            return
        r = bench_tiled(args.skip_core, args.repeat)
        print(f"\n(b) 2048x2048 through unet2d-nuclei-broad (onnx, 512 tiles, halo 32); image {r['image_mib']:.0f} MiB")
        for m in ("ours", "bare", "core"):
            if m in r:
                v = r[m]
                if "error" in v:
                    print(f"    {m:5s} failed: {v['error']}")
                    continue
                print(f"    {m:5s} {v['s']:.2f} s, peak +{v['peak_extra_mib']:.0f} MiB, deviation from whole-image "
                      f"torchscript: max {v['max_abs_dev']:.2e}, mean {v['mean_abs_dev']:.2e}")
        if "ratio_vs_bare" in r:
            print(f"    throughput ours/bare onnxruntime loop: {r['ratio_vs_bare']:.3f}x (target >= 0.95x)")
        if "ratio_vs_core" in r:
            print(f"    throughput ours/bioimageio.core: {r['ratio_vs_core']:.2f}x")


if __name__ == "__main__":
    main()
