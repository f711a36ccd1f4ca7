"""How JDLL reads ``rdf.yaml``, modelled from its source: SnakeYAML's typing, then its Java casts.

JDLL (``io.bioimage.modelrunner``, which DeepImageJ 3.x and Icy run on) loads
the description with ``new Yaml().load(...)`` into a ``Map<String, Object>``
(SnakeYAML: YAML 1.1 resolution with its own number patterns, see
:data:`bioimgzoo._yaml.SNAKEYAML_RESOLVERS`) and builds its
``ModelDescriptor`` by casting the values (``ModelDescriptorFactory.fromMap``,
``ModelDescriptor.buildModelDescription``, ``ModelDescriptorV05``,
``TensorSpecV05``, ``AxisV05``, ``AxisSize``, ``ModelWeight`` and the weights
classes, ``DeepImageJExecutionConfig``; then ``DownloadModel`` iterates the
covers as ``String`` and the processing transformations' setters read their
kwargs).  A value of another Java type than the cast expects throws
(``ClassCastException``, ``NullPointerException`` on a missing value that is
dereferenced, ``IllegalArgumentException`` where JDLL checks): the model does
not load.  :func:`jdll_read` replays those steps on the YAML text and returns
the first exception JDLL would throw, with the field, or None.

Read off JDLL's ``main`` branch (July 2026; the casts are those of the
``dl-modelrunner-0.6.x`` line).  Special routes (StarDist, Cellpose models) and
network calls (the BioEngine look-up) are not modelled.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["JdllFailure", "NotModelled", "jdll_read", "snakeyaml_load", "java_type"]

_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1


@dataclass(frozen=True)
class JdllFailure:
    """The exception JDLL throws reading a description."""

    #: ``ClassCastException``, ``NullPointerException``, ``IllegalArgumentException`` or ``YAMLException``
    exception: str
    #: where in the description (``covers[0]``, ``inputs[0].axes[2].size``)
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.exception} at {self.field}: {self.message}"


class NotModelled(Exception):
    """The description takes a path through JDLL that is not replayed (format 0.4)."""


class _Throw(Exception):
    def __init__(self, exception: str, field: str, message: str):
        super().__init__(message)
        self.failure = JdllFailure(exception, field, message)


def java_type(v: Any) -> str:
    """The Java class SnakeYAML gives a loaded value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "java.lang.Boolean"
    if isinstance(v, int):
        return "java.lang.Integer" if _INT_MIN <= v <= _INT_MAX else \
            "java.lang.Long" if -(2 ** 63) <= v < 2 ** 63 else "java.math.BigInteger"
    if isinstance(v, float):
        return "java.lang.Double"
    if isinstance(v, str):
        return "java.lang.String"
    if isinstance(v, (datetime.date, datetime.datetime)):
        return "java.util.Date"
    if isinstance(v, list):
        return "java.util.ArrayList"
    if isinstance(v, Mapping):
        return "java.util.LinkedHashMap"
    return type(v).__name__


@functools.lru_cache(maxsize=1)
def _snake_loader():
    import re

    import yaml

    from ..._yaml import SNAKEYAML_RESOLVERS

    tags = {"Boolean": "tag:yaml.org,2002:bool", "Integer": "tag:yaml.org,2002:int",
            "Double": "tag:yaml.org,2002:float", "Merge": "tag:yaml.org,2002:merge", "null": "tag:yaml.org,2002:null",
            "Date": "tag:yaml.org,2002:timestamp"}

    limits = {}

    class SnakeLoader(yaml.SafeLoader):
        yaml_implicit_resolvers: dict = {}

        def resolve(self, kind, value, implicit):  # SnakeYAML tries a pattern only on values up to its limit
            if kind is yaml.ScalarNode and implicit[0]:
                first = value[:1] if value else ""
                for tag, rx in self.yaml_implicit_resolvers.get(first, []):
                    if len(value) <= limits.get((tag, first), 1024) and rx.match(value):
                        return tag
                return self.DEFAULT_SCALAR_TAG
            return super().resolve(kind, value, implicit)

    for kind, rx, first, limit in SNAKEYAML_RESOLVERS:
        for ch in (first or [""]):
            SnakeLoader.yaml_implicit_resolvers.setdefault(ch, []).append((tags[kind], re.compile(rx)))
            limits[(tags[kind], ch)] = limit

    def construct_float(loader, node):  # SnakeYAML's float: Double.valueOf after removing '_' (also 1e-06)
        text = loader.construct_scalar(node).replace("_", "")
        low = text.lower()
        if low.endswith(".inf"):
            return float("-inf") if text.startswith("-") else float("inf")
        if low == ".nan":
            return float("nan")
        if ":" in text:
            return yaml.SafeLoader.construct_yaml_float(loader, node)
        return float(text)

    SnakeLoader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return SnakeLoader


