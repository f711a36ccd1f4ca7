"""What the checks of one :func:`~bioimgzoo.validation.check_package` run share.

The context opens the package once, holds the options, and hands out the
local path that bioimageio.spec and bioimageio.core may read, but never for a
package that names a file outside itself: then no check gets a path, so nothing
downstream can read or hash that file, whichever families run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from ._registry import FAILED, Check, Finding

__all__ = ["Context"]


class Context:
    """Shared state of one validation run (a context manager owning a temporary folder).

    Parameters
    ----------
    source : str, os.PathLike or Package
        What :func:`~bioimgzoo.validation.check_package` was given.
    weights : list of str or None
        Weight formats asked for (None: all the package has).
    trust_code : bool
        Whether code the package names may run (:mod:`bioimgzoo.trust`).
    hub_options : dict
        Passed to :func:`bioimgzoo.package.open_package`.
    """

    def __init__(self, source: Any, *, weights: Sequence[str] | None = None, trust_code: bool = False,
                 hub_options: dict | None = None, static: bool = False, reference: str | None = None):
        self.source = source
        self.weights = list(weights) if weights is not None else None
        self.trust_code = trust_code
        self.hub_options = dict(hub_options or {})
        #: a description alone is checked: no file is read, nothing runs
        self.static = static
        #: a second consumer to compare our runtime with (``"core"``) or None
        self.reference = reference
        #: images and arrays for the reports (``"<check>/<what>"`` -> ndarray or (mime, bytes))
        self.artifacts: dict[str, Any] = {}
        #: the stage of each check that ran (``"valid"`` counts failures of earlier stages only)
        self.stage_of: dict[str, int] = {}
        #: the zip's own problems, found before it is opened (see :func:`.files.zip_problems`)
        self.zip_problems: list[dict] = []
        self.pkg: Any = None
        #: why the package could not be opened ("" when it opened)
        self.open_error = ""
        #: why nothing may read the package's files ("" while nothing was refused)
        self.refused = ""
        self.findings: list[Finding] = []
        #: wall seconds per check id (see ``_run._run_check``)
        self.timings: dict[str, float] = {}
        self._scratch: dict[str, Any] = {}
        self._local: Path | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def open(self) -> None:
        """Open the package; on failure keep the reason in :attr:`open_error` (never raise)."""
        from ..errors import InvalidDescriptionError, LimitExceededError, PackageError, PackageNotFoundError
        from ..package import Package, open_package

        if not isinstance(self.source, Package):
            from .files import zip_problems

            # read from the zip's directory alone, before any member is: a hostile zip is reported, not opened
            self.zip_problems = zip_problems(self.source)
            fatal = [p["message"] for p in self.zip_problems if p["fatal"]]
            if fatal:
                self.open_error = fatal[0]
                self.refuse(fatal[0])
                return
        try:
            self.pkg = self.source if isinstance(self.source, Package) else \
                open_package(self.source, **self.hub_options)
        except LimitExceededError as e:
            # a bomb is refused here; handing the same file to bioimageio.spec would set it off
            self.open_error = str(e)
            self.refuse(str(e))
        except InvalidDescriptionError as e:
            self.open_error = str(e)
        except PackageError as e:
            if isinstance(e, PackageNotFoundError) and not self.zip_problems and not _is_file(self.source):
                raise  # nothing to validate: the caller named no package
            # unsafe or ambiguous (several descriptions, a damaged zip): reported, and nothing else reads it
            self.open_error = str(e)
            self.refuse(str(e))

    def refuse(self, reason: str) -> None:
        """Forbid every later check to read the package's files (the first reason is kept)."""
        self.refused = self.refused or reason

    def scratch(self, key: str, make: Callable[[], Any]) -> Any:
        """A value computed once per run and shared by the checks (e.g. a family's parsed files)."""
        if key not in self._scratch:
            self._scratch[key] = make()
        return self._scratch[key]

    @property
    def local(self) -> Path | None:
        """A local path to the package that bioimageio.spec/core can read, or None when refused.

        Folders and zips are read in place; a remote package is first copied (its
        description and the files it names) into a temporary folder.
        """
        if self.pkg is None or self.outside or self.refused:
            return None
        if self._local is None:
            from ..package import FolderSource, ZipSource

            src = self.pkg.source
            if isinstance(src, ZipSource):
                self._local = src.path
            elif isinstance(src, FolderSource):
                self._local = src.root / src.rdf_name
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="bioimgzoo-check-")
                self._local = _local_copy(self.pkg, Path(self._tmp.name))
        return self._local

    @property
    def outside(self) -> list[str]:
        """Messages for the files the package names outside itself (see :func:`.files.files_outside`).

        Computed here, not only by the files family, so that the refusal holds whichever
        families are run: a path is never handed out for a package that names such a file.
        """
        if "files.outside" not in self._scratch and self.pkg is not None:
            from .files import files_outside

            self._scratch["files.outside"] = found = files_outside(self.pkg)
            if found:
                self.refuse(found[0])
        return self._scratch.get("files.outside", [])

    def failed_so_far(self) -> bool:
        """Whether any check has failed in this run."""
        return any(f.status == FAILED for f in self.findings)

    def weight_files(self) -> dict[str, str]:
        """Weight format -> the file its entry names (package-relative, as rdf.yaml writes it)."""
        if self.pkg is None:
            return {}
        out = {}
        for wf, entry in self.pkg.descr.weights:
            if entry is not None:
                src = getattr(entry, "source", None)
                out[wf] = str(getattr(src, "path", None) or src)
        return out

    def broken_weights(self) -> dict[str, str]:
        """Weight format -> why its file cannot be used, from the files family's failures (missing, wrong sha256).

        Such a format fails on its own (reproduction says so); the other formats are still tested.
        """
        files = {ref: wf for wf, ref in self.weight_files().items()}
        out: dict[str, str] = {}
        for f in self.findings:
            if f.status == FAILED and f.family == "files" and f.details.get("file") in files:
                out.setdefault(files[f.details["file"]], f"{f.message} ({f.check})")
        return out

    def _only_broken_weights(self, f: Finding) -> bool:
        """Whether a failed finding is about one weight format's file alone (it does not stop the others)."""
        broken = self.broken_weights()
        if f.family == "files":
            return f.details.get("file") in {self.weight_files().get(wf) for wf in broken}
        return _WEIGHT_CHECKS.get(f.check) in broken

    def unmet(self, check: Check) -> str:
        """Why ``check`` cannot run now ("" when it can)."""
        self.stage_of[check.id] = check.stage
        if self.static and "files" in check.requires:
            return "--static: a description alone is checked, its files are not read"
        for need in check.requires:
            if need == "package" and self.pkg is None:
                return f"the package could not be opened ({_one_line(self.open_error)})"
            if need == "files" and self.local is None:
                return f"its files are not read ({_one_line(self.refused or self.open_error)})"
            if need == "valid":
                # checks of the same stage are independent: a wrong test output does not hide whether
                # the weight formats agree; a failed format, files or safety check stops everything later,
                # but a weight file that is missing or damaged fails its own format only
                failed = sorted({f.check for f in self.findings if f.status == FAILED
                                 and self.stage_of.get(f.check, -1) < check.stage
                                 and not self._only_broken_weights(f)})
                if failed:
                    return f"earlier checks failed ({', '.join(failed)})"
        wf = _WEIGHT_CHECKS.get(check.id)
        if wf is not None and wf in self.broken_weights():
            return f"the {wf} weights file cannot be used: {_one_line(self.broken_weights()[wf])}"
        return ""


