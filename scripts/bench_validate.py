"""Benchmark: ``bioimgzoo validate`` against bioimageio.core's ``test_description``, side by side, in one run.

Each measurement runs in a fresh Python process (imports included, nothing
cached between them), on the shared zoo fixture (onnx + torchscript weights):

1. ``core``: ``bioimageio.core.test_description(fixture)``: spec validation with
   file hashing, then the test input through every weight format;
2. ``bioimgzoo (same checks)``: ``check_package`` with the families that do the
   same work (format: spec validation with hashing; files: presence and sha256;
   reproduction through bioimgzoo's runtime, every weight format);
3. ``bioimgzoo validate (everything)``: all families (plus safety, agreement:
   formats, sizes, determinism, tiling) and the six consumer tools.

Usage: ``python scripts/bench_validate.py [PACKAGE] [--repeat N]`` (best of N, default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "zoo" / "unet2d-nuclei-broad"

CORE = """
import time, json, sys
t = time.perf_counter()
from bioimageio.core import test_description
s = test_description(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t, "status": s.status,
                  "checks": len(s.details)}))
"""

OURS = """
import time, json, sys
t = time.perf_counter()
from bioimgzoo.validation import check_package
families = None if sys.argv[2] == "all" else sys.argv[2].split(",")
r = check_package(sys.argv[1], families=families, keep_artifacts=False)
repro = sum(f.details.get("seconds", 0) for f in r.findings if f.check == "reproduction.runtime")
print(json.dumps({"seconds": time.perf_counter() - t, "status": r.status, "checks": len(r.findings),
                  "reproduction_seconds": repro,
                  "consumers": {k: v["status"] for k, v in r.consumers.items()}}))
"""


def _run(code: str, *args: str) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default=str(FIXTURE))
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not Path(args.package).exists():
        raise SystemExit(f"{args.package} not found: pass a package folder")

    def best(code: str, *a: str) -> dict:
        return min((_run(code, *a) for _ in range(args.repeat)), key=lambda r: r["wall"])

    core = best(CORE, args.package)
    same = best(OURS, args.package, "format,files,reproduction")
    full = best(OURS, args.package, "all")
    print(f"package: {args.package}  (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, best of "
          f"{args.repeat}, each in a fresh process)")
    print(f"{'':38}{'wall s':>9}{'in-process s':>14}  status")
    print(f"{'bioimageio.core test_description':38}{core['wall']:9.2f}{core['seconds']:14.2f}  {core['status']} "
          f"({core['checks']} checks)")
    print(f"{'bioimgzoo, same checks':38}{same['wall']:9.2f}{same['seconds']:14.2f}  {same['status']} "
          f"({same['checks']} checks; reproduction {same['reproduction_seconds']:.2f} s)")
    print(f"{'bioimgzoo validate, everything':38}{full['wall']:9.2f}{full['seconds']:14.2f}  {full['status']} "
          f"({full['checks']} checks, tools: {full['consumers']})")
    print(f"speed-up for the same checks: {core['wall'] / same['wall']:.2f}x wall, "
          f"{core['seconds'] / same['seconds']:.2f}x in-process (target >= 3x)")
    print(f"everything vs core's test: {core['wall'] / full['wall']:.2f}x wall")


if __name__ == "__main__":
    main()
