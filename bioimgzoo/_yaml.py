"""Parse untrusted YAML (and JSON) descriptions within limits, before any tree is built.

A few kilobytes of nested aliases (``&a [*b, *b, ...]``) describe a tree of
billions of nodes: PyYAML builds it with shared references, but everything
downstream that walks it (pydantic, bioimageio.spec, ``json.dumps``) expands
it.  Deep nesting (``[[[[...]]]]``) exhausts Python's recursion.  So
:func:`load_yaml` first walks the parser's *events* -- a flat stream,
no tree, no recursion -- and counts the nodes the document would expand to
and how deep it nests, refusing it past :func:`bioimgzoo.config.max_yaml_nodes`
and :func:`~bioimgzoo.config.max_yaml_depth`.  Only then is it loaded, with
a loader that also refuses duplicate mapping keys (YAML silently keeps the
last one, so ``sha256`` could be given twice and read differently by two
tools).

:func:`dump_portable_yaml` writes the other way: YAML that every deployed
reader reads back with the same types (YAML 1.2 as bioimageio.spec reads it,
YAML 1.1 as PyYAML reads it, and SnakeYAML's resolution, which JDLL --
DeepImageJ and Icy -- uses).
"""

from __future__ import annotations

import functools
from typing import Any

from . import config
from .errors import BioimgzooError, InvalidDescriptionError, LimitExceededError

__all__ = ["load_yaml", "dump_portable_yaml", "SNAKEYAML_RESOLVERS"]


@functools.lru_cache(maxsize=1)
def _loader_classes():
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: faster, same events

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        # YAML 1.2 core scalars, as bioimageio.spec's own parser reads them: PyYAML's 1.1 rules take
        # "1:30" for a base-60 number (quadratic to build: megabytes of it take hours), "yes" for True
        yaml_implicit_resolvers = _core_schema_resolvers(base)

        def construct_yaml_int(self, node):  # 1.2: "017" is seventeen, octal is spelled "0o17"
            text = self.construct_scalar(node)
            if text[:2] in ("0o", "0x"):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text, 10)

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # "<<: *base" then overriding a key is intended YAML
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise _DuplicateKey(key, seen[key], line)
                        seen[key] = line
                    except TypeError:  # an unhashable key: SafeConstructor reports it
                        continue
            return super().construct_mapping(node, deep=deep)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return yaml, base, StrictLoader


def _core_schema_resolvers(base: Any) -> dict:
    import re

    core = {
        "tag:yaml.org,2002:bool": re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        "tag:yaml.org,2002:int": re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
        "tag:yaml.org,2002:float": re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    }
    resolvers: dict = {}
    for first, entries in base.yaml_implicit_resolvers.items():
        kept = [(tag, rx) for tag, rx in entries if tag not in core]
        if kept:
            resolvers[first] = kept
    for tag, rx in core.items():
        for first in "-+0123456789.tTfF":
            resolvers.setdefault(first, []).append((tag, rx))
    return resolvers


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int):
        super().__init__(f"the key {key!r} appears twice (lines {first} and {again})")


def _check_shape(data: bytes | str, where: str, yaml: Any, loader: Any, max_nodes: int, max_depth: int) -> None:
    """Walk the event stream: refuse alias bombs and deep nesting before anything is built.

    libyaml (the C parser, and PyYAML >= 6.0.4 in every parser) refuses nesting past its own
    depth with its own message, and the C parser does so before handing out the events of a
    deep document, so the message naming ``BIOIMGZOO_MAX_YAML_DEPTH`` would never be reached.
    When the fast parser fails, the events are walked again with PyYAML's pure-Python parser,
    which hands them out one by one (our limit then speaks first); a parser's own refusal of
    depth is reported as our limit in any case.
    """
    try:
        _walk_events(yaml.parse(data, Loader=loader), where, yaml, max_nodes, max_depth)
        return
    except yaml.YAMLError as e:
        error = e
    if loader is not yaml.SafeLoader:
        try:
            _walk_events(yaml.parse(data, Loader=yaml.SafeLoader), where, yaml, max_nodes, max_depth)
        except yaml.YAMLError as e:
            error = e
    problem = str(getattr(error, "problem", None) or "").lower()  # the parser's words, not the document's
    if "nesting" in problem or "depth" in problem:
        raise LimitExceededError(_too_deep(where, max_depth)) from None
    raise error


