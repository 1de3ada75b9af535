"""What a long run is doing and how long is left, one stage at a time.

On a terminal each stage is a single line redrawn in place (``\\r``) with a bar, the current metrics, the
measured rate and the time left; elsewhere (CI, ``make demo | tee``, log files) the same line is printed as
plain text when the stage starts, every ``interval`` seconds, and when it ends. ``off`` prints nothing.

    progress = Progress.create("auto")            # bar on a TTY, lines otherwise; "off" for tests
    with progress.stage("training", total=2400, unit="step") as stage:
        stage.update(1, loss=1.23, lr=1e-3)
        stage.note("step 600: describe 0.52")     # a line of its own, above the bar

The time left is measured, not guessed: the progress this process has made in the stage divided by the time
it took (a resumed stage counts only what it did itself). The clock is injectable (tests use a fake one).
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, TextIO

from modaverse.durations import format_duration

Mode = Literal["bar", "lines", "off"]
MODES = ("auto", "bar", "lines", "off")  # what ``--progress`` takes
Metric = float | int | str

BAR_WIDTH = 20
REDRAW_EVERY_S = 0.1  # a terminal line is redrawn at most this often (plus on every status change)
LINES_EVERY_S = 20.0  # a plain line per stage this often


def format_metric(value: Metric) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and (abs(value) < 0.01 or abs(value) >= 1e5):
        return f"{value:.1e}"
    return f"{value:.3f}"


def estimate(made: float, elapsed: float, remaining: float | None) -> tuple[float | None, float | None]:
    """(units per second, seconds left) from ``made`` units in ``elapsed`` seconds; None while unknown
    (nothing made yet, no time passed, or no total to count down to)."""
    if made <= 0 or elapsed <= 0:
        return None, None
    rate = made / elapsed
    return rate, (max(0.0, remaining) / rate if remaining is not None else None)


def plural(count: int, unit: str) -> str:
    """``1 step``, ``2400 steps`` (units are given in the singular)."""
    return f"{count} {unit}" if count == 1 or not unit else f"{count} {unit}s"


def format_rate(rate: float, unit: str) -> str:
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{1 / rate:.1f} s/{unit}"


@dataclass(frozen=True)
class Snapshot:
    """One stage at one moment: everything a line shows."""

    label: str
    done: int
    total: int | None
    unit: str
    elapsed: float
    rate: float | None
    left: float | None
    metrics: dict[str, Metric] = field(default_factory=dict)
    status: str = ""


def render_line(s: Snapshot, *, bar: bool, width: int | None = None) -> str:
    """``training [#####---------------] 600/2400 steps 25% | loss 1.234 lr 1.0e-03 | 3.2 step/s | 3:07
    elapsed, ~9:21 left`` (the bar only with ``bar``); cut to ``width`` characters when given."""
    parts = [s.label]
    if s.total:
        fraction = min(1.0, s.done / s.total)
        if bar:
            filled = int(fraction * BAR_WIDTH)
            parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
        parts.append(f"{s.done}/{plural(s.total, s.unit)} {fraction:.0%}")
    elif s.done:
        parts.append(plural(s.done, s.unit))
    line = " ".join(parts)
    if s.status:
        line += f" ({s.status})"
    if s.metrics:
        line += " | " + " ".join(f"{k} {format_metric(v)}" for k, v in s.metrics.items())
    if s.rate is not None and s.unit:
        line += " | " + format_rate(s.rate, s.unit)
    line += f" | {format_duration(s.elapsed)} elapsed"
    if s.total and s.done < s.total:  # (a finished stage has nothing left to estimate)
        line += f", ~{format_duration(s.left)} left" if s.left is not None else ", time left: measuring"
    return line if width is None else line[: max(0, width)]


def _terminal_width() -> int:
    return max(20, shutil.get_terminal_size((100, 24)).columns - 1)


class Progress:
    """Stage displays on one stream (stderr by default). See the module docstring."""

    def __init__(
        self,
        mode: Mode,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = LINES_EVERY_S,
        width: Callable[[], int] = _terminal_width,
    ) -> None:
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.interval = interval
        self.width = width
        self._drawn: str | None = None  # the bar line on screen now (bar mode)
        # Notes may come from another thread (the image generator's lines, trained alongside): one write at a time.
        self._lock = threading.RLock()

    @classmethod
    def create(
        cls,
        mode: str = "auto",
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = LINES_EVERY_S,
    ) -> Progress:
        """``auto``: a bar when ``stream`` is a terminal, plain lines otherwise; ``bar``, ``lines``, ``off``."""
        out = stream if stream is not None else sys.stderr
        chosen: Mode
        if mode == "auto":
            isatty = getattr(out, "isatty", None)
            chosen = "bar" if isatty is not None and isatty() else "lines"
        elif mode in ("bar", "lines", "off"):
            chosen = mode  # type: ignore[assignment]  # narrowed by the test above
        else:
            raise ValueError(f"progress mode {mode!r}: one of {', '.join(MODES)}")
        return cls(chosen, out, clock=clock, interval=interval)

    @classmethod
    def off(cls) -> Progress:
        return cls("off")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def stage(self, label: str, total: int | None = None, *, unit: str = "", initial: int = 0) -> Stage:
        return Stage(self, label, total, unit, initial)

    def note(self, text: str) -> None:
        """A line of its own (above the bar being drawn, if any)."""
        if not self.enabled:
            return
        with self._lock:
            redraw = self._drawn
            self.clear_line()
            self._write(text + "\n")
            if redraw is not None:
                self._draw(redraw)

    # -- output ------------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        with self._lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream must not stop the run
                pass

    def _draw(self, line: str) -> None:
        self._write("\r" + line + "\x1b[K")
        self._drawn = line

    def clear_line(self) -> None:
        """Erase the bar (bar mode) so that another line can be written; the next update redraws it."""
        if self._drawn is not None:
            self._write("\r\x1b[K")
            self._drawn = None

    @contextmanager
    def _logs_clear_the_bar(self) -> Iterator[None]:
        """Log records written to our stream erase the bar first (otherwise they start mid-line)."""
        handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is self.stream
        ]
        guard = _ClearBar(self)
        for handler in handlers:
            handler.addFilter(guard)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(guard)


class _ClearBar(logging.Filter):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear_line()
        return True


class Stage:
    """One step of a run (``with progress.stage(...) as stage``); ``update`` as work is done."""

    def __init__(self, progress: Progress, label: str, total: int | None, unit: str, initial: int) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.unit = unit
        self.initial = initial
        self.done = initial
        self.metrics: dict[str, Metric] = {}
        self.status_text = ""
        self.started = progress.clock()
        self._last_shown = self.started
        self._closed = False
        self._logs = progress._logs_clear_the_bar() if progress.mode == "bar" else None
        if self._logs is not None:
            self._logs.__enter__()
        if progress.mode == "lines":
            what = f" ({plural(self.total - initial, unit)} to go)" if self.total is not None and unit else ""
            progress._write(f"{label}: started{what}\n")
        elif progress.mode == "bar":
            self._redraw()

    def snapshot(self) -> Snapshot:
        elapsed = self.progress.clock() - self.started
        remaining = self.total - self.done if self.total is not None else None
        rate, left = estimate(self.done - self.initial, elapsed, remaining)
        return Snapshot(
            self.label, self.done, self.total, self.unit, elapsed, rate, left, dict(self.metrics), self.status_text
        )

    def update(self, n: int = 1, **metrics: Metric) -> None:
        self.done += n
        self.metrics.update(metrics)
        self._show()

    def status(self, text: str = "") -> None:
        """What the stage is doing besides counting (``evaluating``); empty clears it."""
        self.status_text = text
        self._show(force=True)

    def note(self, text: str) -> None:
        self.progress.note(text)

    def _show(self, force: bool = False) -> None:
        mode = self.progress.mode
        if mode == "off" or self._closed:
            return
        now = self.progress.clock()
        if mode == "bar":
            if force or now - self._last_shown >= REDRAW_EVERY_S or self.progress._drawn is None:
                self._redraw()
        elif now - self._last_shown >= self.progress.interval or (force and self.status_text):
            self.progress._write(render_line(self.snapshot(), bar=False) + "\n")
            self._last_shown = now

    def _redraw(self) -> None:
        self.progress._draw(render_line(self.snapshot(), bar=True, width=self.progress.width()))
        self._last_shown = self.progress.clock()

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self.status_text = ""  # the final line says what was done, not what was last being done
        progress = self.progress
        if progress.mode == "bar":
            self._redraw()
            progress._write("\n")
            progress._drawn = None
        elif progress.mode == "lines":
            s = self.snapshot()
            what = "stopped" if failed else "done"
            if self.unit:
                what += f", {plural(s.done - self.initial, self.unit)}"
            rate = f" ({format_rate(s.rate, self.unit)})" if s.rate is not None and self.unit else ""
            last = " | " + " ".join(f"{k} {format_metric(v)}" for k, v in s.metrics.items()) if s.metrics else ""
            progress._write(f"{self.label}: {what} in {format_duration(s.elapsed)}{rate}{last}\n")
        if self._logs is not None:
            self._logs.__exit__(None, None, None)
            self._logs = None

    def __enter__(self) -> Stage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc_type is not None)
