"""Phase 5 of an export, *build*: the package's files and its final description.

:func:`build_package` writes the test tensors (``.npy``), ImageJ-hyperstack
sample TIFFs equal to them, the cover and the README into the staging folder, builds the
description with bioimageio.spec's classes (:mod:`._describe`), validated
with I/O checks, and runs the DeepImageJ rules on it as it will be written;
a package that passes them is tagged ``deepimagej``.

bioimageio.spec looks every ``github_user`` up online; :func:`github_users_trusted`
wraps the build and finish phases so that, offline, unverifiable names are
reported instead of failing the export.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ExportError
from ._describe import Contents, describe
from ._plan import ExportPlan, Meta
from ._reference import Reference
from .card import render_readme

__all__ = ["Built", "build_package", "github_users_trusted"]


@dataclass
class Built:
    """Phase 5's output: the description to write, over the staged files."""

    descr: Any
    contents: Contents
    files: dict[str, Path]
    #: the DeepImageJ rules' results on ``descr``
    deepimagej: list


def build_package(plan: ExportPlan, ref: Reference, staging: Path) -> Built:
    """Stage the package files and build the final description (call inside :func:`github_users_trusted`)."""
    from ..validation.consumers.deepimagej import has_failures

    files = _stage_tensors(ref, staging)
    files["cover"] = _cover(ref, staging)
    files["readme"] = _readme(plan, ref, staging)
    contents = ref.contents
    descr = describe(contents, files, root=staging, io_checks=True)
    dij = _deepimagej_precheck(descr, staging, plan.format_version)
    if not has_failures(dij) and "deepimagej" not in contents.meta.tags:
        contents = replace(contents, meta=replace(contents.meta, tags=[*contents.meta.tags, "deepimagej"]))
        descr = describe(contents, files, root=staging, io_checks=True)
        dij = _deepimagej_precheck(descr, staging, plan.format_version)
    return Built(descr=descr, contents=contents, files=files, deepimagej=dij)


# ---------------------------------------------------------------------------------------------- files


def _stage_tensors(ref: Reference, staging: Path) -> dict[str, Path]:
    """``test_<id>.npy`` and ``sample_<id>.tif`` for every tensor; keys ``test:<id>`` and ``sample:<id>``.

    The sample is an ImageJ hyperstack TIFF holding exactly the test tensor's values: the zoo's DeepImageJ
    CI feeds the sample instead of the test input and compares with the test output (consumer-rules.md
    D27), and bioimageio.spec asks for a sample (FAIR).
    """
    import tifffile

    files: dict[str, Path] = {}
    axes = {**{t: ref.contents.probe.inputs[t].axes for t in ref.test_inputs},
            **{t: ref.contents.probe.outputs[t].axes for t in ref.test_outputs}}
    for tid, arr in list(ref.test_inputs.items()) + list(ref.test_outputs.items()):
        p = staging / f"test_{tid}.npy"
        np.save(p, np.ascontiguousarray(arr), allow_pickle=False)
        files[f"test:{tid}"] = p
        hyperstack = _imagej_hyperstack(arr, axes[tid])
        if hyperstack is not None:
            sp = staging / f"sample_{tid}.tif"
            data, ij_axes = hyperstack
            tifffile.imwrite(sp, data, imagej=True, metadata={"axes": ij_axes})
            files[f"sample:{tid}"] = sp
    return files


def _imagej_hyperstack(arr: np.ndarray, axes: str) -> tuple[np.ndarray, str] | None:
    """The tensor as ImageJ wants it (axes in TZCYX order, batch of 1 dropped, float32/uint8/uint16), or None
    when ImageJ cannot hold it exactly (a batch of several, or values float32 does not represent)."""
    if "b" in axes:
        b = axes.index("b")
        if arr.shape[b] != 1:
            return None
        arr, axes = np.take(arr, 0, axis=b), axes.replace("b", "")
    if any(a not in "tzcyx" for a in axes):
        return None
    if "y" not in axes or "x" not in axes:  # e.g. class scores: ImageJ images have y and x, so one row
        flat = np.ascontiguousarray(arr.reshape(1, -1))
        return (flat if str(flat.dtype) in ("float32", "uint8", "uint16") else flat.astype(np.float32)), "YX"
    if str(arr.dtype) not in ("float32", "uint8", "uint16"):
        as_float = arr.astype(np.float32)
        if not np.array_equal(as_float.astype(arr.dtype), arr):
            return None
        arr = as_float
    order = [axes.index(a) for a in "tzcyx" if a in axes]
    ij_axes = "".join(a for a in "tzcyx" if a in axes).upper()
    return np.ascontiguousarray(np.transpose(arr, order)), ij_axes


def _cover(ref: Reference, staging: Path) -> Path:
    from ._covers import make_cover

    c = ref.contents
    first_in, first_out = c.input_ids[0], c.output_ids[0]
    return make_cover(ref.test_inputs[first_in], c.probe.inputs[first_in].axes, ref.test_outputs[first_out],
                      c.probe.outputs[first_out].axes, staging / "cover.png")