#: checks about one weight format's file: skipped (not failed with their own fix) when that file is missing
_WEIGHT_CHECKS = {"safety.onnx": "onnx", "safety.torchscript": "torchscript", "safety.pickle": "pytorch_state_dict"}


def _is_file(source: Any) -> bool:
    """Whether ``source`` names an existing file (a zip whose description could not be found is reported)."""
    try:
        return isinstance(source, (str, os.PathLike)) and Path(source).is_file()
    except (OSError, ValueError):
        return False


def _one_line(text: str) -> str:
    """``text`` on one line, cut to 200 characters: a reason quoted inside another message."""
    line = " ".join((text or "no reason given").split())
    return line if len(line) <= 200 else line[:197] + "..."


def _local_copy(pkg: Any, folder: Path) -> Path:
    """Copy a (remote) package's rdf and the files it names into ``folder``; return the rdf path."""
    from .files import raw_file_refs

    data, name = pkg.source.read_rdf()
    rdf = folder / name
    rdf.write_bytes(data)
    for _, ref in raw_file_refs(pkg.raw):
        if "://" in ref:
            continue
        dest = folder / ref
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        # fetch() keeps the path inside the package; the files family refused any other before this runs
        shutil.copyfile(pkg.source.fetch(ref, sha256=None), dest)
    return rdf
