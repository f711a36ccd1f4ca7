"""Phase 1 of an export, *plan*: every option resolved and checked before the module runs.

:func:`plan_export` turns the caller's arguments (and the model card) into an
:class:`ExportPlan`: tensor ids, example arrays and their axes, validated
preprocessing, the card's metadata (:class:`Meta`), the weights formats to
write (:class:`WeightsOptions`), the tolerance (:class:`ToleranceOption`) and the
README's validation section.  What needs the module's outputs (output ids,
postprocessing per output) is resolved by the probe phase
(:meth:`ExportPlan.output_ids_for`, :meth:`ExportPlan.postprocessing_for`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..descr.axes import parse_axis_letters
from ..descr.weights import canonical_formats
from ..errors import ExportError
from ._weights import WEIGHTS_FORMATS
from .card import load_card, normalise_metrics

__all__ = ["EXPORT_OPTIONS", "ExportPlan", "Meta", "ToleranceOption", "WeightsOptions", "ensure_dtype", "plan_export",
           "tensor_id"]

#: keyword overrides export accepts (besides the named parameters)
EXPORT_OPTIONS: dict[str, str] = {
    "id": "zoo id (default: from name)",
    "version": "model version (default 0.1.0)",
    "tags": "extra tags",
    "cite": "list of {text, doi|url}",
    "maintainers": "list of {name, github_user}",
    "git_repo": "source repository URL",
    "parent": "zoo model this one derives from (fine-tuning): an id or {id, version}",
    "input_ids": "ids of the inputs (single input: 'input')",
    "output_ids": "ids of the outputs ('output', or 'output0', 'output1', ...)",
    "output_axes": "{output_id: 'bcyx'} when not inferable",
    "input_description": "{input_id: text}",
    "output_description": "{output_id: text}",
    "channel_names": "{tensor_id: [names]}",
    "sizes": "valid input sizes: {letter: int | {min, step}} or {input_id: {...}}",
    "halo": "int, {letter: int} or {output_id: {letter: int}}",
    "weights": "formats to write, default ('pytorch_state_dict', 'torchscript', 'onnx')",
    "architecture": "'package.module:Callable', 'file.py:Callable', a callable or a mapping",
    "architecture_kwargs": "constructor kwargs for the architecture",
    "opset_version": "ONNX opset (default 17)",
    "tolerance": "{relative: 1e-3, absolute_fraction: 1e-3} or {relative, absolute}",
    "validation": "{dataset, description, metrics} for the README's Validation section",
    "test": "also run bioimageio.core's test_model on the package before writing it (default False)",
    "format_version": "the 0.5 format to write (default: the oldest that carries the package, e.g. '0.5.4', "
                      "which every deployed reader reads); '0.5.12' writes bioimageio.spec's newest",
    "progress": "show the slow steps on stderr (default: when stderr is a terminal)",
    "intended_use": "card field", "out_of_scope_use": "card field", "limitations": "card field",
    "training_data": "card field", "training": "card field", "task": "card field", "modality": "card field",
    "target_structure": "card field", "architecture_type": "card field",
}

_META_OPTIONS = ("intended_use", "out_of_scope_use", "limitations", "training_data", "training", "task",
                 "modality", "target_structure", "architecture_type", "tags", "cite", "maintainers", "git_repo",
                 "id", "version", "parent")
#: card fields that go to ``config.bioimageio`` (when given)
_CONFIG_FIELDS = ("task", "modality", "architecture_type", "out_of_scope_use", "target_structure", "limitations",
                  "training")
#: card fields the README renders from the caller's options too
_CARD_TEXT = ("intended_use", "out_of_scope_use", "limitations", "training_data", "training")
_TAG_DIMS = {1: "2d", 2: "2d", 3: "3d"}
#: the card's ``task`` -> the workflow tag BiaPy routes by (consumer-rules.md B3)
WORKFLOW_TAGS = {
    "semantic-segmentation": "semantic-segmentation", "segmentation": "semantic-segmentation",
    "instance-segmentation": "instance-segmentation", "detection": "detection", "denoising": "denoising",
    "n2v": "denoising", "noise2void": "denoising", "restoration": "image-restoration",
    "image-restoration": "image-restoration", "super-resolution": "super-resolution",
    "self-supervision": "self-supervision", "classification": "classification", "image-to-image": "image-to-image",
    "pix2pix": "pix2pix",
}
_ZOO_CITE = {"text": "Ouyang, W. et al. BioImage Model Zoo: A Community-Driven Resource for Accessible Deep "
                     "Learning in BioImage Analysis. bioRxiv (2022).",
             "doi": "10.1101/2022.06.07.495102"}


@dataclass
class Meta:
    """The package's metadata: the caller's options over the model card's fields."""

    name: str
    description: str
    authors: list[dict]
    license: str
    tags: list[str]
    cite: list[dict]
    maintainers: list[dict]
    version: str
    id: str
    git_repo: str | None = None
    parent: Any = None
    #: card fields for ``config.bioimageio`` (task, modality, limitations, training, ...), as given
    config: dict = field(default_factory=dict)
    #: card text the caller passed as options (it replaces the card's in the README)
    card_text: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ToleranceOption:
    """How the export chooses the tolerance it declares: ``relative``, and ``absolute`` or a fraction of max|expected|.

    What is declared (and everything is checked with) is a :class:`bioimgzoo.descr.tolerance.Tolerance`:
    the zoo's rtol, atol and mismatched elements per million.
    """

    relative: float = 1e-3
    absolute_fraction: float = 1e-3
    absolute: float | None = None

    def atol_for(self, expected: np.ndarray) -> float:
        if self.absolute is not None:
            return float(self.absolute)
        return self.absolute_fraction * float(np.abs(expected).max())


