"""A progress display over the windows (tiles) of an in-memory prediction, with throughput.

:meth:`bioimgzoo.runtime.model.Model.predict` shows it with
``progress=True``: the total grows as each image is planned (images are
read one at a time), so a big image shows its tiles, not ``0/1``.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TileProgress"]


class TileProgress:
    """Tiles done of tiles planned, tiles/s and time left (rich, on stderr; silent when disabled)."""

    def __init__(self, *, enabled: bool = True, label: str = "Predicting"):
        self.planned = 0
        self.done = 0
        self._start = time.perf_counter()
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(label, total=0, rate="")

    def plan(self, n_windows: int) -> None:
        """An image (sample) was planned: ``n_windows`` more tiles to run."""
        self.planned += n_windows
        if self._bar is not None:
            self._bar.update(self._task, total=self.planned)

    def windows(self, n: int) -> None:
        """``n`` windows ran."""
        self.done += n
        if self._bar is not None:
            rate = self.done / max(1e-9, time.perf_counter() - self._start)
            self._bar.update(self._task, advance=n, rate=f"{rate:.1f} tiles/s")

    def __enter__(self) -> "TileProgress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
