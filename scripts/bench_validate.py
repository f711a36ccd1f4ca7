"""Benchmark: ``bioimgzoo validate`` against bioimageio.core's ``test_description``, side by side, in one run.

Each measurement runs in a fresh Python process (imports included, nothing
cached between them), on the shared zoo fixture (onnx + torchscript weights):

1. ``core``: ``bioimageio.core.test_description(fixture)``: spec validation with
   file hashing, then the test input through every weight format;
2. ``bioimgzoo (same checks)``: ``check_package`` with the families that do the
   same work (format: spec validation with hashing; files: presence and sha256;
   reproduction through bioimgzoo's runtime, every weight format);
3. ``bioimgzoo validate (everything)``: all families (plus safety, agreement:
   formats, sizes, determinism, tiling) and the six consumer tools;
4. ten packages (hard-linked copies of PACKAGE in a temporary folder):
   ``test_description`` called ten times in one process, against
   ``bioimgzoo validate --jobs 2`` on the ten (every family and tool), and
   against the same checks as (2) in two worker processes (what ``--jobs 2``
   does).

Targets: (2) >= 3x core, (3) >= 1.5x core, (4) >= 2x core.  Wall time is the
figure; the CPU seconds (user + system of the process and its children) are
printed beside it, and the load average before and after, because a shared
machine's other work lengthens wall times (not CPU times).

Usage: ``python scripts/bench_validate.py [PACKAGE] [--repeat N] [--no-ten]`` (best of N, default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
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


CORE_MANY = """
import time, json, sys
t = time.perf_counter()
from bioimageio.core import test_description
statuses = [test_description(p).status for p in sys.argv[1:]]
print(json.dumps({"seconds": time.perf_counter() - t, "status": ",".join(sorted(set(statuses))),
                  "checks": len(statuses)}))
"""


OURS_MANY = """
import time, json, sys
from concurrent.futures import ProcessPoolExecutor
t = time.perf_counter()
from bioimgzoo.validation import check_package

def one(p):
    return check_package(p, families=sys.argv[1].split(","), keep_artifacts=False).status

if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(one, sys.argv[2:]))
    print(json.dumps({"seconds": time.perf_counter() - t, "status": ",".join(sorted(set(statuses))),
                      "checks": len(statuses)}))
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(code: str | None, *args: str, ok_codes: tuple[int, ...] = (0,)) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-c", code, *args] if code is not None else [sys.executable, *args]
    cpu, t = _children_cpu(), time.perf_counter()
    # outside the source tree (`python -c` puts the working folder first on sys.path)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t
    if res.returncode not in ok_codes:
        raise SystemExit(f"benchmark step failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"seconds": wall, "status": f"exit {res.returncode}", "checks": 0}
    out["wall"] = wall
    out["cpu"] = _children_cpu() - cpu
    return out


def _ten_copies(package: Path, folder: Path) -> list[str]:
    """Ten packages: hard links of PACKAGE's files (the same bytes, ten packages to validate)."""
    out = []
    for i in range(10):
        dest = folder / f"pkg{i}"
        shutil.copytree(package, dest, copy_function=os.link)
        out.append(str(dest))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default=str(FIXTURE))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-ten", action="store_true", help="leave out the ten-package comparison")
    args = ap.parse_args()
    if not Path(args.package).exists():
        raise SystemExit(f"{args.package} not found: pass a package folder")

    def best(code: str, *a: str) -> dict:
        return min((_run(code, *a) for _ in range(args.repeat)), key=lambda r: r["wall"])

    load0 = os.getloadavg()
    core = best(CORE, args.package)
    same = best(OURS, args.package, "format,files,reproduction")
    full = best(OURS, args.package, "all")
    ten = {}
    if not args.no_ten:
        with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
            pkgs = _ten_copies(Path(args.package), Path(tmp))
            ten["core"] = best(CORE_MANY, *pkgs)
            ten["ours"] = min((_run(None, "-m", "bioimgzoo.cli", "validate", "--jobs", "2", *pkgs, ok_codes=(0, 1))
                               for _ in range(args.repeat)), key=lambda r: r["wall"])
            ten["same"] = best(OURS_MANY, "format,files,reproduction", *pkgs)
    load1 = os.getloadavg()
    print(f"package: {args.package}  (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, best of "
          f"{args.repeat}, each in a fresh process; {os.cpu_count()} CPUs, load average {load0[0]:.1f} before, "
          f"{load1[0]:.1f} after)")
    print(f"{'':44}{'wall s':>9}{'in-process s':>14}{'CPU s':>8}  status")

    def row(label: str, r: dict, note: str) -> None:
        print(f"{label:44}{r['wall']:9.2f}{r['seconds']:14.2f}{r['cpu']:8.2f}  {r['status']} {note}")

    row("bioimageio.core test_description", core, f"({core['checks']} checks)")
    row("bioimgzoo, same checks", same, f"({same['checks']} checks; reproduction {same['reproduction_seconds']:.2f} s)")
    row("bioimgzoo validate, everything", full, f"({full['checks']} checks, tools: {full['consumers']})")
    if ten:
        row("ten packages: core test_description x10", ten["core"], "")
        row("ten packages: bioimgzoo validate --jobs 2", ten["ours"], "(every family and tool)")
        row("ten packages: bioimgzoo same checks, 2 jobs", ten["same"], "")
    print(f"same checks:      {core['wall'] / same['wall']:.2f}x wall, {core['cpu'] / same['cpu']:.2f}x CPU "
          "(target >= 3x)")
    print(f"everything:       {core['wall'] / full['wall']:.2f}x wall, {core['cpu'] / full['cpu']:.2f}x CPU "
          "(target >= 1.5x)")
    if ten:
        print(f"ten, --jobs 2:    {ten['core']['wall'] / ten['ours']['wall']:.2f}x wall, "
              f"{ten['core']['cpu'] / ten['ours']['cpu']:.2f}x CPU, every family (target >= 2x); same checks: "
              f"{ten['core']['wall'] / ten['same']['wall']:.2f}x wall, {ten['core']['cpu'] / ten['same']['cpu']:.2f}x CPU")


if __name__ == "__main__":
    main()