@dataclass(frozen=True)
class WeightsOptions:
    """Which weights formats to write, and how."""

    #: canonical names in the canonical order (the original weights first)
    formats: tuple[str, ...]
    #: the caller chose the formats (a format that cannot be written is then an error, not a note)
    explicit: bool
    architecture: Any = None
    architecture_kwargs: Mapping | None = None
    opset: int = 17


@dataclass
class ExportPlan:
    """Phase 1's output: the checked options an export works from."""

    out: Path
    meta: Meta
    #: the model card's fields (README sections)
    card: dict
    #: the README's Validation section: the card's, updated by ``validation=``
    validation: dict
    input_ids: list[str]
    #: example arrays by input id (the first image of a batch)
    inputs: dict[str, np.ndarray]
    input_axes: dict[str, str]
    #: bioimageio.spec processing descriptions by input id (ending in ensure_dtype float32 for a non-float32
    #: example)
    preprocessing: dict[str, list]
    weights: WeightsOptions
    tolerance: ToleranceOption
    #: run bioimageio.core's test_model on the package
    core_test: bool = False
    #: the format version asked for (None: the oldest that carries the package)
    format_version: str | None = None
    #: postprocessing as the caller gave it (resolved per output by :meth:`postprocessing_for`)
    postprocessing: Any = None
    #: ``output_ids=`` (checked ids), or None: named after the module's outputs
    output_ids: list[str] | None = None
    #: probe overrides (``output_axes=``, ``sizes=``, ``halo=``)
    output_axes: Mapping | None = None
    sizes: Mapping | None = None
    halo: Any = None
    input_description: dict = field(default_factory=dict)
    output_description: dict = field(default_factory=dict)
    channel_names: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def output_ids_for(self, n_outputs: int) -> list[str]:
        """Output ids for a module returning ``n_outputs`` tensors; checks they are unique."""
        if self.output_ids is not None:
            oids = list(self.output_ids)
            if len(oids) != n_outputs:
                raise ExportError(f"output_ids names {len(oids)} outputs but the module returns {n_outputs}")
        else:
            oids = ["output"] if n_outputs == 1 else [f"output{i}" for i in range(n_outputs)]
        if len(set(oids) | set(self.input_ids)) != len(oids) + len(self.input_ids):
            raise ExportError(f"tensor ids must be unique across inputs and outputs: {self.input_ids + oids}")
        return oids

    def postprocessing_for(self, output_ids: Sequence[str]) -> dict[str, list]:
        """The postprocessing descriptions by output id."""
        post = _proc_list(self.postprocessing, output_ids, "postprocessing")
        return {oid: _spec_procs(post[oid], "post", f"postprocessing of {oid!r}") for oid in output_ids}


