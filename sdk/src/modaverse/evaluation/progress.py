"""The run's progress: one line redrawn in place on a terminal, a plain line every ~10 s elsewhere.

    eval [########------------] 16/40 40% | 0.8 rec/s | 0:20 elapsed, ~0:30 left | 2 failed

The rate and the time left are measured over the records this run finished (not ones a resumed run skipped).
The clock is injectable (tests use a fake one)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from ..durations import format_duration

__all__ = ["RunProgress", "format_duration", "render"]

BAR_WIDTH = 20
REDRAW_EVERY_S = 0.2
LINES_EVERY_S = 10.0


def render(done: int, total: int, elapsed: float, made: int, failed: int, *, bar: bool) -> str:
    """One progress line: ``made`` records were finished by this run in ``elapsed`` seconds."""
    fraction = done / total if total else 1.0
    parts = ["eval"]
    if bar:
        filled = int(min(1.0, fraction) * BAR_WIDTH)
        parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
    line = " ".join(parts) + f" {done}/{total} {fraction:.0%}"
    rate = made / elapsed if made and elapsed > 0 else None
    if rate is not None:
        line += f" | {rate:.2f} rec/s" if rate >= 0.1 else f" | {1 / rate:.0f} s/rec"
    line += f" | {format_duration(elapsed)} elapsed"
    if done < total:
        line += f", ~{format_duration((total - done) / rate)} left" if rate else ", time left: measuring"
    return line + f" | {failed} failed"


class RunProgress:
    """``mode``: "bar" (a terminal), "lines" or "off"; ``auto`` picks bar or lines from ``stream.isatty()``."""

    def __init__(
        self,
        total: int,
        done: int = 0,
        *,
        stream: TextIO | None = None,
        mode: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        interval: float = LINES_EVERY_S,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode {mode!r}: auto, bar, lines or off")
        self.mode = mode
        self.total = total
        self.done = done
        self.made = 0
        self.failed = 0
        self.clock = clock
        self.interval = interval
        self.started = clock()
        self._last = self.started
        self._drawn = False
        if mode == "lines":
            self._write(f"eval: {total - done} of {total} records to run ({done} already done)\n")
        elif mode == "bar":
            self._redraw()

    def line(self, *, bar: bool) -> str:
        return render(self.done, self.total, self.clock() - self.started, self.made, self.failed, bar=bar)

    def advance(self, failed: bool = False) -> None:
        self.done += 1
        self.made += 1
        self.failed += failed
        self.tick()

    def tick(self) -> None:
        """Show the line if it is due (call it now and then: the elapsed time moves while a long record runs)."""
        now = self.clock()
        if self.mode == "bar" and now - self._last >= REDRAW_EVERY_S:
            self._redraw()
        elif self.mode == "lines" and now - self._last >= self.interval:
            self._write(self.line(bar=False) + "\n")
            self._last = now

    def note(self, text: str) -> None:
        """A line of its own (above the bar)."""
        if self.mode == "off":
            return
        if self._drawn:
            self._write("\r\x1b[K")
        self._write(text + "\n")
        if self._drawn:
            self._redraw()

    def close(self) -> None:
        if self.mode == "bar":
            self._redraw()
            self._write("\n")
            self._drawn = False
        elif self.mode == "lines":
            self._write(self.line(bar=False) + "\n")

    def _redraw(self) -> None:
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        self._write("\r" + self.line(bar=True)[:width] + "\x1b[K")
        self._drawn = True
        self._last = self.clock()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the run
            pass
