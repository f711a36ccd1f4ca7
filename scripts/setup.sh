#!/usr/bin/env bash
# Install bioimgzoo and its test tools into the current Python.
# torch is pinned to 2.13.0 only when missing: an unpinned `torch` would pull GBs of CUDA
# packages, and a torch that is already there is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test]"
# The optional decoders of stardist_postprocessing and cellpose_flow_dynamics, so their tests run
# (they skip without them). A failure here (no registry) only skips those tests.
# stardist needs no tensorflow for its decoders. cellpose is installed without its dependencies:
# they include torchvision, whose PyPI build fails to load beside the CPU torch used here, and
# 4.1.1 is the newest cellpose whose decoders (dynamics, utils) never import torchvision.
"$PY" -m pip install -q "stardist>=0.9" \
  || echo "setup.sh: stardist did not install; the stardist_postprocessing tests will skip" >&2
"$PY" -m pip install -q fastremap fill-voids natsort opencv-python-headless roifile imagecodecs tifffile tqdm \
  && "$PY" -m pip install -q --no-deps "cellpose==4.1.1" \
  || echo "setup.sh: cellpose did not install; the cellpose_flow_dynamics tests will skip" >&2
# Headless Chromium for the HTML-report test (tests/validation/test_reports.py; skipped without it):
# only where apt-get exists and we are root, and never a reason for setup to fail
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "setup: chromium not installed (the HTML report test will be skipped)" >&2
fi
# The tensorflow extra (tensorflow-cpu, tf2onnx, tf-keras: TensorFlow weights converted to ONNX), so the
# TensorFlow tests run; ~300 MB of wheels, so optional and never a reason for setup to fail (they skip without it).
# The producers' own environments (StarDist's export with bioimageio.core 0.5, ...) are built by the tests
# themselves, once, under ~/.cache/bioimgzoo-tests (tests/producers/_build.py).
"$PY" -m pip install -q -e ".[tensorflow]" \
  || echo "setup.sh: the tensorflow extra did not install; the TensorFlow weights tests will skip" >&2
