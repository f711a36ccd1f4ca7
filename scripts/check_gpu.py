#!/usr/bin/env python
"""GPU check: every engine on CUDA against the same engine on CPU, in one run.

For each engine -- onnxruntime's CUDA provider and torchscript (the zoo
fixture unet2d-nuclei-broad: fixed 512x512 windows, halo 32) and
``pytorch_state_dict`` (a small U-Net packaged here) -- it

* predicts the package's test input on ``cpu`` and on ``cuda`` and compares
  the two within the zoo's tolerance (rtol = atol = 1e-3, at most 100
  mismatches per million);
* times a tiled prediction of one large image (2048x2048 by default) on
  both devices and reports the throughput ratio;
* reports the device memory it took: torch's peak allocation, and the
  device-wide memory in use (``torch.cuda.mem_get_info``), which also
  counts onnxruntime's own arena.

Where CUDA is absent (a CPU build of torch, no GPU, onnxruntime without
its CUDA provider) it says so and what to install, runs what it can, and
exits with status 2 when no engine could use CUDA at all.  ``--json FILE``
writes the figures.

Usage: python scripts/check_gpu.py [--size 2048] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad"


def cuda_problems() -> dict[str, str | None]:
    """Per engine family, why it cannot use CUDA here (None: it can)."""
    problems: dict[str, str | None] = {}
    try:
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device visible"
            problems["torch"] = (f"torch {torch.__version__} sees no CUDA device ({build}); install a CUDA build "
                                 "(pip install torch --index-url https://download.pytorch.org/whl/cu126) on a "
                                 "machine with an NVIDIA GPU and driver")
        else:
            problems["torch"] = None
    except ImportError:
        problems["torch"] = "torch is not installed"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            problems["onnx"] = (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu instead "
                                "of onnxruntime")
        elif problems.get("torch") is not None and "no CUDA device" in str(problems["torch"]):
            problems["onnx"] = "no CUDA device visible"
        else:
            problems["onnx"] = None
    except ImportError:
        problems["onnx"] = "onnxruntime is not installed"
    return problems


def zoo_close(actual: np.ndarray, expected: np.ndarray) -> tuple[bool, int, float]:
    """The zoo's reproduction tolerance; (passes, mismatches, max abs difference)."""
    if actual.shape != expected.shape:
        return False, -1, float("inf")
    bad = ~np.isclose(actual, expected, rtol=1e-3, atol=1e-3)
    return bool(bad.sum() <= 100e-6 * expected.size), int(bad.sum()), float(np.abs(actual - expected).max())


def state_dict_package(folder: Path) -> Path:
    """A small U-Net with ``pytorch_state_dict`` weights (architecture from bioimgzoo's own nets file)."""
    import torch
    from bioimageio.spec.model import v0_5 as s

    from bioimgzoo import testing as T
    from bioimgzoo.testing import nets

    torch.manual_seed(0)
    net = nets.UNet2d(in_channels=1, out_channels=1, depth=2, base=8).eval()
    x = np.random.default_rng(0).random((1, 1, 256, 256), dtype=np.float32)
    zmuv = s.ZeroMeanUnitVarianceDescr(kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId("y"), s.AxisId("x")]))
    return T.write_package(
        folder, net, formats=(),
        inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (64, 16), "x": (64, 16)}, test=x, processing=[zmuv])],
        outputs=[T.TensorDef("prob", "bcyx", refs={"y": ("raw", "y"), "x": ("raw", "x")}, halo={"y": 16, "x": 16},
                             processing=[s.SigmoidDescr()])],
        state_dict_architecture=(nets.__file__, "UNet2d", {"in_channels": 1, "out_channels": 1, "depth": 2,
                                                           "base": 8}))


def _test_arrays(rdf: Path) -> tuple[np.ndarray, str]:
    import bioimgzoo

    pkg = bioimgzoo.open_package(rdf)
    t = pkg.descr.inputs[0]
    x = np.load(pkg.file(t.test_tensor))
    return x, "".join({"batch": "b", "channel": "c"}.get(str(a.id), str(a.id)) for a in t.axes)


def _memory() -> dict | None:
    """Device memory in use (all processes' allocations, onnxruntime's too) and torch's peak; None unknown."""
    import torch

    if not torch.cuda.is_available():  # onnxruntime-gpu beside a CPU build of torch
        return None
    free, total = torch.cuda.mem_get_info()
    return {"device_used_mib": (total - free) / 2**20, "torch_peak_mib": torch.cuda.max_memory_allocated() / 2**20}


