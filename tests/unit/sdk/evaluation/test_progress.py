"""The progress line: redrawn on a terminal, a plain line every interval otherwise."""

from __future__ import annotations

import io

import pytest

from modaverse.durations import format_duration
from modaverse.evaluation.progress import RunProgress, render


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_render_shows_done_total_rate_time_left_and_failures() -> None:
    assert render(4, 10, 8.0, 4, 1, bar=False) == "eval 4/10 40% | 0.50 rec/s | 8s elapsed, ~12s left | 1 failed"
    assert render(0, 10, 0.0, 0, 0, bar=True).startswith("eval [--------------------] 0/10 0%")
    assert "time left: measuring" in render(3, 10, 5.0, 0, 0, bar=False)  # resumed: 3 done before this run
    assert render(10, 10, 65.0, 10, 0, bar=False).endswith("1:05 elapsed | 0 failed")
    assert "20 s/rec" in render(1, 10, 20.0, 1, 0, bar=False)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.4, "0s"), (42, "42s"), (59.6, "1:00"), (187, "3:07"), (3723, "1:02:03"), (-5, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    """The SDK's eval progress and training's progress show durations alike."""
    assert format_duration(seconds) == text


def test_lines_mode_prints_a_line_every_interval() -> None:
    clock, out = Clock(), io.StringIO()
    progress = RunProgress(5, 1, stream=out, mode="lines", clock=clock, interval=10.0)
    progress.advance()
    clock.now = 11.0
    progress.advance(failed=True)
    clock.now = 12.0
    progress.advance()
    clock.now = 25.0
    progress.tick()  # nothing finished for a while: the line still comes
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "eval: 4 of 5 records to run (1 already done)"
    assert lines[1].startswith("eval 3/5 60%") and lines[1].endswith("1 failed")
    assert lines[2].startswith("eval 4/5 80%") and "25s elapsed" in lines[2]
    assert lines[3].startswith("eval 4/5 80%")  # the closing line
    assert len(lines) == 4


def test_bar_mode_redraws_one_line() -> None:
    clock, out = Clock(), io.StringIO()
    progress = RunProgress(2, stream=out, mode="bar", clock=clock)
    clock.now = 1.0
    progress.advance()
    progress.note("a note")
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 2 and "\r" in text and "a note\n" in text
    assert text.rstrip("\n").split("\r")[-1].startswith("eval [##########----------] 1/2 50%")


def test_auto_mode_is_lines_when_not_a_terminal() -> None:
    assert RunProgress(1, stream=io.StringIO()).mode == "lines"
