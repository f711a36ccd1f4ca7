"""The errors bioimgzoo raises, all under one root.

Every error a user can cause ends in exactly one of these, with a message
that names the problem and the fix.  The CLI prints ``str(error)`` and
exits non-zero; it shows a traceback only with ``--debug``.  Exceptions of
other libraries (yaml, pydantic, onnxruntime, torch, httpx, zipfile) are
translated into these at the boundary where they occur.

::

    BioimgzooError
    ├── PackageError                 a package cannot be opened or read
    │   ├── PackageNotFoundError     no such folder / file / URL / id            (also FileNotFoundError)
    │   ├── InvalidDescriptionError  rdf.yaml does not parse or validate         (also ValueError)
    │   ├── IntegrityError           a file's sha256 differs from the rdf        (also ValueError)
    │   └── LimitExceededError       a description, file or download over a safety limit
    ├── UntrustedCodeError           running package code needs trust_code=True  (also PermissionError)
    ├── ConfigError                  a setting (environment variable) has an invalid value (also ValueError)
    ├── WeightsError                 unknown format, corrupt or unloadable weights
    ├── InputError                   wrong axes, channels, dtype, shape, missing input (also ValueError)
    ├── HubError                     talking to the zoo (bioimage.io / a mirror)
    │   ├── ModelNotFoundError       unknown id (with "did you mean ...")
    │   ├── OfflineError             offline mode and the thing is not cached    (also ConnectionError)
    │   └── DownloadError            timeout, connection failure                 (also ConnectionError)
    │       ├── HttpStatusError      the server answered with an error status (``.url``, ``.status``)
    │       └── DeadlineError        a download took longer than allowed         (also TimeoutError)
    ├── ExportError                  a module cannot be packaged
    ├── ValidationFailed             a package fails checks the caller required (``validate(strict=True)``)
    └── TrainingError                training cannot start or continue

As huggingface_hub's errors do, those that are a builtin error too subclass it,
so ``except FileNotFoundError`` or ``except ValueError`` in a caller's code
catches what it would catch from any other library.
"""

from __future__ import annotations

__all__ = [
    "BioimgzooError",
    "PackageError",
    "PackageNotFoundError",
    "InvalidDescriptionError",
    "IntegrityError",
    "UntrustedCodeError",
    "LimitExceededError",
    "ConfigError",
    "WeightsError",
    "InputError",
    "HubError",
    "ModelNotFoundError",
    "OfflineError",
    "DownloadError",
    "HttpStatusError",
    "DeadlineError",
    "ExportError",
    "ValidationFailed",
    "TrainingError",
]


#: the longest message an error shows; the middle of a longer one is cut (a server's listing of 200,000
#: versions must not become a message of megabytes); ``error.args[0]`` keeps the whole text
MAX_MESSAGE_CHARS = 4000


class BioimgzooError(Exception):
    """Root of every error bioimgzoo raises on purpose (its message at most :data:`MAX_MESSAGE_CHARS` long)."""

    def __str__(self) -> str:
        text = super().__str__()
        if len(text) <= MAX_MESSAGE_CHARS:
            return text
        head, tail = MAX_MESSAGE_CHARS * 3 // 4, MAX_MESSAGE_CHARS // 4 - 60
        return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[-tail:]}"


class PackageError(BioimgzooError):
    """A model package cannot be opened or one of its files cannot be read."""


class PackageNotFoundError(PackageError, FileNotFoundError):
    """The given source (folder, file, URL or id) does not exist."""


class InvalidDescriptionError(PackageError, ValueError):
    """The package description (rdf.yaml) does not parse or validate."""


class IntegrityError(PackageError, ValueError):
    """A file's content does not match the sha256 its description declares."""


class UntrustedCodeError(BioimgzooError, PermissionError):
    """Running the package's own Python code was not allowed by the caller."""


class LimitExceededError(PackageError):
    """A package, description or download is larger than a safety limit (see :mod:`bioimgzoo.config`)."""


class ConfigError(BioimgzooError, ValueError):
    """A setting (an environment variable) has a value bioimgzoo cannot use."""


class WeightsError(BioimgzooError):
    """Weights are missing, of an unknown format, corrupt, or cannot be loaded."""


class InputError(BioimgzooError, ValueError):
    """The data given to a model does not fit what the model declares."""


class HubError(BioimgzooError):
    """Talking to the model zoo (bioimage.io or a mirror) failed."""


class ModelNotFoundError(HubError, PackageNotFoundError):
    """The zoo has no model with that id (or version)."""


class OfflineError(HubError, ConnectionError):
    """Offline mode is on and what was asked for is not in the cache."""


class DownloadError(HubError, ConnectionError):
    """A download failed: HTTP error status, timeout or connection failure."""


#: HTTP statuses worth another try (the server is busy or briefly down)
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpStatusError(DownloadError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, url: str, status: int):
        super().__init__(message)
        self.url = url
        self.status = status
        self.transient = status in TRANSIENT_STATUS


class DeadlineError(DownloadError, TimeoutError):
    """A download took longer than ``BIOIMGZOO_DOWNLOAD_DEADLINE`` (never retried: the time is up)."""


class ExportError(BioimgzooError):
    """A module cannot be exported as a zoo package."""


class ValidationFailed(BioimgzooError):
    """A package fails checks that the caller required to pass."""


class TrainingError(BioimgzooError):
    """Training cannot start or continue."""
