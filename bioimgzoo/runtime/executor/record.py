"""The record of a streamed run: which work units are finished, with digests of what was written.

:class:`UnitRecord` is the append-only ``done`` log beside an output store;
:func:`verify_units` checks what it claims against the store before a resumed
run skips anything; :func:`package_key` names a model's package and weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..._files import user_secret
from ...errors import InputError
from .units import WorkUnit

log = logging.getLogger("bioimgzoo")

__all__ = ["UnitRecord", "RECORD_VERSION", "array_digest", "own_folder", "verify_units", "package_key"]


#: version of the ``done`` log's layout (in its first line)
RECORD_VERSION = 2


def array_digest(data: np.ndarray) -> str:
    """sha256 of an array's type, shape and values (C order): what a record says was written."""
    data = np.ascontiguousarray(data)
    h = hashlib.sha256(f"{data.dtype.str} {data.shape}\n".encode())
    h.update(memoryview(data).cast("B"))
    return h.hexdigest()


def own_folder(path: Path) -> Path:
    """``path`` as a real folder of the run (created): never through a symbolic link planted in the store."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{path} is a symbolic link or a file, not a folder bioimgzoo made: the store was changed by "
                         "hand; pass --overwrite to start again")
    path.mkdir(parents=True, exist_ok=True)
    return path


class UnitRecord:
    """The finished work units of one output, in an append-only log (``<out>/.bioimgzoo/done``).

    The log starts with the run's settings (``signature``); resuming with
    other settings is refused.  A unit is logged after all its chunks are
    written and flushed to disk, with a digest of what was written (each
    output's :func:`array_digest`, keyed by this user's secret and bound to
    the settings and the unit): a resumed run skips a unit only when the
    store still holds exactly that (:meth:`verified`), and computes it again
    otherwise.  A cluster's parts are logged the same way (:meth:`mark_part`).
    Lines that do not parse (a torn last line, a hand edit) count for nothing.
    """

    def __init__(self, folder: str | Path, signature: Mapping[str, Any], *, resume: bool):
        self.folder = Path(folder)
        self.path = self.folder / "done"
        self.signature = json.loads(json.dumps({**dict(signature), "record": RECORD_VERSION}, sort_keys=True,
                                               default=str))
        self._bound = json.dumps(self.signature, sort_keys=True).encode()
        self._key = user_secret()
        #: (kind, sample, unit[, output]) -> keyed digest, as logged
        self.logged: dict[tuple, str] = {}
        #: (sample, unit) finished: written in this run, or logged before and verified against the store
        self.done: set[tuple[int, int]] = set()
        self.unreadable = 0
        self._lock = threading.Lock()
        own_folder(self.folder)
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise InputError(f"{self.path} is not a file written by bioimgzoo (a link or a folder): the store was changed by "
                             "hand; pass --overwrite to start again")
        if resume and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
            try:
                head = json.loads(lines[0]) if lines else None
            except ValueError:
                head = None
            if head != self.signature:
                raise InputError(f"cannot resume: {self.path.parent.parent} was started with other settings "
                                 f"(model, input, tile, work unit or options differ, or an older bioimgzoo); pass "
                                 "--overwrite to start again")
            for line in lines[1:]:
                entry = self._parse(line)
                if entry is None:
                    self.unreadable += 1
                else:
                    self.logged[entry[0]] = entry[1]
            if self.unreadable:
                log.warning("%d line(s) of %s do not parse and count for nothing: their units are computed again",
                            self.unreadable, self.path)
        else:
            if resume:
                log.warning("nothing to resume in %s: starting from the beginning", self.folder.parent)
            self.path.write_text(json.dumps(self.signature, sort_keys=True) + "\n")
        self._file = open(self.path, "a")

    @staticmethod
    def _parse(line: str) -> tuple[tuple, str] | None:
        parts = line.split()
        try:
            if len(parts) == 4 and parts[0] == "unit":
                key: tuple = ("unit", int(parts[1]), int(parts[2]))
            elif len(parts) == 5 and parts[0] == "part":
                key = ("part", int(parts[1]), int(parts[2]), parts[3])
            else:
                return None
        except ValueError:
            return None
        digest = parts[-1]
        return (key, digest) if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None

    def _digest(self, key: tuple, digests: Mapping[str, str]) -> str:
        h = hashlib.blake2b(key=self._key, digest_size=32)
        h.update(self._bound)
        h.update(repr(key).encode())
        for oid in sorted(digests):
            h.update(f"\n{oid} {digests[oid]}".encode())
        return h.hexdigest()

    def _append(self, key: tuple, digests: Mapping[str, str]) -> None:
        digest = self._digest(key, digests)
        with self._lock:
            self._file.write(" ".join(map(str, key)) + f" {digest}\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.logged[key] = digest

    def mark(self, sample: int, unit: int, digests: Mapping[str, str]) -> None:
        """Unit ``unit`` of ``sample`` is written: ``digests`` by output id (:func:`array_digest` of each)."""
        self._append(("unit", sample, unit), digests)
        self.done.add((sample, unit))

    def mark_part(self, sample: int, unit: int, output: str, digest: str) -> None:
        """A cluster part (one output of a unit's own tiles) is saved, with its :func:`array_digest`."""
        self._append(("part", sample, unit, output), {output: digest})

    def claims(self, sample: int, unit: int) -> bool:
        """The log says the unit is finished (not yet checked against the store)."""
        return ("unit", sample, unit) in self.logged

    def verified(self, sample: int, unit: int, digests: Mapping[str, str] | None) -> bool:
        """The unit is logged and the store holds what was logged (``digests``: read back now; None: unreadable)."""
        key = ("unit", sample, unit)
        return digests is not None and key in self.logged and self.logged[key] == self._digest(key, digests)

    def part_verified(self, sample: int, unit: int, output: str, digest: str | None) -> bool:
        key = ("part", sample, unit, output)
        return digest is not None and key in self.logged and self.logged[key] == self._digest(key, {output: digest})

    def is_done(self, sample: int, unit: int) -> bool:
        """Written in this run, or verified against the store (:func:`verify_units`)."""
        return (sample, unit) in self.done

    def confirm(self, sample: int, unit: int) -> None:
        """The unit counts as finished: it verified against the store."""
        self.done.add((sample, unit))

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        """The run is complete: drop the log and whatever else the run kept beside it (a cluster's parts)."""
        self.close()
        self.path.unlink(missing_ok=True)
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def verify_units(record: UnitRecord, number: int, units: Sequence[WorkUnit], outputs: Mapping[str, Any]) -> list:
    """The units of sample ``number`` the record claims and the store still holds; logs how many did not verify.

    ``outputs``: the sample's sinks by output id; each must read back what it
    holds (``stored_digest(region)``), else nothing is skipped.
    """
    done, bad = [], 0
    for u in units:
        if not record.claims(number, u.index):
            continue
        try:
            digests = {oid: sink.stored_digest(u.writes[oid]) for oid, sink in outputs.items()}
        except Exception as e:  # noqa: BLE001 -- a chunk that does not decode is a unit to compute again
            log.debug("unit %s of sample %s does not read back: %s", u.index, number, e)
            digests = None
        if record.verified(number, u.index, digests):
            record.confirm(number, u.index)
            done.append(u)
        else:
            bad += 1
    if bad:
        log.warning("%d work unit(s) the record of %s lists as finished do not hold what was written (changed, "
                    "forged or torn): computed again", bad, record.folder.parent)
    return done


def package_key(model: Any) -> str:
    """sha256 of the package's description and chosen weights: what a worker's model is cached by."""
    h = hashlib.sha256()
    try:
        h.update(model.package.source.read_rdf()[0])
    except Exception:  # a source that cannot re-read its rdf: its name is still a key
        h.update(repr(model.package.source).encode())
    h.update(model.weights_format.encode())
    entry = getattr(model.descr.weights, model.weights_format, None)
    h.update(str(getattr(entry, "sha256", "") or "").encode())
    return h.hexdigest()