def _walk_events(parsed: Any, where: str, yaml: Any, max_nodes: int, max_depth: int) -> None:
    # per open container: [nodes inside so far, deepest nesting inside, anchor]
    stack: list[list] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, nesting depth)
    open_anchors: set[str] = set()
    expanded = 0

    def add(nodes: int, depth: int) -> None:
        nonlocal expanded
        expanded += nodes
        if expanded > max_nodes:
            raise LimitExceededError(
                f"{where} expands to more than {max_nodes} YAML nodes (with its aliases resolved): a real "
                "model description has a few thousand. It looks like an alias bomb and is refused; if it is "
                "genuine, raise BIOIMGZOO_MAX_YAML_NODES")
        if len(stack) + depth > max_depth:
            raise LimitExceededError(_too_deep(where, max_depth))
        if stack:
            stack[-1][0] += nodes
            stack[-1][1] = max(stack[-1][1], depth)

    events = (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.MappingEndEvent,
              yaml.SequenceEndEvent, yaml.ScalarEvent, yaml.AliasEvent)
    for ev in parsed:
        if not isinstance(ev, events):
            continue
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            add(1, 1)
            stack.append([0, 0, ev.anchor])
            if ev.anchor:
                open_anchors.add(ev.anchor)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            nodes, depth, anchor = stack.pop()
            if stack:  # the start already counted this container once; hand its contents up
                stack[-1][0] += nodes
                stack[-1][1] = max(stack[-1][1], depth + 1)
            if anchor:
                anchors[anchor] = (nodes + 1, depth + 1)
                open_anchors.discard(anchor)
        elif isinstance(ev, yaml.ScalarEvent):
            add(1, 0)
            if ev.anchor:
                anchors[ev.anchor] = (1, 0)
        else:  # AliasEvent
            if ev.anchor in open_anchors:
                raise InvalidDescriptionError(f"{where} refers to the alias *{ev.anchor} inside its own "
                                              "definition (a recursive structure): not a model description")
            add(*anchors.get(ev.anchor, (1, 0)))  # an undefined alias fails in the loader below


def _too_deep(where: str, max_depth: int) -> str:
    return (f"{where} nests mappings/lists more than {max_depth} levels deep: refused (a real model "
            "description nests fewer than 10). If it is genuine, raise BIOIMGZOO_MAX_YAML_DEPTH")


def load_yaml(data: bytes | str, where: str) -> Any:
    """Parse one YAML/JSON document from an untrusted source, within the configured limits.

    Raises
    ------
    LimitExceededError
        Larger than ``BIOIMGZOO_MAX_RDF_BYTES``, expanding past
        ``BIOIMGZOO_MAX_YAML_NODES`` or nesting past ``BIOIMGZOO_MAX_YAML_DEPTH``.
    InvalidDescriptionError
        Not YAML, recursive aliases, or a mapping with the same key twice.
    """
    max_bytes = config.max_rdf_bytes()
    if len(data) > max_bytes:
        raise LimitExceededError(f"{where} is {len(data)} bytes, more than the {max_bytes} allowed for a "
                                 "description: refused. If it is genuine, raise BIOIMGZOO_MAX_RDF_BYTES")
    yaml, base, strict = _loader_classes()
    try:
        _check_shape(data, where, yaml, base, config.max_yaml_nodes(), config.max_yaml_depth())
        return yaml.load(data, Loader=strict)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as e:
        raise InvalidDescriptionError(f"{where}: {e}. YAML would silently keep the last value; remove one "
                                      "of them") from None
    except yaml.YAMLError as e:
        raise InvalidDescriptionError(f"{where} is not valid YAML: {e}".strip()) from None
    except BioimgzooError:  # our own refusals (InvalidDescriptionError is a ValueError too): as they are
        raise
    except (ValueError, OverflowError) as e:  # e.g. an integer of more digits than Python converts
        raise InvalidDescriptionError(f"{where} holds a value that cannot be read: {str(e)[:200]}") from None
    except RecursionError:  # pragma: no cover (the depth limit comes first)
        raise LimitExceededError(f"{where} nests too deeply to parse: refused") from None


