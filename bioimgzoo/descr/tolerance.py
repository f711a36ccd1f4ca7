"""The zoo's reproducibility tolerance, and the comparison of an output with the values it should have.

Pure functions over a (package's) description and numpy arrays, shared by
validation (:mod:`bioimgzoo.validation.reproduction`), the check of converted
weights (:mod:`bioimgzoo.runtime.tensorflow`) and ``bioimgzoo convert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ZOO_RTOL", "ZOO_ATOL", "ZOO_MISMATCHED_PER_MILLION", "Tolerance", "tolerance_for", "compare_outputs"]

#: the zoo's default tolerance (bioimageio.spec's ReproducibilityTolerance defaults)
ZOO_RTOL, ZOO_ATOL, ZOO_MISMATCHED_PER_MILLION = 1e-3, 1e-3, 100.0


@dataclass(frozen=True)
class Tolerance:
    """An element mismatches when ``|a - b| > atol + rtol * |b|``; a tensor fails above ``mismatched`` per million."""

    rtol: float = ZOO_RTOL
    atol: float = ZOO_ATOL
    mismatched_per_million: float = ZOO_MISMATCHED_PER_MILLION
    source: str = "the zoo's default"


def tolerance_for(pkg: Any, weights_format: str, output_id: str) -> Tolerance:
    """The tolerance the package declares for one output of one weight format, else the zoo's default.

    Read as bioimageio.core reads it: the first matching entry of
    ``config.bioimageio.reproducibility_tolerance``, else the weight format's legacy
    ``config.bioimageio.test_kwargs`` (``relative_tolerance``, ``absolute_tolerance``,
    ``decimal``), else the default.
    """
    cfg = getattr(getattr(pkg.descr, "config", None), "bioimageio", None)
    for a in getattr(cfg, "reproducibility_tolerance", None) or []:
        if (not a.weights_formats or weights_format in a.weights_formats) and \
                (not a.output_ids or output_id in [str(o) for o in a.output_ids]):
            return Tolerance(float(a.relative_tolerance), float(a.absolute_tolerance),
                             float(a.mismatched_elements_per_million), "config.bioimageio.reproducibility_tolerance")
    raw_config = pkg.raw.get("config") if isinstance(pkg.raw.get("config"), dict) else {}
    raw_bioimageio = raw_config.get("bioimageio") if isinstance(raw_config.get("bioimageio"), dict) else {}
    extra = dict(getattr(cfg, "model_extra", None) or {})
    test_kwargs = extra.get("test_kwargs") or raw_bioimageio.get("test_kwargs") or {}
    kwargs = test_kwargs.get(weights_format) if isinstance(test_kwargs, dict) else None
    if isinstance(kwargs, dict):
        where = f"config.bioimageio.test_kwargs.{weights_format}"
        if kwargs.get("decimal") is not None:
            return Tolerance(0.0, 1.5 * 10 ** (-float(kwargs["decimal"])), 0.0, where + ".decimal")
        return Tolerance(float(kwargs.get("relative_tolerance", ZOO_RTOL)),
                         float(kwargs.get("absolute_tolerance", ZOO_ATOL)), ZOO_MISMATCHED_PER_MILLION, where)
    return Tolerance()


def _is_integer(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_


def compare_outputs(produced: np.ndarray, expected: np.ndarray, tol: Tolerance, *, labels: bool = False) -> dict:
    """Compare one output with the values it should have.

    Parameters
    ----------
    produced, expected : ndarray
    tol : Tolerance
    labels : bool
        Integer label maps: equal up to a relabelling (each produced label maps to one
        expected label and back); an element mismatches where that mapping fails.

    Returns
    -------
    dict
        ``passed``, ``mismatched`` (elements), ``mismatched_per_million``, ``max_abs``,
        ``max_rel``, ``shape`` / ``expected_shape``, ``compared_as`` (``"values"``,
        ``"labels"`` or ``"shape"``), ``tolerance``; and ``difference``: the per-element
        difference (an array, not JSON: the reports turn it into an image; None when the
        shapes differ).
    """
    out: dict[str, Any] = {"shape": list(produced.shape), "expected_shape": list(expected.shape),
                           "tolerance": {"rtol": tol.rtol, "atol": tol.atol,
                                         "mismatched_per_million": tol.mismatched_per_million,
                                         "source": tol.source}}
    if produced.shape != expected.shape:
        if produced.size != expected.size or produced.squeeze().shape != expected.squeeze().shape:
            out.update(passed=False, mismatched=int(expected.size), mismatched_per_million=1e6,
                       max_abs=float("inf"), max_rel=float("inf"), compared_as="shape", difference=None)
            return out
        produced = produced.reshape(expected.shape)  # a dropped or added singleton axis only
    n = max(expected.size, 1)
    if labels:
        bad = _relabel_mismatch(produced, expected)
        diff = bad.astype(np.float32)
        out["compared_as"] = "labels"
        out["max_abs"] = float(np.abs(produced.astype(np.float64) - expected.astype(np.float64)).max()) \
            if expected.size else 0.0
        out["max_rel"] = 0.0
    else:
        p, e = produced.astype(np.float64), expected.astype(np.float64)
        diff64 = p - e
        adiff = np.abs(diff64)
        with np.errstate(invalid="ignore", divide="ignore"):
            bad = (adiff > tol.atol + tol.rtol * np.abs(e)) | (np.isnan(p) != np.isnan(e))
            rel = np.where(np.abs(e) > 0, adiff / np.abs(e), np.where(adiff > 0, np.inf, 0.0))
        finite = np.isfinite(adiff)
        out["compared_as"] = "values"
        out["max_abs"] = float(adiff[finite].max()) if finite.any() else 0.0
        rel_finite = rel[np.isfinite(rel)]
        out["max_rel"] = float(rel_finite.max()) if rel_finite.size else \
            (float("inf") if np.isinf(rel).any() else 0.0)
        diff = diff64.astype(np.float32)
    mismatched = int(np.count_nonzero(bad))
    out["mismatched"] = mismatched
    out["mismatched_per_million"] = mismatched / n * 1e6
    out["passed"] = out["mismatched_per_million"] <= tol.mismatched_per_million
    out["difference"] = diff
    return out


def _relabel_mismatch(produced: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Where a one-to-one relabelling of ``produced`` onto ``expected`` fails (majority vote both ways)."""
    p = produced.ravel().astype(np.int64)
    e = expected.ravel().astype(np.int64)
    if p.size == 0:
        return np.zeros(expected.shape, bool)
    pairs, counts = np.unique(np.stack([p, e]), axis=1, return_counts=True)
    p_to_e: dict[int, int] = {}
    e_to_p: dict[int, int] = {}
    for i in np.argsort(-counts, kind="stable"):
        a, b = int(pairs[0, i]), int(pairs[1, i])
        p_to_e.setdefault(a, b)
        e_to_p.setdefault(b, a)
    pu, pinv = np.unique(p, return_inverse=True)
    eu, einv = np.unique(e, return_inverse=True)
    mapped_e = np.array([p_to_e[int(v)] for v in pu])[pinv]
    mapped_p = np.array([e_to_p[int(v)] for v in eu])[einv]
    return ((mapped_e != e) | (mapped_p != p)).reshape(expected.shape)
