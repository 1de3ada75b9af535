"""The ffmpeg runner shared by video decoding, the generators' encoding and the sample makers."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from modaverse_runtime.errors import FailedPrecondition
from modaverse_runtime.media import ffmpeg

RED_4X2 = ["-f", "lavfi", "-i", "color=c=red:s=4x2:r=10", "-f", "rawvideo", "-pix_fmt", "rgb24"]


def test_run_feeds_stdin_and_returns_stdout() -> None:
    pixels = bytes(range(8)) * 3  # three 4x2 grey frames
    args = [
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-s",
        "4x2",
        "-i",
        "pipe:0",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-",
    ]
    done = ffmpeg.run(args, stdin=pixels, timeout_s=30)
    assert (done.returncode, done.stdout) == (0, pixels)


def test_a_failure_names_the_error_without_temp_paths() -> None:
    junk_mp4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64
    with ffmpeg.temp_path(".mp4", junk_mp4) as path, pytest.raises(ffmpeg.FFmpegError) as info:
        ffmpeg.run(["-i", path, "-f", "null", "-"], timeout_s=30)
    error = info.value
    assert not error.timed_out and path in error.log
    assert "modaverse-" not in error.reason and "/tmp" not in error.reason
    assert str(error) == error.reason and error.reason  # one line fit for a caller


def test_check_false_returns_a_non_zero_exit() -> None:
    done = ffmpeg.run([*RED_4X2[:4], "-t", "0.1"], timeout_s=30, check=False)  # no output named: exits 1
    assert done.returncode != 0 and "Stream #0" in done.log


def test_a_run_past_its_timeout_is_killed() -> None:
    with pytest.raises(ffmpeg.FFmpegError, match=r"did not finish within 0\.5 s") as info:
        ffmpeg.run(["-re", *RED_4X2, "-"], timeout_s=0.5)  # -re: real time, and the source never ends
    assert info.value.timed_out


def test_stream_yields_exact_blocks() -> None:
    blocks = list(ffmpeg.stream([*RED_4X2, "-frames:v", "5", "-"], block_size=4 * 2 * 3, timeout_s=30))
    assert len(blocks) == 5 and all(block == blocks[0] for block in blocks)
    red, green, blue = blocks[0][:3]
    assert red > 240 and green < 16 and blue < 16


def test_closing_a_stream_stops_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        spawned.append(popen(*args, **kwargs))
        return spawned[-1]

    monkeypatch.setattr(subprocess, "Popen", spy)
    blocks = ffmpeg.stream([*RED_4X2, "-"], block_size=24, timeout_s=30)  # an endless source
    assert len(next(blocks)) == 24
    blocks.close()
    assert spawned[0].poll() is not None


def test_a_failing_stream_raises_after_its_output() -> None:
    missing = os.path.join("/nonexistent", "modaverse-missing.mp4")
    with pytest.raises(ffmpeg.FFmpegError) as info:
        list(ffmpeg.stream(["-i", missing, "-f", "rawvideo", "-"], block_size=24, timeout_s=30))
    assert "modaverse-" not in info.value.reason and "No such file" in info.value.log


def test_without_imageio_ffmpeg_video_is_a_failed_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails, as in the gateway image
    with pytest.raises(FailedPrecondition, match="needs the imageio-ffmpeg package"):
        ffmpeg.run(["-version"], timeout_s=30)


def test_temp_path_is_removed_even_on_error() -> None:
    seen: list[bytes] = []

    def read_then_fail(path: str) -> None:
        with open(path, "rb") as handle:
            seen.append(handle.read())
        raise RuntimeError

    with ffmpeg.temp_path(".webm", b"data") as path:
        pass
    assert not os.path.exists(path)
    with pytest.raises(RuntimeError), ffmpeg.temp_path(".webm", b"data") as path:
        read_then_fail(path)
    assert seen == [b"data"] and not os.path.exists(path)


def test_reason_keeps_the_last_error_line() -> None:
    log = "Input #0, from '/tmp/modaverse-abc.mp4':\n[mov @ 0x1] moov atom not found\n"
    log += "/tmp/modaverse-abc.mp4: Invalid data\nbye\n"
    assert ffmpeg.reason(log) == "<input> Invalid data"
    assert ffmpeg.reason("just this\n") == "just this"
    assert ffmpeg.reason("", "nothing logged") == "nothing logged"
