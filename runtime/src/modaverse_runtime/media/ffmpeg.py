"""The one way ModaVerse runs ffmpeg: find the binary, run it with a timeout, feed its stdin or read
its stdout, and turn every failure into an :class:`FFmpegError` whose ``reason`` can be shown.

Used by video decoding (:mod:`.video`, for the encoder), the generators' video encoding and the
sample makers. ffmpeg is spawned with plain ``Popen`` (no ``preexec_fn``): that does not run
Python's or gRPC's fork handlers in the child, which can break it inside a gRPC server
(imageio-ffmpeg's own reader and writer fork with a ``preexec_fn``, so only its binary is used).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from modaverse_runtime.errors import FailedPrecondition

__all__ = ["FFmpegError", "Finished", "executable", "reason", "run", "stream", "temp_path"]

_TEMP_PREFIX: Final = "modaverse-"
# Temp-file paths in ffmpeg's messages would tell a caller about our file system.
_TEMP_PATH: Final = re.compile(rf"\S*{_TEMP_PREFIX}\S*")


class FFmpegError(RuntimeError):
    """ffmpeg exited with an error or ran out of time.

    ``reason`` is one line fit for a caller (the last error ffmpeg logged, temp paths hidden);
    ``log`` is all it wrote to stderr.
    """

    def __init__(self, reason: str, log: str = "", *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log
        self.timed_out = timed_out


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: bytes
    log: str  # stderr; progress lines (ended by "\r") split into lines


def executable() -> str:
    """The ffmpeg binary: ``IMAGEIO_FFMPEG_EXE``, else the one imageio-ffmpeg bundles, else the system's."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # the gateway and image/audio-only images go without it
        raise FailedPrecondition("video support needs the imageio-ffmpeg package") from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise FailedPrecondition(f"video support needs an ffmpeg binary: {exc}") from exc


def run(args: Sequence[str], *, timeout_s: float, stdin: bytes | None = None, check: bool = True) -> Finished:
    """Run ``ffmpeg ARGS`` to the end, feeding it ``stdin``; its stdout and stderr are collected.

    Raises :class:`FFmpegError` when it runs past ``timeout_s`` (it is killed) or, with ``check``,
    exits non-zero. ``check=False`` is for commands that "fail" by design (``-i FILE`` alone prints
    the header and exits 1).
    """
    try:
        # No stdin gives ffmpeg an empty, closed pipe rather than ours.
        done = subprocess.run(_command(args), input=stdin or b"", capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FFmpegError(_timeout_reason(timeout_s), _decode(exc.stderr), timed_out=True) from exc
    log = _decode(done.stderr)
    if check and done.returncode != 0:
        raise FFmpegError(reason(log, f"ffmpeg exited with status {done.returncode}"), log)
    return Finished(done.returncode, done.stdout, log)


def stream(args: Sequence[str], *, block_size: int, timeout_s: float) -> Generator[bytes, None, None]:
    """Run ``ffmpeg ARGS`` and yield its stdout in blocks of exactly ``block_size`` bytes.

    A shorter tail is dropped. Closing the generator early kills ffmpeg, so a caller can stop
    decoding once it has what it needs. ``timeout_s`` bounds the wait for ffmpeg to exit after its
    output ends; a non-zero exit raises :class:`FFmpegError` after the last block.
    """
    proc = subprocess.Popen(_command(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while len(block := proc.stdout.read(block_size)) == block_size:
            yield block
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise FFmpegError(_timeout_reason(timeout_s), timed_out=True) from exc
        if code != 0:
            log = _decode(proc.stderr.read())
            raise FFmpegError(reason(log, f"ffmpeg exited with status {code}"), log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@contextlib.contextmanager
def temp_path(suffix: str, data: bytes = b"") -> Iterator[str]:
    """A temporary file holding ``data``, for ffmpeg to read or write, removed afterwards.

    Files rather than pipes because ffmpeg must seek in MP4 (its index may sit at the end); the
    name's prefix is what :func:`reason` hides.
    """
    with tempfile.NamedTemporaryFile(prefix=_TEMP_PREFIX, suffix=suffix, delete=False) as handle:
        path = handle.name
        try:
            handle.write(data)
        except BaseException:
            os.unlink(path)
            raise
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def reason(log: str, default: str = "ffmpeg failed") -> str:
    """The line of an ffmpeg log that says what went wrong, with temp-file paths shown as ``<input>``."""
    # Logs carry banners and file names; keep the last line that reads like an error.
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.startswith("===")]
    useful = [ln for ln in lines if "error" in ln.lower() or "invalid" in ln.lower() or "not found" in ln]
    return _TEMP_PATH.sub("<input>", (useful or lines or [default])[-1])


def _command(args: Sequence[str]) -> list[str]:
    return [executable(), "-hide_banner", "-nostdin", *args]


def _decode(stderr: bytes | str | None) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    return text.replace("\r", "\n")


def _timeout_reason(timeout_s: float) -> str:
    return f"ffmpeg did not finish within {timeout_s:g} s"
