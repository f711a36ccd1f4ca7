"""The most widely readable form of a model description: the oldest 0.5 format version that carries it.

bioimageio.spec writes its newest format (0.5.12: ``covers`` and
``documentation`` as ``{source, sha256}`` maps).  The readers deployed today
are older: BiaPy 3.7.1 pins bioimageio.spec 0.5.7.4, the zoo's CI and ilastik
run bioimageio.core 0.10 (spec 0.5.10.2), and both refuse those maps; JDLL
(DeepImageJ, Icy) casts ``documentation`` to ``String`` and every cover to
``String``; the live zoo writes 0.5.3 and 0.5.4 most.  So a description built
with bioimageio.spec's classes is *written* in the oldest format whose fields
it uses (:func:`minimum_format_version`), and :func:`readable_rdf` rewrites
what that older format spells differently.  Every 0.5.x reader reads a 0.5.x
description of a lower patch version as its own (the patch version only
bumps), so the result stays valid for today's bioimageio.spec too.

Which format introduced a field (bioimageio.spec's changelog; the last rows
measured against the spec releases 0.5.7.4 and 0.5.10.2, which implement
formats 0.5.7 and 0.5.10):

==========================================================  =======
what the description uses                                   format
==========================================================  =======
format 0.5 at all (JDLL, BiaPy and QuPath read 0.5.0 as    0.5.3
0.4; ``version`` instead of ``version_number``)
``comment`` on a weights entry;                             0.5.4
``config.bioimageio.reproducibility_tolerance``; a ``+``
in the name
``version_comment``; the ``softmax`` op                     0.5.5
``weights.onnx.external_data``                              0.5.6
``clip`` with ``min_percentile``/``max_percentile``         0.5.7
``stardist_postprocessing``, ``cellpose_flow_dynamics``     0.5.10
(absent from spec 0.5.7.4, present in 0.5.10.2)
``covers``/``documentation`` as ``{source, sha256}``        0.5.11
==========================================================  =======

No I/O here: dicts in, dicts out.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator, Mapping

__all__ = ["OLDEST_FORMAT", "LATEST_FORMAT", "FILE_DESCR_FORMAT", "minimum_format_version", "readable_rdf",
           "parse_format_version"]

#: the oldest 0.5 format bioimgzoo writes (see the module docstring)
OLDEST_FORMAT = (0, 5, 3)
#: the newest format this bioimageio.spec knows (written only when asked for)
LATEST_FORMAT = (0, 5, 12)
#: from this format on ``covers``, ``documentation`` and ``icon`` are ``{source, sha256}`` maps
FILE_DESCR_FORMAT = (0, 5, 11)

_OPS = {"softmax": (0, 5, 5), "stardist_postprocessing": (0, 5, 10), "cellpose_flow_dynamics": (0, 5, 10)}


def _text(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def parse_format_version(value: Any) -> tuple[int, int, int]:
    """``"0.5.4"`` -> ``(0, 5, 4)``; raises ValueError for anything but a 0.5 version bioimgzoo can write."""
    text = str(value).strip()
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"format version {value!r} is not MAJOR.MINOR.PATCH (e.g. 0.5.4)")
    v = tuple(int(p) for p in parts)
    if v[:2] != (0, 5) or not OLDEST_FORMAT <= v <= LATEST_FORMAT:  # type: ignore[operator]
        raise ValueError(f"format version {text} cannot be written: bioimgzoo writes 0.5 formats from "
                         f"{_text(OLDEST_FORMAT)} to {_text(LATEST_FORMAT)}")
    return v  # type: ignore[return-value]


def _procs(rdf: Mapping) -> Iterator[tuple[str, Mapping]]:
    for kind, step in (("inputs", "preprocessing"), ("outputs", "postprocessing")):
        for i, t in enumerate(rdf.get(kind) or []):
            for j, p in enumerate((t or {}).get(step) or []):
                if isinstance(p, Mapping):
                    yield f"{kind}[{i}].{step}[{j}]", p


def _needs(rdf: Mapping) -> Iterator[tuple[tuple[int, int, int], str]]:
    """(format version, why) for every field of ``rdf`` newer than :data:`OLDEST_FORMAT`."""
    for fmt, entry in (rdf.get("weights") or {}).items():
        if isinstance(entry, Mapping) and entry.get("comment"):
            yield (0, 5, 4), f"weights.{fmt}.comment"
        if fmt == "onnx" and isinstance(entry, Mapping) and entry.get("external_data"):
            yield (0, 5, 6), "weights.onnx.external_data"
    bio = ((rdf.get("config") or {}).get("bioimageio") or {}) if isinstance(rdf.get("config"), Mapping) else {}
    if isinstance(bio, Mapping) and bio.get("reproducibility_tolerance"):
        yield (0, 5, 4), "config.bioimageio.reproducibility_tolerance"
    if "+" in str(rdf.get("name", "")):
        yield (0, 5, 4), "a '+' in the name"
    if rdf.get("version_comment"):
        yield (0, 5, 5), "version_comment"
    for where, p in _procs(rdf):
        op = str(p.get("id", ""))
        if op in _OPS:
            yield _OPS[op], f"{where}: the {op} op"
        kw = p.get("kwargs") or {}
        if op == "clip" and isinstance(kw, Mapping) and ({"min_percentile", "max_percentile"} & set(kw)):
            yield (0, 5, 7), f"{where}: clip with percentiles"


def minimum_format_version(rdf: Mapping) -> tuple[tuple[int, int, int], list[str]]:
    """The oldest format that carries ``rdf`` (a 0.5 description as a dict) and the fields that need it."""
    needed, why = OLDEST_FORMAT, []
    for version, field in _needs(rdf):
        if version > needed:
            needed, why = version, [field]
        elif version == needed and version > OLDEST_FORMAT:
            why.append(field)
    return needed, why


def _plain(value: Any) -> Any:
    """A file description ``{source, sha256}`` as the plain path string of formats before 0.5.11."""
    if isinstance(value, Mapping) and "source" in value:
        return value["source"]
    return value


def readable_rdf(rdf: Mapping, *, format_version: Any = None) -> tuple[dict, str, list[str]]:
    """``rdf`` (a 0.5 description dict as bioimageio.spec dumps it) in the oldest format that carries it.

    Parameters
    ----------
    rdf : mapping
        The description, e.g. ``get_package_content(descr)["rdf.yaml"]``.
    format_version : str, optional
        Write this format instead (``"0.5.12"``); it must not be older than what the
        description needs.

    Returns
    -------
    rdf : dict
        A new dict: ``format_version`` set; before 0.5.11 ``covers``, ``documentation`` and
        ``icon`` as plain relative paths.
    format_version : str
    reasons : list of str
        The fields that need that format (empty for :data:`OLDEST_FORMAT`).

    Raises
    ------
    ValueError
        ``format_version`` is not a writable 0.5 version, or older than the fields need.
    """
    needed, why = minimum_format_version(rdf)
    if format_version is None:
        target = needed
    else:
        target = parse_format_version(format_version)
        if target < needed:
            raise ValueError(f"format {_text(target)} cannot carry this description: {', '.join(why)} need(s) "
                             f"format {_text(needed)} or later")
        why = [f"asked for format {_text(target)}"]
    out = copy.deepcopy(dict(rdf))
    out["format_version"] = _text(target)
    if target < FILE_DESCR_FORMAT:
        if "covers" in out:
            out["covers"] = [_plain(c) for c in out["covers"] or []]
        for key in ("documentation", "icon"):
            if key in out:
                out[key] = _plain(out[key])
    # the key order readers (and people) expect first
    head = [k for k in ("format_version", "type", "id", "name", "description") if k in out]
    return {**{k: out[k] for k in head}, **{k: v for k, v in out.items() if k not in head}}, _text(target), why
