"""One progress display for predictions: tiles in memory, work units when streaming, images in a batch.

:class:`Progress` shows one or more :class:`Task` lines on stderr with rich
(done of total, a rate, time left); it is silent when disabled or when
stderr is not a terminal, so scripts, tests and pipes see nothing.  A
task's total may grow as work is planned (images are read one at a time,
so a big image shows its tiles, not ``0/1``), and a task may count pixels
beside its items (megapixels/s when streaming).

Used by :meth:`bioimgzoo.runtime.model.Model.predict` (tiles),
:func:`bioimgzoo.runtime.outofcore.predict_lazy` (work units),
``bioimgzoo predict`` (images, tiles, and the steps after the tiles) and
the export's steps.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Progress", "Task"]


class Task:
    """One line of a :class:`Progress`: ``done`` of ``total`` items (and pixels), with a rate and time left."""

    def __init__(self, progress: "Progress", label: str, *, total: float | None, unit: str, pixels_total: int = 0):
        self._progress, self.label, self.unit = progress, label, unit
        self.total, self.done = total, 0
        self.pixels_total, self.pixels = pixels_total, 0
        self._start = time.perf_counter()
        bar = progress.bar
        self._id = bar.add_task(label, total=total, rate="") if bar is not None else None

    def _update(self, **fields: Any) -> None:
        if self._id is not None:
            self._progress.bar.update(self._id, **fields)

    def add(self, n: int) -> None:
        """``n`` more items were planned (the total grows)."""
        self.total = (self.total or 0) + n
        self._update(total=self.total)

    def advance(self, n: int = 1, *, pixels: int = 0) -> None:
        """``n`` items (holding ``pixels`` input pixels) are done."""
        self.done += n
        self.pixels += pixels
        rate = f"{self.megapixels_per_second:.2f} MP/s" if self.pixels_total else \
            f"{self.per_second:.1f} {self.unit}/s"
        self._update(advance=n, rate=rate)

    def describe(self, text: str, *, fraction: float | None = None, visible: bool = True) -> None:
        """Show ``text`` on this line; ``fraction`` done (None: a pulse, no fraction known)."""
        if fraction is None:
            self._update(description=text, total=None, visible=visible)
        else:
            self._update(description=text, total=100, completed=min(max(fraction, 0.0), 1.0) * 100, visible=visible)

    def hide(self) -> None:
        self._update(visible=False)

    @property
    def per_second(self) -> float:
        """Items per second so far."""
        return self.done / max(1e-9, time.perf_counter() - self._start)

    @property
    def megapixels_per_second(self) -> float:
        """Input megapixels per second so far."""
        return self.pixels / 1e6 / max(1e-9, time.perf_counter() - self._start)

    @property
    def eta(self) -> float:
        """Seconds left at the rate so far (by pixels when they are counted, else by items)."""
        if self.pixels_total:
            return (self.pixels_total - self.pixels) / 1e6 / max(1e-9, self.megapixels_per_second)
        return ((self.total or 0) - self.done) / max(1e-9, self.per_second)


class Progress:
    """Progress lines on stderr (rich), started on enter and removed on exit; nothing when disabled.

    Parameters
    ----------
    enabled : bool or None
        Show it; None: only when stderr is a terminal.
    """

    def __init__(self, *, enabled: bool | None = True):
        from rich.console import Console

        console = Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else bool(enabled)
        self.bar = None
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=console, transient=True)
        self._started = False

    def task(self, label: str, *, total: float | None = 0, unit: str = "items", pixels_total: int = 0) -> Task:
        """A new line; ``total`` None for a step with no count (a pulse)."""
        return Task(self, label, total=total, unit=unit, pixels_total=pixels_total)

    def start(self) -> "Progress":
        if self.bar is not None and not self._started:
            self.bar.start()
            self._started = True
        return self

    def close(self) -> None:
        if self.bar is not None and self._started:
            self.bar.stop()
            self._started = False

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