# ------------------------------------------------------------------------------------------------ writing

#: SnakeYAML's implicit resolvers (``org.yaml.snakeyaml.resolver.Resolver``, 1.3x/2.x), in its order: the
#: types JDLL's ``new Yaml().load`` gives plain scalars.  Unlike PyYAML (strict YAML 1.1), it reads
#: ``1e-06`` as a float; like PyYAML, it reads ``yes``/``on`` as booleans and ``2024-01-02`` as a date.
SNAKEYAML_RESOLVERS: tuple[tuple[str, str, str, int], ...] = (
    # (java type, regex, possible first characters, longest value it is tried on)
    ("Boolean", r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
     "yYnNtTfFoO", 10),
    ("Integer", r"^(?:[-+]?0b_*[0-1][0-1_]*|[-+]?0_*[0-7][0-7_]*|[-+]?(?:0|[1-9][0-9_]*)"
                r"|[-+]?0x_*[0-9a-fA-F][0-9a-fA-F_]*|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$", "-+0123456789", 1024),
    ("Double", r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
               r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789.", 1024),
    ("Merge", r"^(?:<<)$", "<", 10),
    ("null", r"^(?:~|null|Null|NULL| )$", "~nN", 10),
    ("null", r"^$", "", 10),
    ("Date", r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?"
             r"(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?"
             r"(?::[0-9][0-9])?))?)$", "0123456789", 50),
)


@functools.lru_cache(maxsize=1)
def _snake_patterns() -> tuple:
    import re

    return tuple((kind, re.compile(rx), first, limit) for kind, rx, first, limit in SNAKEYAML_RESOLVERS)


def snakeyaml_type(text: str) -> str:
    """The Java type SnakeYAML gives the plain (unquoted) scalar ``text``: ``String``, ``Integer``, ..."""
    for kind, rx, first, limit in _snake_patterns():
        if (text[:1] in first if text else first == "") and len(text) <= limit and rx.match(text):
            return kind
    return "String"


def _read_as_non_string(text: str) -> bool:
    """Would some deployed reader take the plain scalar ``text`` for something other than a string?"""
    yaml, base, strict = _loader_classes()
    if snakeyaml_type(text) != "String":
        return True
    for loader in (base, strict):  # YAML 1.1 (PyYAML) and YAML 1.2 core (bioimageio.spec)
        for tag, rx in loader.yaml_implicit_resolvers.get(text[:1] if text else "", []) + \
                loader.yaml_implicit_resolvers.get(None, []):
            if rx.match(text) and tag != "tag:yaml.org,2002:str":
                return True
    return False


def dump_portable_yaml(data: Any) -> str:
    """``data`` (plain dicts, lists, str, int, float, bool, None) as YAML every deployed reader types alike.

    * Floats keep a dot (``1.0e-06``, never ``1e-06``): PyYAML's YAML 1.1 reads ``1e-06`` as a string.
    * A string that any of YAML 1.1, YAML 1.2 core or SnakeYAML would read as a number, boolean, null or
      date (``"1e5"``, ``"yes"``, ``"2.0"``, ``"2024-01-02"``) is quoted.
    * Keys keep their order; no YAML directive is written (SnakeYAML and PyYAML parse YAML 1.1).
    """
    yaml, _, _ = _loader_classes()

    class PortableDumper(yaml.SafeDumper):  # type: ignore[misc, valid-type]
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def represent_str(dumper: Any, value: str) -> Any:
        style = "'" if _read_as_non_string(value) else None
        if "\n" in value:
            style = "|"
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    def represent_float(dumper: Any, value: float) -> Any:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not a finite number: a description holds none")
        text = repr(float(value))
        if "e" in text and "." not in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return dumper.represent_scalar("tag:yaml.org,2002:float", text)

    PortableDumper.add_representer(str, represent_str)
    PortableDumper.add_representer(float, represent_float)
    return yaml.dump(data, Dumper=PortableDumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=4096)
