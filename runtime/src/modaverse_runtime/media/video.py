"""Video decoding (MP4, WebM) with ffmpeg: the header is checked against the limits, the first frame
must decode, and frames are decoded again on demand (only the encoded bytes are kept)."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from modaverse_runtime.errors import InvalidArgument

from . import ffmpeg
from .checks import checked_mime
from .kinds import MediaKind
from .limits import MediaLimits

_VIDEO_SUFFIXES: Final[dict[str, str]] = {"video/mp4": ".mp4", "video/webm": ".webm"}
_FFMPEG_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class _Header:
    fps: float
    width: int  # after rotation, as frames are decoded
    height: int
    seconds: float  # the container's claim; 0 if it states none


@dataclass
class DecodedVideo:
    """A validated video whose frames are decoded on demand by :meth:`frames_at`.

    ``duration`` is ``num_frames / fps``, as decord (the reference decoder) reports it,
    and frame ``i`` is shown from ``i / fps`` on. Only the encoded bytes are kept.
    """

    duration: float
    fps: float
    width: int
    height: int
    num_frames: int
    _data: bytes = field(default=b"", repr=False, compare=False)
    _suffix: str = field(default=".mp4", repr=False, compare=False)

    def frame_index_at(self, t: float) -> int:
        # The frame shown at t: the last one starting at or before t. The epsilon
        # absorbs float error in callers' i / fps round trips.
        index = math.floor(t * self.fps + 1e-6)
        return min(max(index, 0), self.num_frames - 1)

    def frames_at(self, times: Sequence[float]) -> npt.NDArray[np.uint8]:
        """uint8 (len(times), H, W, 3): the frame shown at each time, in order given.

        Decodes sequentially from the start, keeps only the frames asked for and stops
        after the last of them. Times past the last frame give the last frame.
        """
        out = np.empty((len(times), self.height, self.width, 3), dtype=np.uint8)
        if not times:
            return out
        wanted: dict[int, list[int]] = {}
        for slot, t in enumerate(times):
            wanted.setdefault(self.frame_index_at(t), []).append(slot)
        last = max(wanted)
        previous: npt.NDArray[np.uint8] | None = None
        with (
            ffmpeg.temp_path(self._suffix, self._data) as path,
            contextlib.closing(_iter_frames(path, self.width, self.height)) as frames,
        ):
            for index, frame in enumerate(frames):
                previous = frame
                for slot in wanted.pop(index, ()):
                    out[slot] = frame
                if index >= last:
                    break
        if previous is None:
            raise InvalidArgument("video has no decodable frames")
        for slots in wanted.values():  # the stream ended early: hold its last frame
            out[slots] = previous
        return out


def decode_video(data: bytes, mime_type: str, limits: MediaLimits) -> DecodedVideo:
    """Validate MP4/WebM bytes: metadata, limits, and that the first frame decodes."""
    mime = checked_mime(MediaKind.VIDEO, data, mime_type, limits)
    suffix = _VIDEO_SUFFIXES[mime]
    with ffmpeg.temp_path(suffix, data) as path:
        header = _read_header(path)
        _check_header(header, limits)
        with contextlib.closing(_iter_frames(path, header.width, header.height)) as frames:
            if next(frames, None) is None:
                raise InvalidArgument("video has no decodable frames")
        num_frames = _count_frames(path)
    if num_frames <= 0:
        raise InvalidArgument("video has no decodable frames")
    duration = num_frames / header.fps
    _check_video_seconds(duration, limits)
    return DecodedVideo(duration, header.fps, header.width, header.height, num_frames, _data=data, _suffix=suffix)


def _check_header(header: _Header, limits: MediaLimits) -> None:
    fps, width, height = header.fps, header.width, header.height
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidArgument("video frame rate could not be determined")
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"video has invalid frame size {width}x{height}")
    if width * height > limits.max_image_pixels:
        raise InvalidArgument(
            f"video frames are {width}x{height} = {width * height} pixels, over the limit of {limits.max_image_pixels}"
        )
    _check_video_seconds(header.seconds, limits)


def _check_video_seconds(seconds: float, limits: MediaLimits) -> None:
    if seconds > limits.max_video_seconds:
        raise InvalidArgument(
            f"video is {seconds:.1f} seconds long, over the limit of {limits.max_video_seconds:g} seconds"
        )


def _read_header(path: str) -> _Header:
    """fps, frame size after rotation, and the container's duration, from ffmpeg's description of the file."""
    try:
        # "-i" alone describes the input and exits 1 (no output named): not a failure here.
        log = ffmpeg.run(["-i", path], timeout_s=_FFMPEG_TIMEOUT_S, check=False).log
    except ffmpeg.FFmpegError as exc:
        raise InvalidArgument("video could not be opened in time") from exc
    video = next((ln for ln in log.splitlines() if "Stream #" in ln and "Video:" in ln), None)
    if video is None:
        raise InvalidArgument(f"video could not be opened: {ffmpeg.reason(log)}")
    size = re.search(r"[ ,](\d{1,5})x(\d{1,5})[ ,\[]", video)
    fps = re.search(r"([\d.]+) (?:fps|tbr)", video)
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", log)
    if size is None:
        raise InvalidArgument("video frame size could not be determined")
    width, height = int(size.group(1)), int(size.group(2))
    if re.search(r"rotation of -?(90|270)\.", log):  # decoding applies the rotation
        width, height = height, width
    seconds = 0.0
    if duration is not None:
        h, m, sec = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(sec)
    return _Header(fps=float(fps.group(1)) if fps else 0.0, width=width, height=height, seconds=seconds)


def _iter_frames(path: str, width: int, height: int) -> Generator[npt.NDArray[np.uint8], None, None]:
    """RGB frames in decode order; ffmpeg is stopped when the iterator is closed."""
    args = ["-loglevel", "error", "-i", path, "-an", "-sn", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    blocks = ffmpeg.stream(args, block_size=width * height * 3, timeout_s=_FFMPEG_TIMEOUT_S)
    try:
        for raw in blocks:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    except ffmpeg.FFmpegError as exc:
        raise InvalidArgument(f"video could not be decoded: {exc.reason}") from exc
    finally:
        blocks.close()


def _count_frames(path: str) -> int:
    """Video frames in the first video stream, counted from packets (no decoding)."""
    args = ["-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    try:
        done = ffmpeg.run(args, timeout_s=_FFMPEG_TIMEOUT_S, check=False)
    except ffmpeg.FFmpegError as exc:
        raise InvalidArgument("video could not be read in time") from exc
    counts = re.findall(r"frame=\s*(\d+)", done.log)
    if done.returncode != 0 or not counts:
        raise InvalidArgument(f"video could not be read: {ffmpeg.reason(done.log)}")
    return int(counts[-1])
