"""What a package declares it depends on, and the message when an architecture misses one.

A ``pytorch_state_dict`` entry may name a dependency file (format 0.5:
``weights.pytorch_state_dict.dependencies``, a conda environment yaml; format
0.4: ``dependencies: conda:environment.yaml`` or ``pip:requirements.txt``, the latter
kept in the raw description since format 0.5 cannot hold it).
:func:`declared_dependencies` reads it into pip requirements and the conda
entries pip cannot install; :func:`missing_dependency_message` is the one
message for an architecture that imports a module this environment lacks
(:mod:`.isolated` runs such a package in an environment of its own).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidDescriptionError, WeightsError

log = logging.getLogger("bioimgzoo")

__all__ = ["Dependencies", "read_dependencies", "declared_dependencies", "missing_dependency_message",
           "index_requirements"]

#: conda entries the current environment provides (torch) or that mean nothing to pip
_PROVIDED = {"python", "pip", "pytorch", "torch", "cpuonly", "cudatoolkit", "pytorch-cuda", "cudnn", "mkl",
             "setuptools", "wheel"}


@dataclass(frozen=True)
class Dependencies:
    """What a dependency file asks for."""

    path: Path
    sha256: str
    #: requirement lines for ``pip install -r`` (options such as ``--find-links`` included)
    pip: tuple[str, ...] = ()
    #: conda entries pip cannot give: not in the file's pip section and not installed here
    conda_only: tuple[str, ...] = ()
    #: conda entries already satisfied by the current environment (or torch/python themselves)
    provided: tuple[str, ...] = field(default=())

    def listing(self) -> str:
        parts = [*(r for r in self.pip if not r.startswith("-")), *(f"{c} (conda)" for c in self.conda_only)]
        return ", ".join(parts) or "nothing beyond torch"

    def install_command(self) -> str:
        """The command that installs the pip-installable part into the current environment.

        Only the lines that are requirement specifiers (see :func:`index_requirements`): a package's pip
        options, paths and URLs are never put into a command a user may copy.
        """
        reqs = []
        for line in self.pip:
            try:
                reqs.extend(index_requirements([line], where=self.path.name))
            except WeightsError:
                continue
        return " ".join(["pip install", *(_quote(r) for r in reqs)]) if reqs else ""


def _quote(req: str) -> str:
    return f"'{req}'" if re.search(r"[<>=!~;\[\] ]", req) else req


def _conda_name(entry: str) -> str:
    name = entry.split("::")[-1]
    return re.split(r"[\s=<>!~\[]", name, maxsplit=1)[0].strip().lower()


def installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


#: file names pip installs from as they are (an archive or a wheel is a path, whatever its folder)
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".egg")


def index_requirements(lines: Sequence[str], *, where: str) -> tuple[str, ...]:
    """The pip lines of a dependency file as plain requirement specifiers, or a refusal naming the first other.

    Installing a package runs its code (build backends, ``setup.py``), so
    :mod:`.isolated` installs only ``name[extras] <version specifiers> ;
    <marker>`` from an index (or a wheel folder the *user* names): a line
    that is a pip option (``--find-links``, ``--index-url``, ``-e``, ``-r``),
    a path, a URL, a VCS reference, a direct reference (``name @ ...``), an
    archive's file name or an environment variable is refused here, before
    pip runs.  Returns the requirements normalised (``str(Requirement)``).

    Raises
    ------
    WeightsError
        Naming the line, what it is, and the way to install local wheels.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for raw in lines:
        line = str(raw).strip()
        if not line or line.startswith("#"):
            continue
        text = re.split(r"\s+#", line, maxsplit=1)[0].strip()  # pip's own inline comments
        why = None
        if text.startswith("-"):
            why = "a pip option (it can point pip at other indexes, folders or files)"
        elif "$" in text:
            why = "an environment variable (pip expands it into a path or URL)"
        else:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                why = ("not a requirement specifier (a path, URL or VCS reference is installed from wherever it "
                       "points)")
            else:
                if req.url:
                    why = "a direct reference (name @ URL or path), installed from wherever it points"
                elif req.name.lower().endswith(_ARCHIVE_SUFFIXES):
                    why = "a file name, which pip installs from the current folder"
                else:
                    out.append(str(req))
                    continue
        raise WeightsError(f"{where} asks pip for {_clip(line)!r}: {why}. Installing a package runs its code, so "
                           "bioimgzoo installs only requirement specifiers (name[extras] and version, e.g. "
                           "'scikit-image>=0.21') from the package index; to install wheels you have, pass their "
                           "folder yourself: wheels=DIR (CLI --wheels DIR)")
    return tuple(out)


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


