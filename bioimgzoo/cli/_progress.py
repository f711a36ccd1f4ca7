"""The progress display of ``bioimgzoo predict``: images, tiles, and the steps after the tiles."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["BatchProgress"]


class BatchProgress:
    """Images and tiles done, with throughput, on stderr (nothing when not a terminal)."""

    def __init__(self, n_images: int):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        console = Console(stderr=True)
        self.bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console, transient=True, disable=not console.is_terminal)
        self.images = self.bar.add_task("Images", total=n_images, rate="")
        self.tiles = self.bar.add_task("Tiles", total=0, rate="")  # grows as each image is planned
        # the steps after the tiles (labels, writing): a line of their own, shown while one runs
        self.after = self.bar.add_task("", total=100, rate="", visible=False)
        self._t0 = time.perf_counter()
        self._n_tiles = 0

    def __enter__(self) -> "BatchProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def planned(self, n_windows: int) -> None:
        self.bar.update(self.tiles, total=(self.bar.tasks[self.tiles].total or 0) + n_windows)

    def windows(self, n: int) -> None:
        self._n_tiles += n
        rate = self._n_tiles / max(time.perf_counter() - self._t0, 1e-9)
        self.bar.update(self.tiles, advance=n, rate=f"{rate:.1f} tiles/s")

    def stage(self, image: str, what: str) -> Callable[[float], None]:
        """Show the step ``what`` of ``image`` after its tiles; returns the call that sets its fraction done."""
        name = Path(image).name
        self.bar.update(self.after, description=f"{what} {name}", completed=0, total=100, visible=True, rate="")

        def done(fraction: float) -> None:
            self.bar.update(self.after, completed=min(max(fraction, 0.0), 1.0) * 100)
        return done

    def decoding(self, image: str, steps: str | None) -> None:
        """The whole-image postprocessing (an instance decoder) of ``image``: shown while it runs."""
        if steps is None:
            self.stage_done()
            return
        self.stage(image, f"Decoding ({steps})")
        self.bar.update(self.after, total=None)  # no fraction to show: a pulse and the elapsed time

    def stage_done(self) -> None:
        self.bar.update(self.after, visible=False)

    def image_done(self) -> None:
        done = self.bar.tasks[self.images].completed + 1
        rate = done / max(time.perf_counter() - self._t0, 1e-9)
        self.bar.update(self.images, advance=1, rate=f"{rate:.2f} images/s" if rate < 1 else f"{rate:.1f} images/s")
