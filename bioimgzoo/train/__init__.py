"""Training: wrap a network and a task, measure it, export it as a zoo package.

Public names (imported lazily, so ``import bioimgzoo.train`` does not load torch):

* :class:`Trainer` and :class:`FitResult` (:mod:`.trainer`)
* :class:`SegmentationTask`, :class:`Noise2VoidTask`, :class:`Task` (:mod:`.tasks`)
* :class:`UNet2d` (:mod:`.nets`)
* :func:`finetune` (:mod:`.finetune`)
* :func:`synthetic_nuclei`, :func:`synthetic_noisy_pairs`, :func:`load_folder` (:mod:`.data`)
* :func:`run_demo`, :class:`DemoResult` (:mod:`.demo`)
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Trainer": "trainer", "FitResult": "trainer",
    "Task": "tasks", "SegmentationTask": "tasks", "Noise2VoidTask": "tasks", "get_task": "tasks",
    "UNet2d": "nets",
    "finetune": "finetune",
    "synthetic_nuclei": "data", "synthetic_noisy_pairs": "data", "load_folder": "data",
    "run_demo": "demo", "DemoResult": "demo",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