def _readme(plan: ExportPlan, ref: Reference, staging: Path) -> Path:
    meta: Meta = ref.contents.meta
    readme = render_readme(name=meta.name, description=meta.description, card={**plan.card, **meta.card_text},
                           validation=plan.validation, technical=_technical_lines(ref.contents),
                           reproducibility=ref.reproducibility, cite=meta.cite,
                           authors=[a["name"] for a in meta.authors], license=meta.license)
    path = staging / "README.md"
    path.write_text(readme, encoding="utf-8")
    return path


def _technical_lines(c: Contents) -> list[str]:
    """The README's technical section: tensors, processing, weights, parameters, tiling."""
    probe = c.probe
    lines = []
    for tid in c.input_ids:
        t = probe.inputs[tid]
        sizes = ", ".join(f"{a}: {s.describe()}" for a, s in t.sizes.items())
        procs = ", ".join(p.id for p in c.preprocessing[tid]) or "none"
        lines.append(f"Input `{tid}`: axes `{t.axes}`, {t.channels or 1} channel(s), {c.dtypes[tid]}; "
                     f"valid sizes {sizes}; preprocessing: {procs}.")
    for oid in c.output_ids:
        t = probe.outputs[oid]
        rel = ", ".join(f"{a}: {i.describe()}" for a, i in t.sizes.items() if i.kind not in ("batch", "channel"))
        procs = ", ".join(p.id for p in c.postprocessing[oid]) or "none"
        lines.append(f"Output `{oid}`: axes `{t.axes}`, {t.channels or 1} channel(s); "
                     + (f"size {rel}" if rel else "no spatial axes") + f"; postprocessing: {procs}.")
    lines.append("Weights: " + ", ".join(f"{w.format} ({w.comment})" for w in c.weights) + ".")
    for fmt, why in c.weights_left_out.items():
        lines.append(f"No {fmt} weights: {why}")
    lines.append(f"Parameters: {c.parameter_count:,}.")
    halos = {i.halo for t in probe.outputs.values() for i in t.sizes.values() if i.reference is not None}
    if any(halos):
        lines.append("Tiling: large images can be predicted in tiles of any valid size; the halo is cropped from "
                     "each tile's output (consumers such as DeepImageJ and bioimgzoo do this).")
    elif not halos:
        lines.append("No spatial output: the whole image is one sample (do not tile).")
    return lines


# ---------------------------------------------------------------------------------------------- DeepImageJ


class _StagingSource:
    """A package source over the staging folder plus the rdf content about to be written."""

    def __init__(self, root: Path, text: str, names: dict[str, Path]):
        self.root = root
        self.rdf_name = "rdf.yaml"
        self.name = f"staged package {root}"
        self._bytes = text.encode()
        self._names = names

    def read_rdf(self) -> tuple[bytes, str]:
        return self._bytes, self.rdf_name

    def fetch(self, path: str, *, sha256: str | None) -> Path:
        return self._names.get(path, self.root / path)


def _deepimagej_precheck(descr: Any, staging: Path, format_version: str | None) -> list:
    """Run the DeepImageJ rules on the description as it will be written (rdf content, staged files)."""
    from ..package import Package, build_model_description
    from ..validation.consumers.deepimagej import check_deepimagej
    from ._serialize import package_content

    content = package_content(descr, format_version=format_version)
    rdf = content.rdf
    source = _StagingSource(staging, content.text, content.files)
    # parsed from the rdf as it will be written: its files are package-relative names, as a consumer sees
    # them (the in-memory description names the staged files by absolute path, which a package may not)
    written = build_model_description(rdf, root=staging, file_name="rdf.yaml", where=source.name)
    pkg = Package(source=source, descr=written, original_format_version=content.format_version, raw=rdf)
    return check_deepimagej(pkg)


# ---------------------------------------------------------------------------------------------- GitHub users


@contextlib.contextmanager
def github_users_trusted(meta: Meta, notes: list[str]) -> Iterator[None]:
    """Inside the block, the authors' and maintainers' GitHub users that cannot be verified offline count as
    known (a note names them); a name GitHub says does not exist is an error."""
    from bioimageio.spec._internal.constants import KNOWN_INVALID_GITHUB_USERS

    from ..validation.format import github_users_known

    users = [a["github_user"] for a in meta.authors + meta.maintainers if a.get("github_user")]
    with github_users_known(users) as (unverified, why):
        # asked GitHub once per unknown user: nonexistent ones are now in spec's KNOWN_INVALID_GITHUB_USERS
        bad = [u for u in users if u.lower() in KNOWN_INVALID_GITHUB_USERS]
        if bad:
            raise ExportError(f"github_user {bad[0]!r}: GitHub knows no such user; fix the name or leave it out")
        if unverified:
            notes.append(f"GitHub user(s) {', '.join(unverified)} could not be verified ({why}): check the "
                         "spelling")
        yield
