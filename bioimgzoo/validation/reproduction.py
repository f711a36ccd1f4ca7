"""Reproduction checks: does a package reproduce its own test outputs, per weight format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from ._registry import FAILED, PASSED, SKIPPED, STAGE_RUN, Finding, register_family

__all__ = ["core_reproduction", "TESTABLE_FORMATS"]

#: weight formats bioimageio.core can run here
TESTABLE_FORMATS = ("pytorch_state_dict", "torchscript", "onnx", "tensorflow_saved_model_bundle", "keras_hdf5",
                    "keras_v3")


def _markdown(findings: Sequence[Finding]) -> list[str]:
    from .._text import markdown_safe

    lines = ["| weights | status | seconds | detail |", "|---|---|---|---|"]
    for f in findings:
        d = f.details
        if "weights_format" not in d:  # the check did not run at all: say why, outside the table
            return [markdown_safe(f.message)]
        detail = markdown_safe("; ".join(d.get("errors") or [])[:300], table_cell=True)
        lines.append(f"| {d['weights_format']} | {f.status} | {d.get('seconds', 0):.1f} | {detail} |")
    return lines


FAMILY = register_family("reproduction", "Reproduction (bioimageio.core test_model)", order=30,
                         render_markdown=_markdown)


def core_reproduction(path: Path, weights_format: str | None = None) -> dict:
    """bioimageio.core's ``test_model`` on the package at ``path`` (one weight format, or all).

    Parameters
    ----------
    path : Path
        The package's rdf.yaml, folder or zip.
    weights_format : str, optional
        Test only these weights (default: all).

    Returns
    -------
    dict
        ``{"status": "passed" | "failed", "errors": [...], "seconds": float}``.
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


def _verdict(status: str, wf: str, errors: list[str], seconds: float = 0.0) -> tuple:
    message = "; ".join(errors) if errors else f"{wf} reproduces the test outputs"
    return status, message, {"weights_format": wf, "errors": list(errors), "seconds": round(seconds, 3)}


@FAMILY.check("core", title="test outputs reproduced by bioimageio.core", stage=STAGE_RUN,
              requires=("package", "files", "valid"),
              fix="Regenerate the test outputs with these weights (or fix the weights / processing), and declare "
                  "a tolerance in config.bioimageio.reproducibility_tolerance if outputs differ by rounding only.")
def _core(ctx: Any) -> Iterator[tuple]:
    """One verdict per weights format asked for (default: each the package has)."""
    from .. import trust

    available = [wf for wf, w in ctx.pkg.descr.weights if w is not None]
    if not available and not ctx.weights:
        yield FAILED, "the package has no weights to test"  # nothing reproduced is not a pass
        return
    for wf in ctx.weights or available:
        if wf not in available:
            yield _verdict(FAILED, wf, [f"the package has no {wf} weights"])
            continue
        # bioimageio.core imports and calls whatever the description names: it gets only
        # descriptions whose code our one trust policy lets run
        refused = trust.untrusted_code(ctx.pkg.descr, trust_code=ctx.trust_code, weights_format=wf)
        if refused:
            yield _verdict(SKIPPED, wf, [trust.refusal_message(r, what="testing these weights") for r in refused])
            continue
        if wf not in TESTABLE_FORMATS:
            yield _verdict(SKIPPED, wf, ["not testable here"])
            continue
        r = core_reproduction(ctx.local, wf)
        yield _verdict(PASSED if r["status"] == "passed" else FAILED, wf, r.get("errors") or [], r["seconds"])
