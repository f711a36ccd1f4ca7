"""The progress display of ``bioimgzoo predict``: images, tiles, and the steps after the tiles.

Three lines of the runtime's one :class:`~bioimgzoo.runtime.progress.Progress`
(shown only on a terminal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..runtime.progress import Progress

__all__ = ["BatchProgress"]


class BatchProgress:
    """Images and tiles done, with throughput, on stderr (nothing when not a terminal)."""

    def __init__(self, n_images: int):
        self.progress = Progress(enabled=None)
        self.images = self.progress.task("Images", total=n_images, unit="images")
        self.tiles = self.progress.task("Tiles", unit="tiles")  # grows as each image is planned
        # the steps after the tiles (labels, writing): a line of their own, shown while one runs
        self.after = self.progress.task("", total=None)
        self.after.hide()

    def __enter__(self) -> "BatchProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.close()

    def planned(self, n_windows: int) -> None:
        self.tiles.add(n_windows)

    def windows(self, n: int) -> None:
        self.tiles.advance(n)

    def stage(self, image: str, what: str) -> Callable[[float], None]:
        """Show the step ``what`` of ``image`` after its tiles; returns the call that sets its fraction done."""
        text = f"{what} {Path(image).name}"
        self.after.describe(text, fraction=0.0)

        def done(fraction: float) -> None:
            self.after.describe(text, fraction=fraction)
        return done

    def decoding(self, image: str, steps: str | None) -> None:
        """The whole-image postprocessing (an instance decoder) of ``image``: shown while it runs."""
        if steps is None:
            self.stage_done()
            return
        self.after.describe(f"Decoding ({steps}) {Path(image).name}")  # no fraction to show: a pulse

    def stage_done(self) -> None:
        self.after.hide()

    def image_done(self) -> None:
        self.images.advance(1)