def snakeyaml_load(text: str | bytes) -> Any:
    """``text`` loaded with SnakeYAML's scalar types (bool, int, float, str, None, date, list, dict)."""
    import yaml

    return yaml.load(text, Loader=_snake_loader())  # noqa: S506 (a SafeLoader subclass)


# ------------------------------------------------------------------------------------------- the casts


def _string(v: Any, field: str) -> str | None:
    """``(String) v``."""
    if v is None or isinstance(v, str):
        return v
    raise _Throw("ClassCastException", field, f"class {java_type(v)} cannot be cast to class java.lang.String "
                                              f"(the value {v!r})")


def _map(v: Any, field: str) -> Mapping | None:
    """``(Map<String, Object>) v``."""
    if v is None or isinstance(v, Mapping):
        return v
    raise _Throw("ClassCastException", field, f"class {java_type(v)} cannot be cast to class java.util.Map")


def _list(v: Any, field: str) -> list | None:
    """``(List<?>) v``."""
    if v is None or isinstance(v, list):
        return v
    raise _Throw("ClassCastException", field, f"class {java_type(v)} cannot be cast to class java.util.List")


def _number(v: Any, field: str) -> Any:
    """``(Number) v``."""
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return v
    raise _Throw("ClassCastException", field, f"class {java_type(v)} cannot be cast to class java.lang.Number")


def _boolean(v: Any, field: str) -> bool:
    """``(boolean) v`` (unboxing: null throws too)."""
    if isinstance(v, bool):
        return v
    if v is None:
        raise _Throw("NullPointerException", field, "null unboxed to boolean")
    raise _Throw("ClassCastException", field, f"class {java_type(v)} cannot be cast to class java.lang.Boolean")


def _strings(v: Any) -> list | None:
    """``castListStrings``: a list is taken unchecked (its elements are cast where JDLL reads them), a String
    becomes a one-element list, anything else null."""
    if isinstance(v, str):
        return [v]
    return v if isinstance(v, list) else None


def _authors(v: Any, field: str) -> None:
    if not isinstance(v, list):
        return
    for i, a in enumerate(v):
        if isinstance(a, Mapping):  # Author.build(String affiliation, email, github_user, name, orcid)
            for key in ("affiliation", "email", "github_user", "name", "orcid"):
                _string(a.get(key), f"{field}[{i}].{key}")


_NUMERIC_KWARGS = {"eps", "threshold", "min", "max", "gain", "offset", "mean", "std", "min_percentile",
                   "max_percentile"}


def _kwargs(kw: Mapping, field: str) -> None:
    """The transformations' setters: a number is an Integer, a Double or a String Double.valueOf parses;
    list elements are Integer or Double; axes are a String or a list of Strings."""
    for key, value in kw.items():
        where = f"{field}.{key}"
        if key in _NUMERIC_KWARGS:
            values = value if isinstance(value, list) else [value]
            for x in values:
                ok = (isinstance(x, (int, float)) and not isinstance(x, bool) and java_type(x) in (
                    "java.lang.Integer", "java.lang.Double")) or (isinstance(x, str) and not isinstance(value, list)
                                                                  and _parses_as_double(x))
                if isinstance(x, list) and key in ("mean", "std", "gain", "offset"):
                    ok = all(java_type(y) in ("java.lang.Integer", "java.lang.Double") for y in x)
                if not ok:
                    raise _Throw("IllegalArgumentException", where,
                                 f"'{key}' must be an Integer or a Double (or a number as a String); got "
                                 f"{java_type(x)} {x!r}")
        elif key in ("axes", "axis") and value is not None:
            if isinstance(value, list):
                for i, x in enumerate(value):
                    if not isinstance(x, str):
                        raise _Throw("IllegalArgumentException", f"{where}[{i}]",
                                     f"axes must be Strings; got {java_type(x)} {x!r}")
            elif not isinstance(value, str):
                raise _Throw("IllegalArgumentException", where, f"axes must be a String or a list of Strings; got "
                                                                f"{java_type(value)}")


