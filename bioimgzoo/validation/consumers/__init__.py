"""Consumer-tool checkers: will DeepImageJ, Icy, ilastik, QuPath, BiaPy, CAREamics run this package?

:mod:`.readers` opens the package with the readers deployed today (JDLL's
parser, modelled from its source; bioimageio.spec as BiaPy pins it;
bioimageio.core as the zoo's CI runs it) and reports each one's verdict.

One module per tool implements that tool's rules of ``shared/docs/consumer-rules.md``
(ids ``D1``-``D29``, ``I1``-``I5``, ``Q1``-``Q5``, ``B1``-``B5``, ``C1``), read off
the tools' own sources and the zoo CI; where a rule is about numbers the tool's
processing and tiling are simulated in numpy around our runtime's engines.

- :func:`consumer_verdicts` gives one :class:`ConsumerVerdict` per tool: ``passed``,
  ``failed`` with the failed rule ids and a fix per rule, ``not-applicable``, or
  ``skipped``.
- Each rule is also the registered check ``<tool>.<rule>`` (``deepimagej.D8``,
  ``ilastik.I3``) of the tool's family, at stage ``STAGE_CONSUMERS``, so
  :func:`~bioimgzoo.validation.check_package` reports them.

``static=True`` judges the description alone: rules needing a file are skipped
with the reason.  A description bioimageio.spec cannot read still gets the
verdicts of the rules about its raw text.
"""

from __future__ import annotations

from typing import Any, Iterable

from ._base import TOOL_TITLES, TOOLS, ConsumerVerdict, evaluate, open_subject, verdict
from ._base import tools as _registered
# each module registers its tool (and its family) on import
from . import deepimagej, icy, ilastik, qupath, biapy, careamics  # noqa: E402,F401  (order = report order)
from . import readers  # noqa: E402,F401  (the deployed readers; also rules D0, B0, I0 of the tools above)

__all__ = ["TOOLS", "TOOL_TITLES", "ConsumerVerdict", "consumer_verdicts", "verdict"]


def consumer_verdicts(package: Any, *, static: bool = False, tools: Iterable[str] | None = None,
                      build_readers: bool = True) -> dict[str, ConsumerVerdict]:
    """Predict each consumer tool's verdict on a package.

    Parameters
    ----------
    package : Package or anything :func:`~bioimgzoo.package.open_package` accepts
        The package (a description spec refuses is judged on its raw text).
    static : bool
        Judge the description alone: no weights, test tensors or other files are
        read; the rules that need them are ``skipped`` with the reason.
    tools : iterable of str, optional
        Names from :data:`TOOLS` (default: all).
    build_readers : bool
        Build a deployed reader's missing environment (once, from the package index); False: use built
        ones only, the others are ``skipped``.

    Returns
    -------
    dict
        tool name -> :class:`ConsumerVerdict`, in the order of :data:`TOOLS`.
    """
    names = list(TOOLS) if tools is None else list(tools)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown consumer tools {unknown}; known: {list(TOOLS)}")
    subject = open_subject(package, static=static)
    subject.cache["readers:build"] = build_readers
    registered = _registered()
    return {name: verdict(name, evaluate(registered[name], subject)) for name in TOOLS if name in names}
