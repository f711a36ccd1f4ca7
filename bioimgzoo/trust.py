"""The one trust policy: which code a package may make bioimgzoo run.

A package names Python code in three ways: an architecture file it ships
(``architecture.source``), a library callable (``architecture.import_from``
+ ``callable``), and a custom processing op.  All of it runs only when the
caller trusts the package (``trust_code=True``, CLI ``--trust-code``),
whoever asks: prediction, fine-tuning, validation, or bioimageio.core when we
hand it a description.

The single exception is :data:`TRUSTED_ARCHITECTURES`: network classes that
ship with bioimgzoo itself, named one by one (module *and* callable) and
checked to be that very class object after import.  There is no module
prefix rule: ``bioimgzoo.cli:main`` or ``os:system`` is package-chosen code
like any other.

Packages bioimgzoo writes ship such a network's *source* (its module file,
byte for byte) so that readers lacking bioimgzoo can load it.  That file counts
as allow-listed only when the callable is an allow-listed class's name and
the file's declared sha256 is the sha256 of bioimgzoo's own module file (the
file is verified against it before use); the class is then built from
bioimgzoo's own module and the package's copy never runs.  Any other byte
makes it a package-chosen file like any other (``trust_code`` needed).

Everything here decides; nothing runs package code except
:func:`load_architecture`, after the decision.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import UntrustedCodeError, WeightsError

__all__ = ["TRUSTED_ARCHITECTURES", "own_source", "own_architecture", "CodeRef", "code_refs", "is_trusted", "check_trusted",
           "untrusted_code", "load_architecture", "load_custom_op", "load_callable_from_file"]

#: (module, callable) of the network classes bioimgzoo ships; built without trust.
TRUSTED_ARCHITECTURES: frozenset[tuple[str, str]] = frozenset({
    ("bioimgzoo.train.nets", "UNet2d"),
})


@dataclass(frozen=True)
class CodeRef:
    """One piece of code a package names."""

    #: "architecture file", "library architecture" or "custom op"
    kind: str
    #: where the description names it, e.g. ``weights.pytorch_state_dict.architecture``
    where: str
    #: ``module:callable`` for library code, ``file.py:callable`` for shipped files
    target: str
    module: str | None = None
    callable: str | None = None
    #: the declared sha256 of a shipped file
    sha256: str | None = None

    @property
    def allow_listed(self) -> bool:
        if self.kind == "library architecture":
            return (self.module, self.callable) in TRUSTED_ARCHITECTURES
        if self.kind == "architecture file":
            return own_architecture(self.callable, self.sha256) is not None
        return False


def own_source(module: str) -> bytes:
    """The bytes of bioimgzoo's own module file ``module`` (an allow-listed network's source)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"{module} has no source file")
    return Path(spec.origin).read_bytes()


def _own_sha256(module: str) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(own_source(module)).hexdigest()
    except (ImportError, OSError):
        return None


def own_architecture(callable_name: str | None, sha256: str | None) -> str | None:
    """The allow-listed module whose source file a shipped ``sha256`` is, defining ``callable_name``; else None."""
    if not callable_name or not sha256:
        return None
    for module, name in sorted(TRUSTED_ARCHITECTURES):
        if name == callable_name and _own_sha256(module) == str(sha256).lower():
            return module
    return None


def _architecture_ref(arch: Any, where: str) -> CodeRef:
    name = str(getattr(arch, "callable", "?"))
    if hasattr(arch, "import_from"):
        module = str(arch.import_from)
        return CodeRef("library architecture", where, f"{module}:{name}", module, name)
    sha = getattr(arch, "sha256", None)
    sha = str(sha) if sha else None
    return CodeRef("architecture file", where, f"{getattr(arch, 'source', '?')}:{name}", own_architecture(name, sha),
                   name, sha)


def code_refs(descr: Any, *, weights_format: str | None = None) -> Iterator[CodeRef]:
    """Every piece of code ``descr`` names (for one weights format, or all of them).

    Works on format 0.4 and 0.5 descriptions: architectures of
    ``pytorch_state_dict`` weights and processing ops of kind ``custom``.
    """
    weights = getattr(descr, "weights", None)
    entry = getattr(weights, "pytorch_state_dict", None) if weights is not None else None
    if entry is not None and weights_format in (None, "pytorch_state_dict"):
        arch = getattr(entry, "architecture", None)
        if arch is not None:
            yield _architecture_ref(arch, "weights.pytorch_state_dict.architecture")
        elif getattr(entry, "source", None) is not None and hasattr(descr, "format_version") \
                and str(descr.format_version).startswith("0.4"):
            # 0.4 keeps the architecture as a string "file.py:Name" or "module.Name"
            yield CodeRef("architecture file", "weights.pytorch_state_dict.architecture",
                          str(getattr(entry, "architecture", "?")))
    for kind in ("inputs", "outputs"):
        for t_i, tensor in enumerate(getattr(descr, kind, None) or []):
            for step in ("preprocessing", "postprocessing"):
                for p_i, op in enumerate(getattr(tensor, step, None) or []):
                    op_id = str(getattr(op, "id", None) or getattr(op, "name", "") or "")
                    if op_id == "custom" or "custom" in type(op).__name__.lower():
                        target = f"{getattr(op, 'source', '?')}:{getattr(op, 'callable', '?')}"
                        yield CodeRef("custom op", f"{kind}[{t_i}].{step}[{p_i}]", target)


