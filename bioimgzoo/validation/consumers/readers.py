"""The deployed readers: does the package open with the reader versions consumers run today?

Rules elsewhere predict a tool's verdict; here the readers themselves read the
package (``shared/docs/readers-and-producers.md``):

==============  ======================================================  ==========================================
rule            reader                                                  how
==============  ======================================================  ==========================================
``jdll``        JDLL's ``ModelDescriptor`` (DeepImageJ, Icy)             modelled from JDLL's source (SnakeYAML
                                                                         typing + its Java casts,
                                                                         :mod:`._jdll_parse`), in process
``yaml-1.1``    YAML 1.1 loaders (PyYAML's ``safe_load``, what many     PyYAML, in process: every value typed as
                scripts and older tools read ``rdf.yaml`` with)         bioimageio.spec's YAML 1.2 reads it
``biapy``       bioimageio.spec 0.5.7.4, as BiaPy 3.7.1 pins it         the real package, in its own environment,
                (through bioimageio.core 0.9.6)                         in a subprocess
``zoo-ci``      bioimageio.core 0.10.4 with bioimageio.spec 0.5.10.2    the real packages, likewise
                (the zoo's CI; ilastik's tiktorch)
==============  ======================================================  ==========================================

Each gives ``passed``, ``failed`` naming the reader, its version and the field
it refused, or ``skipped`` with the reason (an environment that is not built
offline, ``BIOIMGZOO_READERS=off``) -- never ``passed`` for a reader that did
not read.  The environments are built once and cached (:mod:`._reader_envs`).
The same results are rules of the tools that run on these readers: ``D0`` of
DeepImageJ and Icy (JDLL), ``B0`` of BiaPy, ``I0`` of ilastik (core 0.10), so
their verdicts include them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping

from .._registry import FAILED, PASSED, SKIPPED
from ._base import NeedsFiles, Subject, tool
from ._reader_envs import EnvUnavailable, ReaderEnv, reader_python
from .deepimagej import render_markdown

__all__ = ["TOOL", "READERS", "ReaderResult", "read_with", "reader_results"]

TOOL = tool("readers", "Deployed readers", order=58, render_markdown=render_markdown)


@dataclass(frozen=True)
class Reader:
    name: str
    title: str
    #: the version in words (env readers: the pins; the installed versions are reported when known)
    version: str
    env: ReaderEnv | None = None


# pydantic<2.14: bioimageio.spec 0.5.x breaks with pydantic 2.14 (its validators' signatures changed)
READERS: dict[str, Reader] = {
    "jdll": Reader("jdll", "JDLL ModelDescriptor (DeepImageJ, Icy)", "dl-modelrunner 0.6.x (modelled)"),
    "yaml-1.1": Reader("yaml-1.1", "YAML 1.1 loader (PyYAML)", "PyYAML"),
    "biapy": Reader("biapy", "bioimageio.spec as BiaPy 3.7.1 pins it", "spec 0.5.7.4",
                    ReaderEnv("biapy-spec", ("bioimageio.spec==0.5.7.4", "pydantic<2.14"))),
    "zoo-ci": Reader("zoo-ci", "bioimageio.core 0.10.4 (zoo CI, ilastik)", "core 0.10.4 / spec 0.5.10.2",
                     ReaderEnv("core-0.10", ("bioimageio.core==0.10.4", "pydantic<2.14"))),
}


@dataclass(frozen=True)
class ReaderResult:
    """One reader's verdict on one package."""

    reader: str
    title: str
    version: str
    status: str
    message: str
    #: the field the reader refused ("" when it did not refuse one)
    field: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _result(r: Reader, status: str, message: str, field: str = "", version: str | None = None) -> ReaderResult:
    return ReaderResult(r.name, r.title, version or r.version, status, message, field)


# ------------------------------------------------------------------------------------------ in process


def _rdf_text(s: Subject) -> bytes:
    return s.once("readers:rdf", lambda: s.pkg.source.read_rdf()[0])


def _jdll(s: Subject, r: Reader) -> ReaderResult:
    from ._jdll_parse import NotModelled, jdll_read

    try:
        failure = jdll_read(_rdf_text(s))
    except NotModelled as e:
        return _result(r, SKIPPED, str(e))
    if failure is None:
        return _result(r, PASSED, "JDLL builds its ModelDescriptor from the description (every cast holds)")
    return _result(r, FAILED, f"{r.title} ({r.version}) refuses {failure.field}: {failure.exception}: "
                              f"{failure.message}", failure.field)


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


