"""Test helpers shared by the test suite and the benchmarks (not part of the public API).

* :mod:`.packages`: tiny model packages built from small torch modules
  (:func:`write_package`, :class:`TensorDef`; the modules ``SameConv``,
  ``Upsample2x``, ``TwoInTwoOut``, ``Conv3d``, ``Classifier``, made on first use).
* :mod:`.zoo_server`: a local stand-in for the bioimage.io server on 127.0.0.1
  (:class:`~.zoo_server.ZooServer`), with injected failures and hostile modes.

Nothing here imports torch until a module is asked for.
"""

from __future__ import annotations

from .packages import TensorDef, write_package

__all__ = ["TensorDef", "write_package", "SameConv", "Upsample2x", "TwoInTwoOut", "Conv3d", "Classifier"]


def __getattr__(name: str):
    from . import packages

    return getattr(packages, name)