def _parses_as_double(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")  # Java spells them otherwise


def _axis(a: Any, field: str) -> None:
    if not isinstance(a, Mapping):
        raise _Throw("IllegalArgumentException", field, "The input argument should be a list of maps")
    aid = _string(a.get("id"), f"{field}.id")
    atype = _string(a.get("type"), f"{field}.type")
    names = _list(a.get("channel_names"), f"{field}.channel_names")
    if a.get("description") is not None:
        _string(a.get("description"), f"{field}.description")
    if a.get("concatenable") is not None:
        _boolean(a.get("concatenable"), f"{field}.concatenable")
    if a.get("scale") is not None:
        _number(a.get("scale"), f"{field}.scale")
    if a.get("halo") is not None:
        _number(a.get("halo"), f"{field}.halo")
    size = a.get("size")
    if isinstance(size, (int, float)) and not isinstance(size, bool) and java_type(size) != "java.lang.Integer":
        # AxisSize: ``min = (int) object`` unboxes an Integer only
        raise _Throw("ClassCastException", f"{field}.size", f"class {java_type(size)} cannot be cast to class "
                                                           "java.lang.Integer")
    if isinstance(size, Mapping):
        for key in ("tensor_id", "axis_id"):
            if size.get(key) is not None and not isinstance(size.get(key), str):
                raise _Throw("IllegalArgumentException", f"{field}.size.{key}",
                             f"JDLL ignores a {java_type(size.get(key))} reference (it reads Strings only), so the "
                             "size is computed wrongly")
    if aid is None and atype is None:
        raise _Throw("IllegalArgumentException", field, "Either 'type' or 'id' must be defined for each axis")
    if aid is None and atype == "space":
        raise _Throw("IllegalArgumentException", field, "When axis type is 'space', an 'id' must be defined")
    if atype is None and aid is not None:
        raise _Throw("NullPointerException", f"{field}.type", "the axis has no type (type.equals(\"batch\"))")
    if atype == "batch":
        return
    if (aid == "channel" or atype == "channel") and names is None:
        raise _Throw("NullPointerException", f"{field}.channel_names", "a channel axis without channel_names "
                                                                       "(channelNames.size())")
    if names is not None:
        for i, x in enumerate(names):
            _string(x, f"{field}.channel_names[{i}]")


def _tensor(t: Any, field: str, tensor_ids: set) -> None:
    if not isinstance(t, Mapping):
        return  # skipped by JDLL
    tid = _string(t.get("id") if t.get("id") is not None else t.get("name"), f"{field}.id")
    axes = t.get("axes")
    if not isinstance(axes, list):
        raise _Throw("IllegalArgumentException", f"{field}.axes", f"Invalid tensor specifications for '{tid}'. "
                                                                  "The axes are incorrectly specified")
    for i, a in enumerate(axes):
        _axis(a, f"{field}.axes[{i}]")
    _string(t.get("description"), f"{field}.description")
    for step in ("preprocessing", "postprocessing"):
        procs = _list(t.get(step), f"{field}.{step}")
        for j, p in enumerate(procs or []):
            where = f"{field}.{step}[{j}]"
            p = _map(p, where)
            if p is None:
                raise _Throw("NullPointerException", where, "a null processing step")
            if p.get("id") == "ensure_dtype":
                continue
            _string(p.get("name") if p.get("name") is not None else p.get("id"), f"{where}.id")
            kw = _map(p.get("kwargs"), f"{where}.kwargs")
            if kw:
                _kwargs(kw, f"{where}.kwargs")
    for key in ("test_tensor", "sample_tensor"):
        v = t.get(key)
        if v is not None and not (isinstance(v, Mapping) and isinstance(v.get("source"), str)):
            if key == "test_tensor":
                raise _Throw("IllegalArgumentException", f"{field}.{key}",
                             f"JDLL reads a format 0.5 test tensor as a map with a String 'source'; {java_type(v)} "
                             "is ignored and the model has no test tensor")
    data = t.get("data")
    if isinstance(data, Mapping):
        for key in ("type", "unit"):
            if data.get(key) is not None and not isinstance(data.get(key), str):
                raise _Throw("IllegalArgumentException", f"{field}.data.{key}",
                             f"JDLL ignores a {java_type(data.get(key))} data {key} (it reads Strings only)")
    if tid is not None:
        tensor_ids.add(tid)


def _weights(w: Any) -> None:
    w = _map(w, "weights")
    if w is None:
        raise _Throw("NullPointerException", "weights", "no weights (ModelWeight.build(null).keySet())")
    for fmt, entry in w.items():
        entry = _map(entry, f"weights.{fmt}")
        if entry is None:
            continue
        arch = entry.get("architecture")
        if isinstance(arch, Mapping):
            kw = arch.get("kwargs")
            if kw is not None and not isinstance(kw, Mapping):
                raise _Throw("IllegalArgumentException", f"weights.{fmt}.architecture.kwargs",
                             "JDLL ignores kwargs that are not a map")
        deps = entry.get("dependencies")
        if isinstance(deps, Mapping):
            _string(deps.get("source"), f"weights.{fmt}.dependencies.source")


def _config(cfg: Any) -> None:
    cfg = _map(cfg, "config")
    if cfg is None:
        return
    dij = _map(cfg.get("deepimagej"), "config.deepimagej")
    if dij is not None:
        for key in ("pyramidal_model", "allow_tiling"):
            if key in dij:
                _boolean(dij[key], f"config.deepimagej.{key}")
        _map(dij.get("test_information"), "config.deepimagej.test_information")
        _map(dij.get("prediction"), "config.deepimagej.prediction")


def _halos(d: Mapping, inputs: list) -> None:
    """``calculateTotalInputHalo``: an output axis with a halo finds its referenced input."""
    ids = {str(t.get("id") or t.get("name")) for t in inputs if isinstance(t, Mapping)}
    for i, t in enumerate(d.get("outputs") or []):
        if not isinstance(t, Mapping):
            continue
        for j, a in enumerate(t.get("axes") or []):
            if isinstance(a, Mapping) and a.get("halo") and isinstance(a.get("size"), Mapping):
                ref = a["size"].get("tensor_id")
                if isinstance(ref, str) and ref not in ids:
                    raise _Throw("NullPointerException", f"outputs[{i}].axes[{j}].size.tensor_id",
                                 f"the referenced input {ref!r} does not exist (findInputTensor returns null)")


def _descriptor(d: Any) -> None:
    if not isinstance(d, Mapping):
        raise _Throw("ClassCastException", "-", f"the document is a {java_type(d)}, not a map")
    fv = d.get("format_version")
    if not isinstance(fv, str):
        raise _Throw("IllegalArgumentException", "format_version",
                     "Incorrect format, missing 'format_version' field." if fv is None else
                     f"format_version is a {java_type(fv)}, not a String: read as missing")
    if not fv.startswith(("0.4", "0.5")):
        raise _Throw("IllegalArgumentException", "format_version",
                     "JDLL only supports the Bioimage.io model specs 0.4 and 0.5.")
    if fv.startswith("0.4"):
        raise NotModelled("a format 0.4 description is read by JDLL's ModelDescriptorV04, which is not replayed "
                          "here (only format 0.5)")
    # buildModelDescription: the keys in sorted order
    for key in sorted(k for k in d if isinstance(k, str)):
        v = d[key]
        if key in ("format_version", "name", "description", "id", "license", "documentation", "git_repo", "type"):
            _string(v, key)
        elif key == "timestamp" and v is None:
            raise _Throw("NullPointerException", key, "timestamp is null (toString())")
        elif key in ("authors", "maintainers", "packaged_by"):
            _authors(v, key)
        elif key in ("tags", "links", "covers"):
            _strings(v)
    cite = d.get("cite")
    if isinstance(cite, list):
        for i, c in enumerate(cite):
            if isinstance(c, Mapping):
                for k in ("text", "doi", "url"):
                    _string(c.get(k), f"cite[{i}].{k}")
    tensor_ids: set = set()
    inputs = d.get("inputs") if isinstance(d.get("inputs"), list) else []
    for kind in ("inputs", "outputs"):
        for i, t in enumerate(d.get(kind) if isinstance(d.get(kind), list) else []):
            _tensor(t, f"{kind}[{i}]", tensor_ids)
    _weights(d.get("weights"))
    _config(d.get("config"))
    att = d.get("attachments")
    if isinstance(att, list):
        for i, a in enumerate(att):
            if isinstance(a, Mapping) and "source" in a:
                _string(a.get("source"), f"attachments[{i}].source")
    _halos(d, inputs)
    if d.get("name") is None:
        raise _Throw("NullPointerException", "name", "no name (getName().equals(...) in addBioEngine)")
    # the id: config.bioimageio.nickname, else id; modelID.length() dereferences it
    cfg = d.get("config")
    nick = None
    if isinstance(cfg, Mapping) and isinstance(cfg.get("bioimageio"), Mapping):
        nick = _string(cfg["bioimageio"].get("nickname"), "config.bioimageio.nickname")
    model_id = d.get("id") if isinstance(d.get("id"), str) else None
    if model_id is None and nick is None:
        if cfg is not None:
            raise _Throw("NullPointerException", "id", "neither 'id' nor 'config.bioimageio.nickname' is set while "
                                                       "'config' exists (modelID.length())")
    # DownloadModel: ``for (String ss : descriptor.getCovers())``
    covers = _strings(d.get("covers"))
    if covers is None:
        raise _Throw("NullPointerException", "covers", "no covers list (DownloadModel iterates it)")
    for i, c in enumerate(covers):
        _string(c, f"covers[{i}]")


def jdll_read(text: str | bytes) -> JdllFailure | None:
    """What JDLL throws reading ``rdf.yaml`` of this ``text`` (None: it builds its ModelDescriptor).

    Raises :class:`NotModelled` for a description JDLL reads along a path not replayed here.
    """
    import yaml

    try:
        data = snakeyaml_load(text)
    except yaml.YAMLError as e:
        return JdllFailure("YAMLException", "-", str(e).splitlines()[0][:200])
    try:
        _descriptor(data)
    except _Throw as t:
        return t.failure
    return None
