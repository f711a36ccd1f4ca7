"""Check a model package: a registry of checks in families, and one report of their findings.

:func:`check_package` runs, on any package :func:`bioimgzoo.open_package`
accepts, the registered checks of each family: one public module of this
package per family, each registering itself (:mod:`._registry`):

- :mod:`.format`: the description parses; bioimageio.spec's errors and warnings in the
  package's own format and after the upgrade to 0.5; metadata completeness,
- :mod:`.files`: zip safety, no file named outside the package (refused before anything
  reads one), every file present with its sha256,
- :mod:`.safety`: the state-dict pickle, shipped Python code, ONNX external data and
  TorchScript archives read without being run,
- :mod:`.reproduction`: the test outputs through bioimgzoo's runtime per weight format
  (and bioimageio.core's ``test_model`` with ``reference="core"``),
- :mod:`.agreement`: weight formats, parametrized sizes, determinism, tiling seams,
- :mod:`.consumers`: the consumer tools' rules (reported beside the status).

:mod:`.report` renders a report as JSON data, Markdown and self-contained HTML.

It returns a :class:`CheckReport` of :class:`Finding` s in one status
vocabulary (``passed``, ``failed``, ``warning``, ``skipped``,
``not-applicable``).  Nothing heavy is imported at package import time.
"""

from __future__ import annotations

from typing import Any

from ._registry import STATUSES, Check, Family, Finding, families, register_family
from ._report import CheckReport
from ._run import CONSUMER_TOOLS, check_package
from .format import spec_findings
from .reproduction import core_reproduction

__all__ = ["check_package", "CONSUMER_TOOLS", "CheckReport", "Finding", "Check", "Family", "STATUSES", "families", "register_family",
           "check_deepimagej", "spec_findings", "core_reproduction"]


def check_deepimagej(source: Any, **hub_options: Any):
    """See :func:`bioimgzoo.validation.consumers.deepimagej.check_deepimagej` (imported on first use)."""
    from .consumers.deepimagej import check_deepimagej as _impl

    return _impl(source, **hub_options)
