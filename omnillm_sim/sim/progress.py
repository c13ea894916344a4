"""A terminal progress bar for long runs; silent when the output is not a terminal.

The bar appears only when the stream is a TTY and the run has lasted longer than ``delay``
seconds of wall time (short runs stay quiet), and it is erased when closed. This is the one
place of the simulator that reads the wall clock, and only to decide whether to draw.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable with the fraction done (0..1); draws ``label [#####     ] 42%``."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        delay: float = 1.0,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._label = label
        self._delay = delay
        self._width = width
        self._clock = clock
        self._started = clock()
        self._drawn = False
        isatty = getattr(self._stream, "isatty", None)
        self.enabled = bool(isatty and isatty())

    def __call__(self, fraction: float) -> None:
        if not self.enabled or self._clock() - self._started < self._delay:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        filled = round(fraction * self._width)
        bar = "#" * filled + " " * (self._width - filled)
        self._stream.write(f"\r{self._label} [{bar}] {fraction:4.0%}")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (if one was drawn)."""
        if self._drawn:
            self._stream.write("\r" + " " * (len(self._label) + self._width + 8) + "\r")
            self._stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