def plan_export(example_input: Any, out: Any, *, name: str | None, description: str | None, authors: Any,
                license: str | None, axes: Any, preprocessing: Any, postprocessing: Any, card: Any,
                overrides: Mapping[str, Any]) -> ExportPlan:
    """Resolve and check the options of an export (nothing runs the module yet)."""
    unknown = sorted(set(overrides) - set(EXPORT_OPTIONS))
    if unknown:
        raise ExportError(f"unknown export option(s) {unknown}; known: {', '.join(sorted(EXPORT_OPTIONS))}")
    out = Path(out).expanduser()
    if out.suffix.lower() != ".zip":
        raise ExportError(f"out={str(out)!r}: the package is written as a .zip; give a path ending in .zip")

    card_data, _ = load_card(card)
    meta_src = {**card_data, **{k: v for k, v in overrides.items() if k in _META_OPTIONS}}
    if card_data.get("tags") and overrides.get("tags"):  # tags add up; everything else: the caller wins
        meta_src["tags"] = list(dict.fromkeys([*card_data["tags"], *overrides["tags"]]))
    name = _check_name(name or card_data.get("name"))
    description = description or card_data.get("description")
    if not description:
        raise ExportError("description= is required (or a model card with 'description')")
    author_list = _authors(authors if authors is not None else card_data.get("authors"))
    if not author_list:
        raise ExportError("authors= is required: a list of names or of {name, affiliation, orcid, github_user}")
    license = license or card_data.get("license") or "CC-BY-4.0"

    notes: list[str] = []
    ids, inputs, in_axes = _examples(example_input, axes, overrides.get("input_ids"), notes)
    pre = _proc_list(preprocessing, ids, "preprocessing")
    pre_descr = {tid: _spec_procs(pre[tid], "pre", f"preprocessing of {tid!r}") for tid in ids}
    for tid in ids:  # the network gets float32 (the test input keeps the example's dtype)
        steps = pre_descr[tid]
        if str(inputs[tid].dtype) != "float32" and not (steps and steps[-1].id == "ensure_dtype"):
            steps.append(ensure_dtype("float32"))
        if str(inputs[tid].dtype) != "float32" and len(steps) > 1 and steps[0].id != "ensure_dtype":
            # cast first: otherwise bioimageio.spec opens the pipeline with ensure_dtype to the raw type
            # (uint16), which BiaPy's check refuses ("Not recognized preprocessing found: ensure_dtype")
            steps.insert(0, ensure_dtype("float32"))
    output_ids = ([tensor_id(o, "output id") for o in overrides["output_ids"]]
                  if overrides.get("output_ids") else None)
    meta = _meta(meta_src, name=name, description=description, authors=author_list, license=license,
                 in_axes=in_axes[ids[0]], notes=notes)
    return ExportPlan(
        out=out, meta=meta, card=card_data, validation=_validation(card_data, overrides.get("validation")),
        input_ids=ids, inputs=inputs, input_axes=in_axes, preprocessing=pre_descr,
        weights=_weights_options(overrides), tolerance=_tolerance(overrides.get("tolerance")),
        core_test=bool(overrides.get("test")), format_version=_format_version(overrides.get("format_version")),
        postprocessing=postprocessing, output_ids=output_ids,
        output_axes=overrides.get("output_axes"), sizes=overrides.get("sizes"), halo=overrides.get("halo"),
        input_description=dict(overrides.get("input_description") or {}),
        output_description=dict(overrides.get("output_description") or {}),
        channel_names=dict(overrides.get("channel_names") or {}), notes=notes)


