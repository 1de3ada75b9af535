"""The progress display of long runs (``make demo``'s first training): formatting, the time-left estimate, the
terminal and plain-line modes, and the CLI switch. A fake clock drives time: nothing here sleeps or measures."""

from __future__ import annotations

import io
import logging

import pytest

from modaverse_training.cli import _progress_mode, build_parser
from modaverse_training.progress import Progress, Snapshot, estimate, format_metric, render_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows: each line is what the last ``\\r`` left on it (erase codes removed)."""
    return [line.split("\r")[-1].replace("\x1b[K", "") for line in raw.split("\n")]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# Formatting and the estimate ---------------------------------------------------------------------------------


def test_format_metric_keeps_small_learning_rates_readable() -> None:
    assert format_metric(1.23456) == "1.235"
    assert format_metric(0.001) == "1.0e-03"
    assert format_metric(0.0) == "0.000"
    assert format_metric(12) == "12" and format_metric("image") == "image"


def test_estimate_divides_what_is_left_by_the_measured_rate() -> None:
    assert estimate(0, 10.0, 100) == (None, None)  # nothing done yet: unknown, not infinite
    assert estimate(5, 0.0, 100) == (None, None)
    rate, left = estimate(30, 10.0, 90)
    assert rate == pytest.approx(3.0) and left == pytest.approx(30.0)
    assert estimate(30, 10.0, None) == (3.0, None)  # no total: a rate but no time left
    assert estimate(30, 10.0, -4) == (3.0, 0.0)  # overshoot: nothing left


def test_render_line_shows_stage_counts_metrics_rate_and_time_left() -> None:
    snap = Snapshot("training", 600, 2400, "step", 200.0, 3.0, 600.0, {"loss": 1.23456, "lr": 0.001})
    assert render_line(snap, bar=False) == (
        "training 600/2400 steps 25% | loss 1.235 lr 1.0e-03 | 3.0 step/s | 3:20 elapsed, ~10:00 left"
    )
    assert render_line(snap, bar=True).startswith("training [#####---------------] 600/2400 steps 25% |")
    assert render_line(snap, bar=True, width=30) == render_line(snap, bar=True)[:30]
    slow = Snapshot("features", 1, 10, "item", 4.0, 0.25, 36.0, status="loading ImageBind")
    assert render_line(slow, bar=False) == (
        "features 1/10 items 10% (loading ImageBind) | 4.0 s/item | 4s elapsed, ~36s left"
    )
    unknown = Snapshot("training", 0, 2400, "step", 0.0, None, None)
    assert render_line(unknown, bar=False).endswith("0s elapsed, time left: measuring")
    finished = Snapshot("training", 2400, 2400, "step", 700.0, 3.4, 0.0)
    assert render_line(finished, bar=False).endswith("| 11:40 elapsed")
    untimed = Snapshot("exporting", 0, None, "", 12.0, None, None)
    assert render_line(untimed, bar=False) == "exporting | 12s elapsed"


# Plain lines (not a terminal) --------------------------------------------------------------------------------


def test_lines_mode_prints_start_periodic_lines_with_eta_and_the_end(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress("lines", out, clock=clock, interval=20.0)
    with progress.stage("training", total=100, unit="step") as stage:
        for _ in range(10):  # 10 steps in 10 s: no line before the interval is up
            clock.advance(1.0)
            stage.update(1, loss=2.0)
        assert out.getvalue() == "training: started (100 steps to go)\n"
        for _ in range(10):
            clock.advance(1.0)
            stage.update(1, loss=1.5)
        for _ in range(5):  # within the next interval: nothing more
            clock.advance(1.0)
            stage.update(1, loss=1.0)
    assert out.getvalue().splitlines() == [
        "training: started (100 steps to go)",
        "training 20/100 steps 20% | loss 1.500 | 1.0 step/s | 20s elapsed, ~1:20 left",
        "training: done, 25 steps in 25s (1.0 step/s) | loss 1.000",
    ]


def test_lines_mode_eta_follows_the_measured_rate_and_counts_only_this_runs_work(clock: FakeClock) -> None:
    """A resumed run starts at step 300: its rate is what it did itself, not 300 steps in no time."""
    out = io.StringIO()
    progress = Progress("lines", out, clock=clock, interval=10.0)
    with progress.stage("training", total=400, unit="step", initial=300) as stage:
        clock.advance(10.0)
        stage.update(20)  # 2 steps/s; 80 left -> 40 s
        clock.advance(10.0)
        stage.update(5)  # slower now: 25 steps in 20 s = 1.25/s; 75 left -> 60 s
    lines = out.getvalue().splitlines()
    assert lines[0] == "training: started (100 steps to go)"
    assert lines[1].startswith("training 320/400 steps 80% | 2.0 step/s | 10s elapsed, ~40s left")
    assert lines[2].startswith("training 325/400 steps 81% | 1.2 step/s | 20s elapsed, ~1:00 left")
    assert lines[3] == "training: done, 25 steps in 20s (1.2 step/s)"


def test_lines_mode_reports_a_status_change_and_a_failed_stage(clock: FakeClock) -> None:
    out = io.StringIO()
    progress = Progress("lines", out, clock=clock, interval=60.0)

    def train_then_fail() -> None:
        with progress.stage("training", total=10, unit="step") as stage:
            clock.advance(2.0)
            stage.update(2)
            stage.status("evaluating on 300 examples")
            stage.status()
            stage.note("step 2: describe 0.5")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        train_then_fail()
    assert out.getvalue().splitlines() == [
        "training: started (10 steps to go)",
        "training 2/10 steps 20% (evaluating on 300 examples) | 1.0 step/s | 2s elapsed, ~8s left",
        "step 2: describe 0.5",
        "training: stopped, 2 steps in 2s (1.0 step/s)",
    ]


def test_a_stage_without_a_total_reports_start_and_duration(clock: FakeClock) -> None:
    out = io.StringIO()
    with Progress("lines", out, clock=clock).stage("exporting to /m/tiny"):
        clock.advance(12.0)
    assert out.getvalue().splitlines() == ["exporting to /m/tiny: started", "exporting to /m/tiny: done in 12s"]


# One updating line (a terminal) ------------------------------------------------------------------------------


def test_bar_mode_redraws_one_line_per_stage(clock: FakeClock) -> None:
    out = Terminal()
    progress = Progress("bar", out, clock=clock, width=lambda: 200)
    with progress.stage("rendering the shapes world", total=40, unit="file") as stage:
        for _ in range(40):
            clock.advance(0.25)
            stage.update()
    with progress.stage("training", total=4, unit="step") as stage:
        for _ in range(4):
            clock.advance(2.0)
            stage.update(1, loss=0.5)
    raw = out.getvalue()
    assert raw.count("\n") == 2  # one finished line per stage, everything else redrawn in place
    assert screen(raw) == [
        "rendering the shapes world [####################] 40/40 files 100% | 4.0 file/s | 10s elapsed",
        "training [####################] 4/4 steps 100% | loss 0.500 | 2.0 s/step | 8s elapsed",
        "",
    ]
    # while running, the line carried the time left
    assert "20/40 files 50% | 4.0 file/s | 5s elapsed, ~5s left" in raw


def test_bar_mode_shows_the_status_while_running_and_not_on_the_finished_line(clock: FakeClock) -> None:
    out = Terminal()
    progress = Progress("bar", out, clock=clock, width=lambda: 200)
    with progress.stage("ImageBind features", total=2, unit="item") as stage:
        stage.status("encoding video")
        clock.advance(1.0)
        stage.update(2)
    assert "2/2 items 100% (encoding video)" in out.getvalue()
    assert (
        screen(out.getvalue())[0]
        == "ImageBind features [####################] 2/2 items 100% | 2.0 item/s | 1s elapsed"
    )


def test_bar_mode_throttles_redraws_and_fits_the_terminal(clock: FakeClock) -> None:
    out = Terminal()
    progress = Progress("bar", out, clock=clock, width=lambda: 40)
    with progress.stage("features", total=1000, unit="item") as stage:
        for _ in range(1000):  # 1000 updates in 1 s: ~10 redraws, not 1000
            clock.advance(0.001)
            stage.update()
    draws = out.getvalue().count("\r")
    assert 5 <= draws <= 15
    assert all(len(line) <= 40 for line in screen(out.getvalue()))


def test_bar_mode_notes_and_log_records_do_not_break_the_line(clock: FakeClock) -> None:
    out = Terminal()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress("bar", out, clock=clock, width=lambda: 200)
        with progress.stage("training", total=10, unit="step") as stage:
            clock.advance(1.0)
            stage.update(1)
            stage.note("step 1: describe 0.5")
            logging.getLogger("modaverse_training.test").warning("checkpoint saved")
            clock.advance(1.0)
            stage.update(1)
        assert not handler.filters  # the stage removed its hook
    finally:
        root.removeHandler(handler)
    shown = screen(out.getvalue())
    assert shown[0] == "step 1: describe 0.5"
    assert shown[1] == "LOG checkpoint saved"  # the bar was erased before the record, not prefixed to it
    assert shown[2].startswith("training [####----------------] 2/10 steps 20% | 1.0 step/s | 2s elapsed")


def test_off_writes_nothing(clock: FakeClock) -> None:
    out = Terminal()
    progress = Progress("off", out, clock=clock)
    with progress.stage("training", total=10, unit="step") as stage:
        clock.advance(100.0)
        stage.update(5, loss=1.0)
        stage.note("step 5")
    assert out.getvalue() == ""


# Choosing the mode -------------------------------------------------------------------------------------------


def test_auto_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    assert Progress.create("auto", Terminal()).mode == "bar"
    assert Progress.create("auto", io.StringIO()).mode == "lines"
    assert Progress.create("off", Terminal()).mode == "off"
    assert Progress.create("lines", Terminal()).mode == "lines"
    with pytest.raises(ValueError, match="progress mode 'fancy'"):
        Progress.create("fancy")


def test_cli_shows_progress_by_default_and_no_progress_silences_it() -> None:
    parser = build_parser()
    tiny_args = ["tiny", "--work", "/nonexistent"]
    assert _progress_mode(parser.parse_args(tiny_args)) == "auto"
    assert _progress_mode(parser.parse_args([*tiny_args, "--progress", "lines"])) == "lines"
    assert _progress_mode(parser.parse_args([*tiny_args, "--no-progress"])) == "off"
    assert _progress_mode(parser.parse_args([*tiny_args, "--progress", "bar", "--no-progress"])) == "off"
    with pytest.raises(SystemExit):
        parser.parse_args([*tiny_args, "--progress", "fancy"])