def read_dependencies(path: str | os.PathLike) -> Dependencies:
    """Parse a conda environment yaml or a pip requirements file.

    In a yaml, the ``pip:`` section's lines are pip requirements; the other
    entries are conda packages: python, pip and torch are provided by the
    current environment, others count as satisfied when a distribution of
    that name is installed here, and are conda-only otherwise (bioimgzoo
    installs nothing with conda).
    """
    from .._yaml import load_yaml

    path = Path(path)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8", errors="replace")
    if path.suffix == ".txt":
        lines = [ln.strip() for ln in text.splitlines()]
        return Dependencies(path, sha, pip=tuple(ln for ln in lines if ln and not ln.startswith("#")))
    env = load_yaml(data, where=path.name)  # untrusted: the same limits as a description
    entries = (env or {}).get("dependencies") if isinstance(env, dict) else None
    if not isinstance(entries, list):
        raise InvalidDescriptionError(f"the dependency file {path.name} has no `dependencies:` list: give a conda "
                                      "environment file (dependencies: [..., {pip: [...]}])")
    pip: list[str] = []
    conda_only: list[str] = []
    provided: list[str] = []
    for item in entries:
        if isinstance(item, dict):
            pip.extend(str(r).strip() for r in (item.get("pip") or []) if str(r).strip())
            continue
        entry = str(item).strip()
        name = _conda_name(entry)
        if name in _PROVIDED or ("::" not in entry and installed(name)):
            provided.append(entry)
        else:
            conda_only.append(entry)
    return Dependencies(path, sha, pip=tuple(pip), conda_only=tuple(conda_only), provided=tuple(provided))


def _dependency_ref(package: Any, weights_format: str) -> Any:
    entry = getattr(package.descr.weights, weights_format, None)
    ref = getattr(entry, "dependencies", None)
    if ref is None:
        # a format 0.4 "pip:requirements.txt" is read without it (0.5 takes conda files only): the raw has it
        raw = ((getattr(package, "raw", None) or {}).get("weights") or {}).get(weights_format)
        ref = raw.get("dependencies") if isinstance(raw, dict) else None
        if not isinstance(ref, str):
            return None
    if isinstance(ref, str) or not hasattr(ref, "source"):  # 0.4: "conda:environment.yaml" / "pip:req.txt"
        text = str(getattr(ref, "file", ref))
        return text.split(":", 1)[1] if re.match(r"^(conda|pip):", text) else text
    return ref


def declared_dependencies(package: Any, weights_format: str = "pytorch_state_dict") -> Dependencies | None:
    """The dependency file of a package's weights entry, read (None when it names none)."""
    ref = _dependency_ref(package, weights_format)
    return None if ref is None else read_dependencies(package.file(ref))


def missing_dependency_message(module: str, package: Any, *, weights_format: str = "pytorch_state_dict",
                               what: str = "architecture") -> str:
    """The message for code of the package that imports ``module``, which is not installed."""
    head = f"the {what} of {getattr(package, 'name', 'this package')} imports {module!r}, which is not installed"
    try:
        deps = declared_dependencies(package, weights_format)
    except Exception as e:  # the message must come out even when the file cannot be read
        deps = None
        log.debug("cannot read the dependency file: %s", e)
    if deps is None:
        return (f"{head}; the package declares no dependencies: pip install {module.split('.')[0]} (if that is the "
                "distribution's name), or use other weights (--weights onnx / torchscript)")
    cmd = deps.install_command()
    fix = f"install them: {cmd}" if cmd else "install them"
    if deps.conda_only:
        fix += f"; conda only: {', '.join(deps.conda_only)} (conda install them, or pip install their pip names)"
    return (f"{head}. The package declares in {deps.path.name}: {deps.listing()}. {fix[0].upper() + fix[1:]}; "
            "or run it in its own environment with isolated=True (CLI --isolated), which installs the pip "
            "ones once into a cached virtual environment")