def _format_version(value: Any) -> str | None:
    """The ``format_version=`` option, checked (None: the oldest format that carries the package)."""
    from ..descr.readable import parse_format_version

    if value is None or str(value).strip() in ("", "auto"):
        return None
    if str(value).strip() == "latest":
        from ..descr.readable import LATEST_FORMAT

        return ".".join(map(str, LATEST_FORMAT))
    try:
        parse_format_version(value)
    except ValueError as e:
        raise ExportError(f"format_version={value!r}: {e}. Leave it out to write the oldest format that carries "
                          "the package (what every deployed reader reads)") from e
    return str(value).strip()


# ---------------------------------------------------------------------------------------------- inputs


def _examples(example_input: Any, axes: Any, input_ids: Sequence[str] | None,
              notes: list[str]) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    """(input ids, example arrays, axes) from ``example_input`` (an array or a dict) and ``axes``."""
    if isinstance(example_input, Mapping):
        ids = [tensor_id(k, "input id") for k in example_input]
        arrays = {tid: _as_array(v, f"example input {tid!r}") for tid, v in zip(ids, example_input.values())}
    else:
        given = input_ids or ["input"]
        if len(given) != 1:
            raise ExportError("input_ids names several inputs but example_input is one array: pass a dict")
        ids = [tensor_id(given[0], "input id")]
        arrays = {ids[0]: _as_array(example_input, "example input")}
    if isinstance(axes, Mapping):
        missing = set(ids) - set(axes)
        if missing:
            raise ExportError(f"axes: no axes given for input(s) {sorted(missing)}")
    in_axes = {tid: parse_axis_letters(axes[tid] if isinstance(axes, Mapping) else axes, arrays[tid].ndim,
                                       what=f"input {tid!r}", error=ExportError) for tid in ids}
    for tid in ids:
        b = in_axes[tid].find("b")
        if b >= 0 and arrays[tid].shape[b] != 1:
            notes.append(f"example {tid!r} holds a batch of {arrays[tid].shape[b]}: the first image is the test "
                         "input")
            arrays[tid] = np.ascontiguousarray(np.take(arrays[tid], [0], axis=b))
    return ids, arrays, in_axes


def _as_array(x: Any, what: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind in "cUSV":
        raise ExportError(f"{what}: a numeric array is needed, got dtype {arr.dtype}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint64:
        arr = arr.astype(np.float64)
    if not np.isfinite(arr.astype(np.float64)).all():
        raise ExportError(f"{what} holds NaN or infinite values: pass a clean example image")
    return np.ascontiguousarray(arr)


def tensor_id(text: str, what: str) -> str:
    tid = str(text)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,31}", tid):
        raise ExportError(f"{what} {text!r} is not a valid tensor id: use lower-case letters, digits and _ "
                          "(at most 32 characters, not starting with a digit)")
    return tid


# ---------------------------------------------------------------------------------------------- processing


def _proc_list(value: Any, ids: Sequence[str], what: str) -> dict[str, list]:
    """``None | list | {tensor_id: list}`` -> {tensor_id: list of step dicts/descrs}."""
    if value is None:
        return {i: [] for i in ids}
    if isinstance(value, Mapping) and set(value) <= set(ids) and not ("id" in value and "id" not in ids):
        return {i: list(value.get(i) or []) for i in ids}
    if isinstance(value, (list, tuple)):
        if len(ids) != 1:
            raise ExportError(f"{what}: several tensors ({', '.join(ids)}): pass a mapping {{tensor_id: [steps]}}")
        return {ids[0]: list(value)}
    if isinstance(value, Mapping) and "id" in value:
        return {ids[0]: [value]} if len(ids) == 1 else _proc_list([value], ids, what)
    raise ExportError(f"{what} must be a list of steps like {{'id': 'zero_mean_unit_variance', 'kwargs': "
                      f"{{'axes': ['x', 'y']}}}} or a mapping by tensor id ({', '.join(ids)})")


def _normalise_step(step: Any) -> Any:
    if hasattr(step, "model_dump"):
        return step
    if not isinstance(step, Mapping) or "id" not in step:
        raise ExportError(f"processing step {step!r}: expected {{'id': ..., 'kwargs': {{...}}}}")
    step = dict(step)
    kwargs = dict(step.get("kwargs") or {})
    if "axes" in kwargs and kwargs["axes"] is not None:
        kwargs["axes"] = [{"c": "channel", "b": "batch"}.get(str(a), str(a)) for a in kwargs["axes"]]
    step["kwargs"] = kwargs
    if not step["kwargs"]:
        step.pop("kwargs")
    return step


def _spec_procs(steps: list, kind: str, what: str) -> list:
    from typing import List

    from pydantic import TypeAdapter, ValidationError

    from bioimageio.spec.model import v0_5

    typ = v0_5.PreprocessingDescr if kind == "pre" else v0_5.PostprocessingDescr
    try:
        return list(TypeAdapter(List[typ]).validate_python([_normalise_step(s) for s in steps]))
    except ValidationError as e:
        first = e.errors()[0]
        raise ExportError(f"{what}: invalid processing step at {'.'.join(map(str, first['loc']))}: "
                          f"{first['msg']}") from e


def ensure_dtype(dtype: str):
    """An ``ensure_dtype`` processing step (valid as pre- and postprocessing)."""
    from bioimageio.spec.model import v0_5

    return v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype=dtype))