def is_trusted(ref: CodeRef, *, trust_code: bool) -> bool:
    """True when ``ref`` may run: the caller trusts the package, or it is an allow-listed network."""
    return trust_code or ref.allow_listed


def untrusted_code(descr: Any, *, trust_code: bool, weights_format: str | None = None) -> list[CodeRef]:
    """The code ``descr`` names that may not run under this trust setting (empty: all clear)."""
    return [r for r in code_refs(descr, weights_format=weights_format) if not is_trusted(r, trust_code=trust_code)]


def refusal_message(ref: CodeRef, *, what: str = "this package") -> str:
    if ref.kind == "architecture file":
        doing = f"runs the Python file {ref.target.split(':')[0]} shipped in the package"
    elif ref.kind == "library architecture":
        doing = f"calls {ref.target} as the package says"
    else:
        doing = f"runs the custom processing op {ref.target}"
    return (f"{what} names code to run ({ref.where}): it {doing}, which executes whatever the package's "
            "author chose. Pass trust_code=True (CLI: --trust-code) only if you trust the package, or use "
            "weights that run no code (onnx or torchscript)")


def check_trusted(ref: CodeRef, *, trust_code: bool, what: str = "this package") -> None:
    """Raise :class:`UntrustedCodeError` unless ``ref`` may run."""
    if not is_trusted(ref, trust_code=trust_code):
        raise UntrustedCodeError(refusal_message(ref, what=what))


def load_architecture(arch: Any, *, package: Any, trust_code: bool, where: str = "this package") -> Any:
    """The callable that builds the network of a ``pytorch_state_dict`` entry, after the trust check.

    An allow-listed name must resolve to the very class bioimgzoo ships;
    anything else needs ``trust_code``.
    """
    ref = _architecture_ref(arch, "weights.pytorch_state_dict.architecture")
    check_trusted(ref, trust_code=trust_code, what=where)
    name = str(arch.callable)
    if ref.kind == "library architecture":
        module_name = str(arch.import_from)
        try:
            mod = importlib.import_module(module_name)
        except ImportError as e:
            raise WeightsError(f"the architecture module {module_name!r} is not installed ({e}): "
                               "install the package that provides it, or use other weights") from e
        try:
            factory = getattr(mod, name)
        except AttributeError as e:
            raise WeightsError(f"{module_name} has no {name!r}: the package names a wrong architecture") from e
        if not trust_code and not _is_shipped_class(module_name, name, factory):
            raise UntrustedCodeError(refusal_message(ref, what=where))  # pragma: no cover (name-checked above)
        return factory
    src = package.file(arch)
    if ref.allow_listed and not trust_code:
        # bioimgzoo's own network, shipped as its source: the verified file is our module byte for byte, so
        # the class comes from our module and the package's copy never runs
        import hashlib

        if hashlib.sha256(Path(src).read_bytes()).hexdigest() != _own_sha256(str(ref.module)):
            raise UntrustedCodeError(refusal_message(ref, what=where))
        factory = getattr(importlib.import_module(str(ref.module)), name)
        if not _is_shipped_class(str(ref.module), name, factory):  # pragma: no cover (checked by name)
            raise UntrustedCodeError(refusal_message(ref, what=where))
        return factory
    try:
        return load_callable_from_file(src, name)
    except AttributeError as e:
        raise WeightsError(f"{Path(src).name} defines no {name!r}: the package names a wrong architecture") from e
    except Exception as e:
        raise WeightsError(f"the architecture file {Path(src).name} fails to import: "
                           f"{(str(e).strip() or type(e).__name__).splitlines()[0][:300]}") from e


def load_custom_op(op: Any, *, package: Any, trust_code: bool, where: str = "this package") -> Any:
    """The factory a ``custom`` processing op names (``op.source``, ``op.callable``), after the trust check.

    The file is fetched through ``package.file`` (sha256-verified) and
    imported as by :func:`load_callable_from_file`.
    """
    target = f"{getattr(op, 'source', '?')}:{getattr(op, 'callable', '?')}"
    check_trusted(CodeRef("custom op", "postprocessing", target), trust_code=trust_code, what=where)
    src = package.file(op)
    name = str(op.callable)
    try:
        factory = load_callable_from_file(src, name)
    except AttributeError as e:
        raise WeightsError(f"{Path(src).name} defines no {name!r}: the package names a wrong custom op") from e
    except Exception as e:
        raise WeightsError(f"the custom op file {Path(src).name} fails to import: "
                           f"{(str(e).strip() or type(e).__name__).splitlines()[0][:300]}") from e
    if not callable(factory):
        raise WeightsError(f"{Path(src).name}: {name!r} is not callable: the package names a wrong custom op")
    return factory


def _is_shipped_class(module_name: str, name: str, obj: Any) -> bool:
    """The object is the allow-listed class itself (not something re-exported under its name)."""
    return (module_name, name) in TRUSTED_ARCHITECTURES and isinstance(obj, type) \
        and obj.__module__ == module_name and obj.__qualname__ == name


def load_callable_from_file(path: str | Path, name: str) -> Any:
    """Import ``name`` from a Python file as a fresh module named after the file's content.

    Runs the file's code: callers check trust first.  Raises what importing
    raises (ImportError, SyntaxError, ...) or AttributeError when ``name`` is
    missing; callers translate.
    """
    import hashlib

    path = Path(path)
    mod_name = f"_bioimgzoo_arch_{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(mod_name, str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return getattr(module, name)
