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