# ---------------------------------------------------------------------------------------------- options


def _weights_options(overrides: Mapping[str, Any]) -> WeightsOptions:
    # the same names and aliases as load/predict/pull ("ts", "pytorch", ...)
    formats = canonical_formats(overrides.get("weights") or WEIGHTS_FORMATS, among=WEIGHTS_FORMATS,
                                error=ExportError)
    if not formats:
        raise ExportError(f"weights=[]: choose at least one of {', '.join(WEIGHTS_FORMATS)}")
    ordered = tuple(f for f in WEIGHTS_FORMATS if f in formats)  # canonical order: the original weights first
    opset = 17
    if "onnx" in ordered and overrides.get("opset_version") is not None:
        try:
            opset = int(overrides["opset_version"])
        except (TypeError, ValueError) as e:
            raise ExportError(f"opset_version={overrides['opset_version']!r}: an ONNX opset number is needed, "
                              "e.g. 17") from e
    return WeightsOptions(formats=ordered, explicit="weights" in overrides,
                          architecture=overrides.get("architecture"),
                          architecture_kwargs=overrides.get("architecture_kwargs"), opset=opset)


def _tolerance(value: Any) -> ToleranceOption:
    try:
        tol = dict(value or {})
        fixed = tol.get("absolute")
        return ToleranceOption(relative=float(tol.get("relative", 1e-3)),
                         absolute_fraction=float(tol.get("absolute_fraction", 1e-3)),
                         absolute=None if fixed is None else float(fixed))
    except (TypeError, ValueError) as e:
        raise ExportError(f"tolerance={value!r}: expected {{relative: 1e-3, absolute_fraction: 1e-3}} or "
                          "{relative, absolute} with numbers") from e


def _validation(card: Mapping, extra: Any) -> dict:
    """The README's validation section: the card's, with the caller's ``validation=`` over it."""
    validation = dict(card.get("validation") or {})
    if not extra:
        return validation
    if not isinstance(extra, Mapping):
        raise ExportError("validation= must be a mapping {dataset, description, metrics}")
    by_name = {r["name"]: r for r in normalise_metrics(validation.get("metrics"))}
    for r in normalise_metrics(extra.get("metrics")):  # the caller's numbers replace the card's
        by_name[r["name"]] = {**by_name.get(r["name"], {}), **r}
    validation.update({k: v for k, v in extra.items() if k != "metrics"})
    validation["metrics"] = list(by_name.values())
    return validation


# ---------------------------------------------------------------------------------------------- metadata


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s or "model"


