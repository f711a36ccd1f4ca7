"""Reproduction checks: does a package reproduce its own test outputs."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["core_reproduction"]


def core_reproduction(path: Path, weights_format: str | None = None) -> dict:
    """bioimageio.core's ``test_model`` on the package at ``path`` (one weight format, or all).

    Returns ``{"status": "passed" | "failed", "errors": [...], "seconds": float}``.
    Callers make sure the package names no code they do not trust (:mod:`bioimgzoo.trust`).
    """
    from bioimageio.core import test_model

    t = time.perf_counter()
    try:
        summary = test_model(path, weight_format=weights_format)
    except Exception as e:  # core raises for some broken packages instead of reporting
        return {"status": "failed", "errors": [f"{type(e).__name__}: {e}"], "seconds": time.perf_counter() - t}
    errors = [f"{d.name}: {e.msg}".strip() for d in summary.details if d.status == "failed" for e in d.errors]
    return {"status": "passed" if summary.status == "passed" else "failed", "errors": errors[:10],
            "seconds": time.perf_counter() - t}