def check_engine(rdf: Path, fmt: str, *, size: int, repeat: int, trust_code: bool, device: str = "cuda") -> dict:
    import bioimgzoo

    x, axes = _test_arrays(rdf)
    big = np.random.default_rng(1).random((size, size), dtype=np.float32) * 255
    res: dict = {"package": rdf.parent.name, "weights": fmt, "image": f"{size}x{size}"}
    outs, times = {}, {}
    gpu = device
    for device in ("cpu", gpu):
        on_gpu = device.startswith("cuda")
        if on_gpu:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            before = _memory()
        model = bioimgzoo.load(rdf, weights=fmt, device=device, trust_code=trust_code)
        out = model.predict(x, axes=axes)
        outs[device if not on_gpu else "gpu"] = np.asarray(out if not isinstance(out, dict) else next(iter(out.values())))
        model.predict(big)  # warm-up (CUDA kernels, cudnn autotuning, arenas)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            model.predict(big)
            best = min(best, time.perf_counter() - t)
        times[device if not on_gpu else "gpu"] = best
        if on_gpu:
            after = _memory()
            res["device_memory_mib"] = None if after is None or before is None else {
                "in_use_before": round(before["device_used_mib"]), "in_use_after": round(after["device_used_mib"]),
                "torch_peak_allocated": round(after["torch_peak_mib"])}
        del model
    if "gpu" not in outs:  # --device cpu (a dry run of the check itself): the second run is the CPU again
        outs["gpu"], times["gpu"] = outs["cpu"], times["cpu"]
    ok, mismatches, max_diff = zoo_close(outs["gpu"], outs["cpu"])
    res.update({"device": gpu, "cuda_matches_cpu": ok, "mismatches": mismatches, "max_abs_diff": max_diff,
                "cpu_tiled_s": times["cpu"], "cuda_tiled_s": times["gpu"],
                "cuda_speedup": times["cpu"] / times["gpu"],
                "cuda_megapixels_per_s": size * size / times["gpu"] / 1e6})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="edge of the large tiled image (default 2048)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per device, best kept (default 3)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ap.add_argument("--device", default="cuda", help="the GPU to check: cuda or cuda:N (cpu: a dry run of this "
                                                      "script against itself, for machines without one)")
    args = ap.parse_args(argv)
    if args.size < 64 or args.repeat < 1:
        ap.error("--size must be at least 64 and --repeat at least 1")

    if args.device == "cpu":
        problems = {"torch": None, "onnx": None}
    else:
        problems = cuda_problems()
    for family, why in problems.items():
        if why:
            print(f"CUDA unavailable for {family}: {why}", file=sys.stderr)
    if all(problems.values()):
        print("CUDA is absent on this machine: no engine can run on a GPU, nothing to check. Run this script on a "
              "machine with an NVIDIA GPU, its driver, a CUDA build of torch and onnxruntime-gpu.", file=sys.stderr)
        return 2

    jobs = []
    if FIXTURE.is_dir():
        if problems["onnx"] is None:
            jobs.append((FIXTURE / "rdf.yaml", "onnx", False))
        if problems["torch"] is None:
            jobs.append((FIXTURE / "rdf.yaml", "torchscript", False))
    else:
        print(f"zoo fixture not found at {FIXTURE}: onnx and torchscript are not checked", file=sys.stderr)
    if problems["torch"] is None:
        tmp = Path(tempfile.mkdtemp(prefix="check-gpu-"))
        jobs.append((state_dict_package(tmp / "sd"), "pytorch_state_dict", True))
    results, failed = [], False
    for rdf, fmt, trust in jobs:
        try:
            r = check_engine(rdf, fmt, size=args.size, repeat=args.repeat, trust_code=trust, device=args.device)
        except Exception as e:  # one engine's failure is a finding, not the end of the check
            r = {"package": rdf.parent.name, "weights": fmt, "error": f"{type(e).__name__}: {e}"}
        results.append(r)
        failed |= "error" in r or not r.get("cuda_matches_cpu", False)
        print(json.dumps(r, indent=1))
    summary = {"cuda_problems": problems, "results": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print("\n" + " | ".join(f"{r['weights']}: " + (f"ERROR {r['error']}" if "error" in r else
                                                   f"{'ok' if r['cuda_matches_cpu'] else 'MISMATCH'} "
                                                   f"x{r['cuda_speedup']:.1f} vs cpu")
                             for r in results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