def _check_name(name: Any) -> str:
    if not name:
        raise ExportError("name= is required (or a model card with 'name')")
    if not isinstance(name, str) or not (5 <= len(name) <= 128) or re.search(r"[^A-Za-z0-9_+\- ()]", name):
        raise ExportError(f"name {name!r} is not a valid model name: 5 to 128 characters (<= 64 recommended) "
                          "from letters, digits, spaces and _+-()")
    return name


def _authors(authors: Any, what: str = "authors") -> list[dict]:
    if authors is None:
        return []
    if isinstance(authors, (str, Mapping)):
        authors = [authors]
    out = []
    keys = {"name", "affiliation", "orcid", "github_user", "email"}
    for a in authors:
        if isinstance(a, str):
            a = {"name": a}
        if not isinstance(a, Mapping) or not a.get("name"):
            raise ExportError(f"{what}: each entry must be a name or a mapping with 'name', got {a!r}")
        unknown = set(a) - keys
        if unknown:
            raise ExportError(f"{what}: unknown key(s) {sorted(unknown)} in {dict(a)}; use {sorted(keys)}")
        out.append({k: v for k, v in a.items() if v not in (None, "")})
    return out


def _meta(src: Mapping, *, name: str, description: str, authors: list[dict], license: str, in_axes: str,
          notes: list[str]) -> Meta:
    tags = [str(t) for t in (src.get("tags") or [])]
    n_space = len([a for a in in_axes if a in "zyx"])
    workflow = WORKFLOW_TAGS.get(str(src.get("task") or "").strip().lower())
    if src.get("task") and workflow is None:
        notes.append(f"task {src.get('task')!r} names no workflow BiaPy knows ({', '.join(sorted(set(WORKFLOW_TAGS.values())))}"
                     "): no workflow tag written, so BiaPy will not offer the model")
    elif not src.get("task"):
        notes.append("no task= given (e.g. 'semantic-segmentation', 'denoising'): no workflow tag written, so BiaPy "
                     "will not offer the model")
    for t in ("pytorch", _TAG_DIMS.get(n_space, "2d") + ("-t" if "t" in in_axes else ""), workflow):
        if t and t not in tags:
            tags.append(t)
    cite = list(src.get("cite") or [])
    for c in cite:
        if not isinstance(c, Mapping) or not c.get("text") or not (c.get("doi") or c.get("url")):
            raise ExportError(f"cite entry {c!r}: needs 'text' and a 'doi' or 'url'")
    if not cite:
        cite = [dict(_ZOO_CITE)]
        notes.append("no citation given: citing the BioImage Model Zoo paper; add your method's paper with cite=")
    maintainers = src.get("maintainers")
    if maintainers is None:
        maintainers = [{"name": a["name"], "github_user": a["github_user"]} for a in authors if a.get("github_user")]
    else:
        maintainers = _authors(maintainers, "maintainers")
        for m in maintainers:
            if not m.get("github_user"):
                raise ExportError(f"maintainer {m.get('name')!r} needs a github_user")
    model_id = str(src.get("id") or _slug(name))
    if not re.fullmatch(r"[a-z0-9_.\-/]+", model_id) or model_id.startswith("/") or model_id.endswith("/"):
        raise ExportError(f"id {model_id!r}: use lower-case letters, digits, '-', '_', '.'")
    parent = src.get("parent")
    if parent:
        parent = {"id": parent} if isinstance(parent, str) else dict(parent)
        if parent.get("id") == model_id:
            raise ExportError(f"parent id {parent['id']!r} equals this model's id: give the model another id=")
    return Meta(name=name, description=str(description).strip(), authors=authors, license=str(license), tags=tags,
                cite=[dict(c) for c in cite], maintainers=maintainers, version=str(src.get("version") or "0.1.0"),
                id=model_id, git_repo=src.get("git_repo"), parent=parent or None,
                config={k: src[k] for k in _CONFIG_FIELDS if src.get(k)},
                card_text={k: src[k] for k in _CARD_TEXT if src.get(k)})