def _yaml11(s: Subject, r: Reader) -> ReaderResult:
    import yaml

    from ..._yaml import load_yaml

    text = _rdf_text(s)
    r = Reader(r.name, r.title, f"PyYAML {yaml.__version__}")
    class Yaml11Loader(yaml.SafeLoader):
        def resolve(self, kind, value, implicit):
            # PyYAML's own resolution, except that a scalar of over 1 kB stays a string: a megabyte of
            # base-60 digits ("1:2:3...") would take hours to convert (SnakeYAML has the same limit)
            if kind is yaml.ScalarNode and implicit[0] and len(value) > 1024:
                return self.DEFAULT_SCALAR_TAG
            return super().resolve(kind, value, implicit)

    try:
        old = yaml.load(text, Loader=Yaml11Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        return _result(r, FAILED, f"PyYAML cannot parse the description: {str(e).splitlines()[0]}", "-")
    new = load_yaml(text, "rdf.yaml")
    a, b = dict(_walk(new)), dict(_walk(old))
    differ = []
    for path, v in a.items():
        w = b.get(path, _MISSING)
        if type(v) is not type(w) and not (isinstance(v, (int, float)) and isinstance(w, (int, float))
                                           and not isinstance(v, bool) and not isinstance(w, bool)):
            differ.append((path, v, w))
    if not differ:
        return _result(r, PASSED, "YAML 1.1 reads every value with the type bioimageio.spec (YAML 1.2) reads")
    path, v, w = differ[0]
    more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
    return _result(r, FAILED, f"YAML 1.1 readers ({r.version}) read {path} as {type(w).__name__} {w!r} where "
                              f"YAML 1.2 reads {type(v).__name__} {v!r}{more}: write numbers with a dot "
                              "(1.0e-06) and quote such strings", path)


_MISSING = object()


# ------------------------------------------------------------------------------------------ subprocesses


def _materialise(s: Subject, folder: Path) -> tuple[Path, bool, str]:
    """The package laid out in ``folder`` for a reader: (rdf path, whether its files are there, why not)."""
    from ..files import raw_file_refs

    rdf = folder / "rdf.yaml"
    rdf.write_bytes(_rdf_text(s))
    refs = [ref for _, ref in raw_file_refs(s.raw)]
    if any(ref.lower().startswith(("http://", "https://")) for ref in refs):
        return rdf, False, "the package names remote files (the reader would download them): fields only"
    try:
        for ref in dict.fromkeys(refs):
            rel = PurePosixPath(ref)
            if rel.is_absolute() or ".." in rel.parts:
                return rdf, False, f"{ref} lies outside the package: fields only"
            local = Path(s.file(ref, "package file"))
            dest = folder.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(local.resolve(), dest)
            except OSError:
                import shutil

                shutil.copyfile(local, dest)
    except NeedsFiles as e:
        return rdf, False, f"{e}: fields only"
    return rdf, True, ""


def _in_env(s: Subject, r: Reader) -> ReaderResult:
    from ..format import github_users

    assert r.env is not None
    try:
        python = reader_python(r.env, build=s.cache.get("readers:build", True))
    except EnvUnavailable as e:
        return _result(r, SKIPPED, f"{r.title} ({r.version}) not run: {e}")
    except Exception as e:  # a cache folder that cannot be written, ...
        return _result(r, SKIPPED, f"{r.title} ({r.version}) not run: {type(e).__name__}: {e}")
    worker = Path(__file__).with_name("_reader_worker.py")
    with tempfile.TemporaryDirectory(prefix="bioimgzoo-reader-") as tmp:
        rdf, io_checks, note = _materialise(s, Path(tmp))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        try:
            proc = subprocess.run([str(python), str(worker), str(rdf), "1" if io_checks else "0",
                                   json.dumps(github_users(s.raw))], capture_output=True, text=True, timeout=600,
                                  env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            return _result(r, SKIPPED, f"{r.title} ({r.version}) did not finish reading in 600 s")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[:400]
        return _result(r, FAILED, f"{r.title} ({r.version}) crashed reading the description (exit "
                                  f"{proc.returncode}): {tail}", "-")
    out = json.loads(lines[-1])
    version = f"spec {out['spec']}" + (f", core {out['core']}" if out.get("core") else "")
    suffix = f" ({note})" if note else ""
    if out["errors"]:
        first = dict(out["errors"][0])
        first["loc"] = _field(first["loc"])
        others = [f for f in dict.fromkeys(_field(e["loc"]) for e in out["errors"]) if f != first["loc"]]
        more = f" (also {', '.join(others[:4])})" if others else ""
        return _result(r, FAILED, f"{r.title} ({version}) refuses {first['loc'] or '-'}: {first['msg']}{more}"
                                  f"{suffix}", first["loc"] or "-", version)
    return _result(r, PASSED, f"{r.title} ({version}) opens it: {out['type']}, {out['status']}{suffix}",
                   version=version)


def _prefetch_env_readers(s: Subject) -> None:
    """Run every environment reader at once (each is a subprocess that mostly imports): half the wait."""
    from concurrent.futures import ThreadPoolExecutor

    names = [n for n, r in READERS.items() if r.env is not None and f"reader:{n}" not in s.cache]
    if len(names) < 2:
        return
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = dict(zip(names, pool.map(lambda n: _in_env(s, READERS[n]), names)))
    for n, res in results.items():
        s.cache.setdefault(f"reader:{n}", res)


def _field(loc: str) -> str:
    """pydantic's location without the union branches it tried (``covers.0.function-after[...]`` -> ``covers.0``)."""
    parts = []
    for part in loc.split("."):
        if any(c in part for c in "[(<") or part in ("RelativeFilePath", "HttpUrl"):
            break
        parts.append(part)
    return ".".join(parts) or loc


def _start_env_readers(ctx: Any) -> Callable[[], None] | None:
    """Begin the environment readers in a background thread while the run's network runs.

    Why: each reader is an interpreter importing bioimageio.spec (1 to 2 s) that waits on
    nothing of ours; begun here (the files are judged by then: a refused package gives no
    subject), they overlap reproduction and agreement instead of following them.
    """
    from ._base import subject_of_run

    s = ctx.scratch("consumers.subject", lambda: subject_of_run(ctx))
    if isinstance(s, str) or s.descr is None or "readers:pending" in s.cache:
        return None
    _rdf_text(s)  # read once here, not in two threads
    done = threading.Event()
    s.cache["readers:pending"] = done

    def work() -> None:
        try:
            _prefetch_env_readers(s)
        finally:
            done.set()

    threading.Thread(target=work, name="bioimgzoo-readers", daemon=True).start()
    return done.wait


def read_with(s: Subject, name: str) -> ReaderResult:
    """Reader ``name``'s verdict on the subject's package (computed once per subject)."""
    r = READERS[name]
    pending = s.cache.get("readers:pending")
    if pending is not None:
        pending.wait()
    if r.env is not None and f"reader:{name}" not in s.cache and s.descr is not None:
        _rdf_text(s)  # read once here, not in two threads
        _prefetch_env_readers(s)

    def run() -> ReaderResult:
        if s.descr is None and name in ("biapy", "zoo-ci") and not s.raw:
            return _result(r, SKIPPED, "the description could not be read")
        if name == "jdll":
            return _jdll(s, r)
        if name == "yaml-1.1":
            return _yaml11(s, r)
        return _in_env(s, r)

    return s.once(f"reader:{name}", run)


def reader_results(package: Any, *, static: bool = False) -> list[ReaderResult]:
    """Every reader's verdict on ``package`` (anything :func:`~bioimgzoo.package.open_package` accepts)."""
    from ._base import open_subject

    subject = open_subject(package, static=static)
    return [read_with(subject, name) for name in READERS]


def _rule(name: str):
    def run(s: Subject) -> Iterator[tuple]:
        res = read_with(s, name)
        yield res.status, res.message, {"reader": res.reader, "title": res.title, "version": res.version,
                                        "field": res.field}
    return run


_FIX = ("Re-export the package with bioimgzoo (it writes the oldest format that carries the package, file "
        "references as plain paths, YAML every reader types alike), or fix the field the reader names.")
for _name, _reader in READERS.items():
    TOOL.rule(_name, title=f"{_reader.title} opens the package", fix=_FIX)(_rule(_name))


def _register_on_tools() -> None:
    """The readers as rules of the tools that run on them (their verdicts include the reader's)."""
    from . import biapy, deepimagej, icy, ilastik

    TOOL.family.start(_start_env_readers)
    for t, rule_id, name in ((deepimagej.TOOL, "D0", "jdll"), (icy.TOOL, "D0", "jdll"),
                             (biapy.TOOL, "B0", "biapy"), (ilastik.TOOL, "I0", "zoo-ci")):
        if READERS[name].env is not None:  # the readers that run in an environment of their own
            t.family.start(_start_env_readers)
        if any(rule.id == rule_id for rule in t.rules):
            continue
        r = READERS[name]
        if rule_id == "D0":
            from ._jdll import D0_FIX, D0_TITLE

            t.rule(rule_id, title=D0_TITLE, fix=D0_FIX)(_rule(name))
        else:
            t.rule(rule_id, title=f"{r.title} reads the description", fix=_FIX)(_rule(name))
        # first in the tool's order: a reader that refuses the description comes before every other rule
        t.rules.insert(0, t.rules.pop())
        t.family.checks.insert(0, t.family.checks.pop())


_register_on_tools()
