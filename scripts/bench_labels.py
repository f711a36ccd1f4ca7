"""Benchmark: peak memory and time of ``bioimgzoo predict --labels`` on a large image.

Each measurement is one ``bioimgzoo predict`` in a fresh process (peak RSS from
``getrusage``), on a float32 TIFF of round, partly touching "nuclei"
probabilities (default 6000 x 6000), through a package whose network is the
identity (a 1x1 convolution of weight 1), so the run's memory is the image,
the model output and what ``--labels`` adds:

1. ``predict`` alone (the baseline of the process);
2. ``predict --labels``;
3. with ``--baseline TREE``: the same two with the ``bioimgzoo`` of another
   source tree first on ``PYTHONPATH`` (e.g. ``git archive <commit> | tar -x
   -C TREE``), side by side in the same run.

Usage: ``python scripts/bench_labels.py [--size 6000] [--baseline TREE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, resource, sys, time
t = time.perf_counter()
from bioimgzoo.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t}))
"""


def _package(folder: Path) -> Path:
    import numpy as np

    from bioimgzoo import testing as T

    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    return T.write_package(folder, T.Identity(),
                           inputs=[T.TensorDef("raw", "bcyx", sizes={"y": (64, 16), "x": (64, 16)}, test=x)],
                           outputs=[T.TensorDef("probability", "bcyx",
                                                refs={"y": ("raw", "y"), "x": ("raw", "x")})],
                           formats=("onnx",), name="identity for bench_labels")


def _image(path: Path, size: int) -> int:
    """Disks of radius 6-12 px, about a third of them touching a neighbour; returns their number."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    prob = np.zeros((size, size), np.float32)
    n = 0
    step = 30
    for cy in range(step // 2, size - step // 2, step):
        for cx in range(step // 2, size - step // 2, step):
            r = int(rng.integers(6, 13))
            dy, dx = rng.integers(-3, 4, 2)
            y0, x0 = cy + dy, cx + dx
            yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
            disk = (yy ** 2 + xx ** 2) <= r * r
            sl = (slice(y0 - r, y0 + r + 1), slice(x0 - r, x0 + r + 1))
            prob[sl] = np.maximum(prob[sl], disk * 0.95)
            n += 1
    tifffile.imwrite(path, prob)
    return n


def _measure(pythonpath: str | None, args: list[str]) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    # run outside the source tree: `python -c` puts the working folder first on sys.path
    res = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir())
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"benchmark step failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=6000)
    ap.add_argument("--baseline", default=None, help="another source tree to measure side by side")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        tmp = Path(tmp)
        pkg = _package(tmp / "pkg")
        image = tmp / "nuclei.tif"
        n = _image(image, args.size)
        here = str(Path(__file__).resolve().parents[1])
        trees = [("this tree", here)] + ([("baseline", str(Path(args.baseline).resolve()))] if args.baseline else [])
        rows = []
        for name, path in trees:
            plain = _measure(path, ["predict", str(pkg), str(image), "-o", str(tmp / f"o-{name}-plain")])
            labels = _measure(path, ["predict", str(pkg), str(image), "-o", str(tmp / f"o-{name}-labels"),
                                     "--labels"])
            import tifffile

            lab = tifffile.imread(tmp / f"o-{name}-labels" / "nuclei_labels.tif")
            import numpy as np

            rows.append((name, plain, labels, int(np.unique(lab).size - 1)))
    print(f"image {args.size} x {args.size} float32, {n} disks; peak RSS of one `bioimgzoo predict` process")
    print(f"{'':12}{'predict MB':>12}{'--labels MB':>13}{'added MB':>10}{'predict s':>11}{'--labels s':>12}"
          f"{'objects':>9}")
    for name, plain, labels, objects in rows:
        print(f"{name:12}{plain['peak_mb']:12.0f}{labels['peak_mb']:13.0f}{labels['peak_mb'] - plain['peak_mb']:10.0f}"
              f"{plain['seconds']:11.1f}{labels['seconds']:12.1f}{objects:9d}")


if __name__ == "__main__":
    main()
