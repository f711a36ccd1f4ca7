"""Open descriptions whose upgrade to format 0.5 fails for reasons that cannot affect a run.

bioimageio.spec validates a description in its own format and upgrades it to
0.5 (:func:`~bioimgzoo.package.description.build_model_description`).  Real
zoo descriptions fail that upgrade for things no prediction reads (a
documentation file ending in ``.ipynb``, a license id missing from the SPDX
list, a malformed DOI) and, in format 0.4, for one tensor rule 0.5 dropped
(a halo on an output of fixed size).  :func:`repair_description` takes such
a description through the spec again, with what the upgrade rejects
repaired:

* *metadata* (documentation, license, covers, citations, authors, test and
  sample files, ...) is dropped: each drop becomes one line of
  :attr:`~bioimgzoo.package.description.Package.warnings`;
* a format 0.4 output whose fixed sizes equal an input's fixed sizes on the
  same axes, with a halo, is re-declared as that input's shape (scale 1,
  offset 0): the same sizes and halo, said the way 0.5 allows.  No other
  tensor is changed: problems in tensors, sizes, halos, processing or
  weights stay errors;
* a format 0.4 weights entry whose ``dependencies`` is a pip requirements
  file (``pip:./requirements.txt``; 0.5 takes only conda environment files)
  is read without it, with a warning: the file stays in
  :attr:`~bioimgzoo.package.description.Package.raw`, where
  :mod:`bioimgzoo.runtime.dependencies` finds it for ``isolated=True``.

Every description is still built by bioimageio.spec's own classes from the
(repaired) content; nothing here writes one by hand.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Sequence

from ..errors import InvalidDescriptionError

__all__ = ["METADATA_FIELDS", "is_metadata_error", "repair_description"]

#: top-level fields no prediction reads: a problem in one of them is a warning, never an error
METADATA_FIELDS = frozenset({
    "attachments", "authors", "badges", "cite", "config", "covers", "description", "documentation",
    "download_url", "framework", "git_repo", "icon", "id", "id_emoji", "language", "license", "links",
    "maintainers", "packaged_by", "rdf_source", "root_path", "run_mode", "sample_inputs", "sample_outputs",
    "source", "tags", "test_inputs", "test_outputs", "timestamp", "training_data", "uploader", "version",
    "version_comment",
})
#: fields of one weights entry that no prediction reads
WEIGHTS_METADATA_FIELDS = frozenset({"authors", "attachments", "comment"})
#: test inputs and outputs go together: a test without its other half checks nothing
_PAIRED = {"test_inputs": "test_outputs", "test_outputs": "test_inputs",
           "sample_inputs": "sample_outputs", "sample_outputs": "sample_inputs"}
#: characters a 0.5 model name may hold (bioimageio.spec's RestrictCharacters on ModelDescr.name)
_NAME_BAD = re.compile(r"[^A-Za-z0-9_+\- ()]+")
_ROUNDS = 8

Build = Callable[[dict, str], Any]  # (content, format_version) -> description or InvalidDescr


def _loc(err: Any) -> tuple:
    return tuple(err.loc or ())


def is_metadata_error(loc: Sequence[Any]) -> bool:
    """True for a validation error (by its ``loc``) in a field that cannot affect a prediction."""
    if not loc:
        return False
    top = str(loc[0])
    if top in METADATA_FIELDS or top == "name":
        return True
    return top == "weights" and len(loc) >= 3 and str(loc[2]) in WEIGHTS_METADATA_FIELDS


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _drop(content: dict, loc: tuple, msg: str, warnings: list[str], *, why: str) -> bool:
    """Drop the metadata that ``loc`` points at from ``content``; False when nothing is left to drop."""
    top = str(loc[0])
    if top == "name":  # required: the one metadata field repaired, not dropped
        name = content.get("name")
        if not isinstance(name, str):
            return False
        fixed = _NAME_BAD.sub("-", name).strip("- ") or "unnamed model"
        fixed = (fixed + " model")[:128] if len(fixed) < 5 else fixed[:128]
        if fixed == name:
            return False
        content["name"] = fixed
        warnings.append(f"name {_shown(name)} read as {fixed!r}: {why} ({msg})")
        return True
    if top == "weights":
        entry = (content.get("weights") or {}).get(str(loc[1]))
        field = str(loc[2])
        if not isinstance(entry, dict) or field not in entry:
            return False
        warnings.append(f"weights.{loc[1]}.{field} = {_shown(entry.pop(field))} ignored: {why} ({msg})")
        return True
    if top not in content:
        return False
    value = content[top]
    if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(value, list) and 0 <= loc[1] < len(value) \
            and value[loc[1]] is not None and top not in _PAIRED:
        # one bad entry of a list (a citation, an author): keep the others
        warnings.append(f"{top}[{loc[1]}] = {_shown(value[loc[1]])} ignored: {why} ({msg})")
        value[loc[1]] = None  # removed after this round, so later indices still point right
        return True
    warnings.append(f"{top} = {_shown(content.pop(top))} ignored: {why} ({msg})")
    partner = _PAIRED.get(top)
    if partner and partner in content:
        warnings.append(f"{partner} ignored with {top} (a test needs both)")
        content.pop(partner)
    return True


def _compact(content: dict) -> None:
    """Remove the list entries :func:`_drop` marked; a list left empty goes."""
    for key in list(content):
        value = content[key]
        if isinstance(value, list) and any(v is None for v in value):
            kept = [v for v in value if v is not None]
            if kept:
                content[key] = kept
            else:
                del content[key]


def _errors(descr: Any) -> list:
    summary = getattr(descr, "validation_summary", None)
    return list(summary.errors) if summary is not None else []


def _error_lines(errors: Sequence[Any], limit: int = 10) -> str:
    lines = [f"  - {'.'.join(map(str, _loc(e))) or '(description)'}: {e.msg}" for e in errors[:limit]]
    more = f"\n  ... and {len(errors) - limit} more" if len(errors) > limit else ""
    return "\n".join(lines) + more


def repair_description(content: dict, *, build: Build, convert: Callable[[dict], None], where: str,
                       is_valid: Callable[[Any], bool]) -> tuple[Any, tuple[str, ...]]:
    """A 0.5 description of ``content`` whose upgrade failed, with what kept it from opening repaired.

    Parameters
    ----------
    content : dict
        The description as read from ``rdf.yaml`` (not modified).
    build : callable
        ``build(content, format_version)``: bioimageio.spec's
        ``build_description`` with the package's validation context;
        ``"discover"`` validates in the description's own format,
        ``"latest"`` upgrades to 0.5.
    convert : callable
        Converts a valid description of an older format to a 0.5 dict in
        place (bioimageio.spec's ``convert_from_old_format_wo_validation``).
    where : str
        Names the description in messages.
    is_valid : callable
        True for a built description (not an ``InvalidDescr``).

    Returns
    -------
    (descr, warnings)
        The 0.5 description and one line per repair.

    Raises
    ------
    InvalidDescriptionError
        When the description is invalid in its own format for more than
        metadata, or its upgrade fails for more than metadata and the
        tensor rules restated here: one message listing those errors.
    """
    fv = str(content.get("format_version", "?"))
    if re.match(r"^0\.[012]\.", fv):
        errors = [e for e in _errors(build(content, "discover")) if _loc(e)[:1] != ("format_version",)]
        raise InvalidDescriptionError(
            f"{where} is in format {fv}, older than any bioimageio.spec reads (model formats 0.3 to 0.5), so it "
            "cannot be validated or run; as format 0.5 it lacks:\n" + _error_lines(errors, limit=5)
            + "\nRewrite the description in format 0.5 (bioimageio.spec's classes write one).")
    warnings: list[str] = []
    work = copy.deepcopy(content)
    placeholders = _valid_in_own_format(work, build=build, where=where, is_valid=is_valid, fv=fv, warnings=warnings)
    _converted(work, build=build, convert=convert, where=where, fv=fv, warnings=warnings, placeholders=placeholders)
    descr = _valid_as_05(work, build=build, where=where, is_valid=is_valid, fv=fv, warnings=warnings)
    return descr, tuple(warnings)


def _valid_in_own_format(work: dict, *, build: Build, where: str, is_valid: Callable[[Any], bool], fv: str,
                         warnings: list[str]) -> set[str]:
    """1. ``work`` valid in its own format, metadata aside; returns the keys of placeholders put in.

    Placeholders stand in for required metadata until the conversion is done, then go.
    """
    placeholders: set[str] = set()
    own = build(work, "discover")
    for _ in range(_ROUNDS):
        if is_valid(own):
            return placeholders
        errors = _errors(own)
        serious = [e for e in errors if not is_metadata_error(_loc(e))]
        if serious or not errors:
            raise InvalidDescriptionError(
                f"{where} is not a valid bioimage.io description (format {fv}), and not only in its metadata:\n"
                + _error_lines(serious or errors) + "\nFix these fields (bioimgzoo validate shows the full report).")
        if not warnings:
            warnings.append(f"bioimageio.spec rejects this description (format {fv}) only for metadata; "
                            "bioimgzoo runs it anyway")
        changed = False
        for e in errors:
            changed |= _repair_own(work, _loc(e), e.msg, warnings, placeholders, fv=fv)
        _compact(work)
        if not changed:
            raise InvalidDescriptionError(f"{where} is not a valid bioimage.io description (format {fv}):\n"
                                          + _error_lines(errors))
        own = build(work, "discover")
    if not is_valid(own):
        raise InvalidDescriptionError(f"{where} is not a valid bioimage.io description (format {fv}):\n"
                                      + _error_lines(_errors(own)))
    return placeholders


def _converted(work: dict, *, build: Build, convert: Callable[[dict], None], where: str, fv: str,
               warnings: list[str], placeholders: set[str]) -> None:
    """2. the tensor rules of format 0.4 that 0.5 states otherwise, restated; 3. the spec's conversion to 0.5."""
    if fv.startswith(("0.3", "0.4")):
        warnings.extend(_fixed_outputs_with_halo(work))
        # the converter fails on scalar preprocessing along several axes (its postprocessing path copes)
        warnings.extend(_scalar_scale_linear_axis(work, key="axes", kinds=("inputs",), op="name"))
        warnings.extend(_pip_requirements(work))
    if not fv.startswith("0.5"):
        convert(work)
        if not str(work.get("format_version", "")).startswith("0.5"):
            descr = build(work, "latest")
            raise InvalidDescriptionError(
                f"{where} is valid in its own format ({fv}) but bioimageio.spec cannot convert it to format 0.5, "
                "which bioimgzoo runs:\n" + _error_lines([e for e in _errors(descr)
                                                         if not is_metadata_error(_loc(e))] or _errors(descr)))
        warnings.extend(_scalar_scale_linear_axis(work))
    for key in placeholders:  # the placeholders go
        if key in ("test_inputs", "test_outputs"):
            for t in work.get("inputs" if key == "test_inputs" else "outputs") or []:
                if isinstance(t, dict):
                    t.pop("test_tensor", None)
        else:
            work.pop(key, None)


def _valid_as_05(work: dict, *, build: Build, where: str, is_valid: Callable[[Any], bool], fv: str,
                 warnings: list[str]) -> Any:
    """4. validated as 0.5; metadata it rejects goes, with a warning each."""
    for _ in range(_ROUNDS):
        descr = build(work, "latest")
        if is_valid(descr):
            return descr
        errors = _errors(descr)
        serious = [e for e in errors if not is_metadata_error(_loc(e))]
        changed = False
        if not serious:
            for e in errors:
                changed |= _drop(work, _loc(e), e.msg, warnings, why="format 0.5 does not accept it")
            _compact(work)
        if not changed:
            raise InvalidDescriptionError(
                f"{where} is valid in its own format ({fv}) but cannot be read as format 0.5, which bioimgzoo "
                "runs:\n" + _error_lines(serious or errors)
                + "\nFix these fields (bioimgzoo validate shows the full report).")
    raise InvalidDescriptionError(f"{where}: repairing the description for format 0.5 did not converge:\n"
                                  + _error_lines(_errors(descr)))


#: stand-ins for metadata format 0.4 requires, valid there and removed once converted to 0.5
_PLACEHOLDER = {
    "authors": lambda c: [{"name": "unknown"}],
    "description": lambda c: "(no valid description)",
    "documentation": lambda c: "README.md",
    "license": lambda c: "CC-BY-4.0",
    "timestamp": lambda c: "2000-01-01T00:00:00",
    "test_inputs": lambda c: [f"missing-test-input-{i}.npy" for i in range(len(c.get("inputs") or []))],
    "test_outputs": lambda c: [f"missing-test-output-{i}.npy" for i in range(len(c.get("outputs") or []))],
}
_DOI_URL = re.compile(r"^(?:https?://)?(?:dx\.)?doi\.org/", re.I)


def _repair_own(content: dict, loc: tuple, msg: str, warnings: list[str], placeholders: set[str], *,
                fv: str) -> bool:
    """Repair one metadata error of the description in its own format; False when nothing changed."""
    top = str(loc[0])
    why = f"invalid in format {fv}"
    if top == "cite" and len(loc) >= 3 and isinstance(loc[1], int) and str(loc[2]) == "doi":
        entry = (content.get("cite") or [None] * (loc[1] + 1))[loc[1]]
        doi = entry.get("doi") if isinstance(entry, dict) else None
        if isinstance(doi, str) and _DOI_URL.match(doi.strip()):
            entry["doi"] = _DOI_URL.sub("", doi.strip())
            warnings.append(f"cite[{loc[1]}].doi {doi!r} read as {entry['doi']!r}")
            return True
        if isinstance(doi, str) and re.match(r"^https?://", doi.strip()):
            entry.pop("doi")
            entry["url"] = doi.strip()
            warnings.append(f"cite[{loc[1]}].doi {doi!r} is a URL: read as the citation's url")
            return True
    if top == "authors" and len(loc) >= 3 and str(loc[-1]) == "name":
        authors = content.get("authors")
        if isinstance(authors, list) and authors and all(isinstance(a, dict) and isinstance(a.get("name"), str)
                                                          for a in authors):
            # early formats list authors as plain names
            content["authors"] = [a["name"] for a in authors]
            warnings.append(f"authors read as names only ({', '.join(content['authors'])}): {why} ({msg})")
            return True
    if fv.startswith("0.5"):  # format 0.5 requires no metadata but the name: what is bad goes
        return _drop(content, loc, msg, warnings, why=why)
    if top in _PLACEHOLDER and top not in placeholders:
        placeholders.add(top)
        partner = _PAIRED.get(top)
        warnings.append(f"{top} = {_shown(content.get(top))} ignored: {why} ({msg})")
        content[top] = _PLACEHOLDER[top](content)
        if partner in _PLACEHOLDER and partner not in placeholders:
            placeholders.add(partner)
            warnings.append(f"{partner} ignored with {top} (a test needs both)")
            content[partner] = _PLACEHOLDER[partner](content)
        return True
    if top in _PLACEHOLDER:
        return False
    return _drop(content, loc, msg, warnings, why=why)


def _scalar_scale_linear_axis(content: dict, *, key: str = "axis", kinds: Sequence[str] = ("inputs", "outputs"),
                              op: str = "id") -> list[str]:
    """Drop ``axis`` (0.4: ``axes``) from ``scale_linear`` steps whose gain and offset are scalars.

    Format 0.4 allowed ``axes`` with scalar gain and offset; 0.5 refuses an
    ``axis`` there, and a scalar applies alike along any axes.
    """
    notes = []
    for kind in kinds:
        for t in content.get(kind) or []:
            if not isinstance(t, dict):
                continue
            for step in t.get("preprocessing" if kind == "inputs" else "postprocessing") or []:
                kw = step.get("kwargs") if isinstance(step, dict) else None
                if step.get(op) == "scale_linear" and isinstance(kw, dict) and kw.get(key) is not None \
                        and not isinstance(kw.get("gain", 1), list) and not isinstance(kw.get("offset", 0), list):
                    name = t.get("id", t.get("name"))
                    notes.append(f"{kind[:-1]} {name!r}: scale_linear {key} {kw.pop(key)!r} ignored "
                                 "(its gain and offset are scalars, which apply alike along any axis)")
    return notes


# ----------------------------------------------------------------------------- 0.4 tensors
def _pip_requirements(content: dict) -> list[str]:
    """Take format 0.4's ``dependencies: pip:FILE`` out of the weights entries (0.5 wants a conda yaml)."""
    lines = []
    for fmt, entry in (content.get("weights") or {}).items():
        dep = entry.get("dependencies") if isinstance(entry, dict) else None
        if isinstance(dep, str) and dep.strip().startswith("pip:"):
            del entry["dependencies"]
            lines.append(f"weights.{fmt}.dependencies is a pip requirements file ({dep.split(':', 1)[1]}), which "
                         "format 0.5 does not take: read without it; kept for isolated=True (CLI --isolated), "
                         "which installs it")
    return lines


def _fixed_shape(tensor: dict) -> list[int] | None:
    """A 0.4 input's shape when it is fixed (a list, or min/step with every step 0)."""
    shape = tensor.get("shape")
    if isinstance(shape, list) and all(isinstance(n, int) for n in shape):
        return shape
    if isinstance(shape, dict) and isinstance(shape.get("min"), list) and isinstance(shape.get("step"), list) \
            and all(s == 0 for s in shape["step"]):
        return list(shape["min"])
    return None


def _fixed_outputs_with_halo(content: dict) -> list[str]:
    """Re-declare 0.4 fixed-size outputs with a halo as their input's shape; one warning line per output.

    Only where every space and time axis of the output has exactly the
    fixed size of the same axis of one input: the reference then gives the
    very sizes the description declares (scale 1, offset 0; channel and
    index axes keep their count through the 0.4 idiom scale 0, offset n/2).
    """
    notes = []
    inputs = [t for t in content.get("inputs") or [] if isinstance(t, dict)]
    for out in content.get("outputs") or []:
        if not isinstance(out, dict):
            continue
        shape, halo, axes = out.get("shape"), out.get("halo"), out.get("axes")
        if not (isinstance(shape, list) and isinstance(halo, list) and isinstance(axes, str)
                and len(shape) == len(halo) == len(axes) and any(halo)):
            continue
        for t in inputs:
            in_shape, in_axes = _fixed_shape(t), t.get("axes")
            restricted = False
            if in_shape is None and isinstance(t.get("shape"), dict) and isinstance(in_axes, str) \
                    and isinstance(t["shape"].get("min"), list) and len(t["shape"]["min"]) == len(in_axes):
                # a fixed output equal to the input's *smallest* size: the declared sizes agree only there
                in_shape, restricted = list(t["shape"]["min"]), True
            # format 0.4 wants a referenced input with as many axes as the output
            if in_shape is None or not isinstance(in_axes, str) or len(in_shape) != len(in_axes) \
                    or len(in_axes) != len(axes):
                continue
            spatial = [a for a in axes if a in "xyzt"]
            if not spatial or any(a not in in_axes or in_shape[in_axes.index(a)] != shape[axes.index(a)]
                                  for a in spatial):
                continue
            scale, offset = [], []
            for a, n in zip(axes, shape):
                if a in "xyzt" or a == "b":
                    scale.append(1)
                    offset.append(0)
                else:
                    scale.append(0)
                    offset.append(n / 2)
            if restricted:
                t["shape"] = list(in_shape)
                notes.append(f"input {t.get('name')!r} restricted to its smallest size {in_shape}: output "
                             f"{out.get('name')!r} declares that size, fixed, so the description holds only there")
            out["shape"] = {"reference_tensor": t.get("name"), "scale": scale,
                            "offset": [int(o) if float(o).is_integer() else o for o in offset]}
            notes.append(f"output {out.get('name')!r}: fixed size {shape} with halo {halo} read as the size of "
                         f"input {t.get('name')!r} (equal on every spatial axis; format 0.5 allows a halo only "
                         "on sizes that follow an input)")
            break
    return notes
