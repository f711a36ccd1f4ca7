"""Helpers for the export tests (imported by name): shared metadata and the four package checks.

The four checks of the issue's "done when", for one exported zip:

1. bioimageio.spec validates it with no error and no warning,
2. bioimageio.core's ``test_model`` passes for every weights format it contains,
3. no DeepImageJ rule fails (packages with one input),
4. it reloads through our runtime with outputs equal to the module's.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# "bioimageiobot" is in bioimageio.spec's list of known GitHub users: no network lookup during validation
META = dict(
    description="A tiny network exported by the bioimgzoo test-suite.",
    authors=[{"name": "Test Author", "affiliation": "bioimgzoo", "github_user": "bioimageiobot"}],
    tags=["fluorescence-light-microscopy", "nuclei", "unet", "semantic-segmentation"],
    cite=[{"text": "Ronneberger, O. et al. U-Net. MICCAI 2015.", "doi": "10.1007/978-3-319-24574-4_28"}],
)


def seeded(factory, *args, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return factory(*args, **kwargs).eval()


def read_member(zip_path: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(zip_path) as zf:
        return np.load(io.BytesIO(zf.read(name)), allow_pickle=False)


def check_spec(path: Path) -> None:
    """(1) no error and no warning of any severity from bioimageio.spec."""
    from bioimageio.spec import load_description

    rd = load_description(path, perform_io_checks=True)
    summary = rd.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert not summary.errors, [e.msg for e in summary.errors]
    assert not summary.warnings, [(w.loc, w.msg) for w in summary.warnings]


def check_core(path: Path) -> dict[str, str]:
    """(2) bioimageio.core test_model passes for every weights format; returns status per detail."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    formats = [wf for wf, w in load_description(path).weights if w is not None]
    summary = test_model(path)
    failed = [(d.name, [e.msg[:300] for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    tested = {d.loc[1] for d in summary.details if len(d.loc) >= 2 and d.loc[0] == "weights"}
    assert set(formats) <= tested, (formats, tested)
    # reproduction without a single mismatched element (core reports mismatches as warnings)
    mism = [w.msg for d in summary.details for w in d.warnings if w.severity >= 30]
    assert not mism, mism
    return {d.name: d.status for d in summary.details}


def check_deepimagej(path: Path, *, expect_single_input: bool = True) -> list:
    """(3) one result per rule; no failure for single-input packages."""
    from bioimgzoo.validation.consumers.deepimagej import check_deepimagej as dij

    results = dij(path)
    assert [r.rule for r in results] == list(range(0, 30))  # D0: JDLL reads the description
    if expect_single_input:
        failed = [(r.rule, r.name, r.message) for r in results if r.status == "failed"]
        assert not failed, failed
    return results


def check_runtime(path: Path, module, inputs: dict, *, pipeline_outputs: dict, raw_equals_module: bool) -> None:
    """(4) bioimgzoo.load(...).predict gives the module's outputs, for every weights format."""
    pytest.importorskip("bioimgzoo.runtime.model")
    import bioimgzoo
    from bioimageio.spec import load_description

    formats = [wf for wf, w in load_description(path).weights if w is not None]
    for wf in formats:
        model = bioimgzoo.load(path, weights=wf, trust_code=True, device="cpu")
        data = inputs[next(iter(inputs))] if len(inputs) == 1 else inputs
        got = model.predict(data)
        got = {next(iter(pipeline_outputs)): got} if not isinstance(got, dict) else got
        for oid, expected in pipeline_outputs.items():
            actual = np.asarray(got[oid])
            assert actual.shape == expected.shape, (wf, oid, actual.shape, expected.shape)
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()),
                                       err_msg=f"{wf} {oid}")
        if raw_equals_module:
            with torch.no_grad():
                ref = module(*[torch.from_numpy(np.asarray(a, np.float32)) for a in inputs.values()])
            ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            for (oid, _), r in zip(pipeline_outputs.items(), ref):
                np.testing.assert_allclose(np.asarray(got[oid]), r.numpy(), rtol=1e-4,
                                           atol=1e-5 * float(r.abs().max()), err_msg=f"{wf} {oid} vs module")


def meta(**changes) -> dict:
    """A fresh copy of :data:`META` with ``changes`` applied."""
    import copy

    return {**copy.deepcopy(META), **changes}


def assert_zoo_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """The zoo's default reproduction tolerance: rtol = atol = 1e-3, <= 100 mismatches per million."""
    assert actual.shape == expected.shape
    bad = ~np.isclose(actual, expected, rtol=1e-3, atol=1e-3)
    assert bad.sum() <= 100e-6 * expected.size, f"{bad.sum()} of {expected.size} elements differ"
