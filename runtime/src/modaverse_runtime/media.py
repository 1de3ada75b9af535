"""Safe decoding of user-supplied media bytes.

Every problem with the input (empty, too large, wrong or unsupported type, corrupt,
truncated, over a size or length limit) is raised as :class:`InvalidArgument` with a
message meant for the caller; no decoder library exception escapes. Sizes and lengths
are checked from the container headers before the payload is decoded, so a small
file that claims a huge image or a very long recording costs almost nothing to reject.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
from PIL import Image, ImageOps

from modaverse_runtime.errors import FailedPrecondition, InvalidArgument
from modaverse_runtime.mime import ALIASES, SUPPORTED_MIME_TYPES, MediaKind, sniff_mime

__all__ = [
    "SUPPORTED_MIME_TYPES",
    "DecodedAudio",
    "DecodedImage",
    "DecodedVideo",
    "MediaKind",
    "MediaLimits",
    "decode_audio",
    "decode_image",
    "decode_media",
    "decode_video",
    "sniff_mime",
]


def ffmpeg() -> Any:
    """``imageio_ffmpeg`` (it bundles an ffmpeg binary), imported only when video is used."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # the gateway and image/audio-only images go without it
        raise FailedPrecondition("video support needs the imageio-ffmpeg package") from exc
    return imageio_ffmpeg


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 600.0
    max_video_seconds: float = 600.0
    # Decoded samples (frames x channels): bounds memory even for a tiny, highly compressed
    # file of many channels at a high rate. Default: 10 min of 48 kHz stereo (~230 MB float32).
    max_audio_samples: int = 600 * 48_000 * 2


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, pixels loaded


@dataclass(frozen=True)
class DecodedAudio:
    samples: npt.NDArray[np.float32]  # (channels, n), values in [-1, 1]
    sample_rate: int

    @property
    def duration(self) -> float:
        return float(self.samples.shape[1]) / self.sample_rate


_PIL_FORMATS: Final[dict[str, str]] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
_VIDEO_SUFFIXES: Final[dict[str, str]] = {"video/mp4": ".mp4", "video/webm": ".webm"}

# Beyond these the bytes-per-second of a compressed stream says little about its
# decoded size (silence in 255-channel Vorbis is tiny), so bound them outright.
MAX_AUDIO_CHANNELS: Final = 8
MAX_AUDIO_SAMPLE_RATE: Final = 384_000
_FFMPEG_TIMEOUT_S: Final = 120.0


def _normalise_mime(mime_type: str) -> str:
    # "Audio/OGG; codecs=opus" -> "audio/ogg"
    return mime_type.split(";", 1)[0].strip().lower()


def _canonical(mime: str) -> str:
    return ALIASES.get(mime, mime)


def _kind_of(mime: str) -> str:
    return mime.split("/", 1)[0]


def _checked_mime(kind: MediaKind, data: bytes, mime_type: str, limits: MediaLimits) -> str:
    """Validate size and type; return the canonical MIME type of the content."""
    if not data:
        raise InvalidArgument(f"{kind.value} data is empty")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"{kind.value} data is {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    declared = _normalise_mime(mime_type)
    supported = SUPPORTED_MIME_TYPES[kind]
    if declared and declared not in supported:
        raise InvalidArgument(
            f"mime type {declared!r} is not supported for {kind.value} inputs (supported: {', '.join(supported)})"
        )
    sniffed = sniff_mime(data)
    said = f" (declared {declared})" if declared else ""
    if sniffed is None:
        raise InvalidArgument(
            f"{kind.value} data{said} is not in any recognised format; supported: {', '.join(supported)}"
        )
    if _kind_of(sniffed) != kind.value:
        raise InvalidArgument(f"expected {kind.value} data{said}, but the content looks like {sniffed}")
    if sniffed not in supported:
        raise InvalidArgument(
            f"{kind.value} content looks like {sniffed}, which is not supported (supported: {', '.join(supported)})"
        )
    if declared and _canonical(declared) != sniffed:
        raise InvalidArgument(f"declared mime type {declared} does not match the content, which looks like {sniffed}")
    return sniffed


def _describe(exc: BaseException) -> str:
    # libsndfile's messages embed the repr of our BytesIO; its error_string does not.
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    text = re.sub(r"<[^<>]* at 0x[0-9a-f]+>:?\s*", "", str(text))
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# ---------------------------------------------------------------------------- images


def decode_image(data: bytes, mime_type: str, limits: MediaLimits) -> DecodedImage:
    """Decode PNG/JPEG/WebP/GIF bytes to a loaded RGB image (first frame, EXIF-upright)."""
    mime = _checked_mime(MediaKind.IMAGE, data, mime_type, limits)
    header_size = _image_header_size(data, mime)
    if header_size is not None:
        _check_pixels(*header_size, limits)
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as img:
            _check_pixels(*img.size, limits)
            img.seek(0)  # animated GIF/WebP: the first frame
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
            rgb.load()
    except InvalidArgument:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"image is too large to decode safely: {_describe(exc)}") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidArgument(f"image data ({mime}) is corrupt or truncated: {_describe(exc)}") from exc
    return DecodedImage(image=rgb)


def _check_pixels(width: int, height: int, limits: MediaLimits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"image has invalid dimensions {width}x{height}")
    pixels = width * height
    if pixels > limits.max_image_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {pixels} pixels, over the limit of {limits.max_image_pixels}"
        )


def _image_header_size(data: bytes, mime: str) -> tuple[int, int] | None:
    """(width, height) read straight from the header, before Pillow sees the data.

    Pillow raises its own DecompressionBombError inside ``Image.open`` for very large
    claims, which would hide the numbers; this gives the exact figures. None if the
    header is not in a shape we parse (Pillow's size is then checked instead).
    """
    if mime == "image/png" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if mime == "image/gif" and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if mime == "image/webp":
        return _webp_size(data)
    if mime == "image/jpeg":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white, not dropped."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey: Pillow's convert() would clip to 0..255 (nearly all white).
        grey = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


# ---------------------------------------------------------------------------- audio


def decode_audio(data: bytes, mime_type: str, limits: MediaLimits) -> DecodedAudio:
    """Decode WAV/FLAC/OGG (Vorbis, Opus)/MP3 bytes to float32 (channels, n) samples."""
    mime = _checked_mime(MediaKind.AUDIO, data, mime_type, limits)
    if mime == "audio/wav":
        _check_wav_complete(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            declared_frames, rate, channels = int(audio.frames), int(audio.samplerate), int(audio.channels)
            _check_audio_header(declared_frames, rate, channels, limits)
            samples = audio.read(dtype="float32", always_2d=True)
    except InvalidArgument:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidArgument(f"audio data ({mime}) could not be decoded: {_describe(exc)}") from exc
    n = samples.shape[0]
    if n == 0:
        raise InvalidArgument("audio contains no samples")
    # MP3 frame counts are estimates (no exact length in the format), so only the
    # formats that state their length exactly can be caught short.
    if mime != "audio/mpeg" and n < declared_frames:
        raise InvalidArgument(
            f"audio data ({mime}) is truncated: the header declares {declared_frames} frames, only {n} could be decoded"
        )
    clean = np.clip(np.nan_to_num(samples.T, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return DecodedAudio(samples=np.ascontiguousarray(clean, dtype=np.float32), sample_rate=rate)


def _check_audio_header(frames: int, rate: int, channels: int, limits: MediaLimits) -> None:
    if not 0 < rate <= MAX_AUDIO_SAMPLE_RATE:
        raise InvalidArgument(f"audio sample rate {rate} Hz is outside 1..{MAX_AUDIO_SAMPLE_RATE} Hz")
    if not 0 < channels <= MAX_AUDIO_CHANNELS:
        raise InvalidArgument(f"audio has {channels} channels; at most {MAX_AUDIO_CHANNELS} are supported")
    if frames <= 0:
        raise InvalidArgument("audio contains no samples")
    seconds = frames / rate
    if seconds > limits.max_audio_seconds:
        raise InvalidArgument(
            f"audio is {seconds:.1f} seconds long, over the limit of {limits.max_audio_seconds:g} seconds"
        )
    if frames * channels > limits.max_audio_samples:
        raise InvalidArgument(
            f"audio decodes to {frames * channels} samples ({channels} channels at {rate} Hz), over the limit "
            f"of {limits.max_audio_samples}"
        )


def _check_wav_complete(data: bytes) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; we reject it."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mean "unknown" (streamed WAV, RF64): nothing to compare.
            available = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and available < size:
                raise InvalidArgument(
                    f"audio data (audio/wav) is truncated: the data chunk declares {size} bytes, "
                    f"only {available} are present"
                )
            return
        pos += 8 + size + (size & 1)


# ---------------------------------------------------------------------------- video


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
            _temp_path(self._data, self._suffix) as path,
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
    mime = _checked_mime(MediaKind.VIDEO, data, mime_type, limits)
    suffix = _VIDEO_SUFFIXES[mime]
    with _temp_path(data, suffix) as path:
        meta = _video_meta(path)
        fps, (width, height) = float(meta.get("fps") or 0.0), meta["size"]
        claimed = float(meta.get("duration") or 0.0)
        _check_video_meta(fps, int(width), int(height), claimed, limits)
        with contextlib.closing(_iter_frames(path, int(width), int(height))) as frames:
            if next(frames, None) is None:
                raise InvalidArgument("video has no decodable frames")
        num_frames = _count_frames(path)
    if num_frames <= 0:
        raise InvalidArgument("video has no decodable frames")
    duration = num_frames / fps
    _check_video_seconds(duration, limits)
    return DecodedVideo(duration, fps, int(width), int(height), num_frames, _data=data, _suffix=suffix)


def _check_video_meta(fps: float, width: int, height: int, seconds: float, limits: MediaLimits) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidArgument("video frame rate could not be determined")
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"video has invalid frame size {width}x{height}")
    if width * height > limits.max_image_pixels:
        raise InvalidArgument(
            f"video frames are {width}x{height} = {width * height} pixels, over the limit of {limits.max_image_pixels}"
        )
    _check_video_seconds(seconds, limits)


def _check_video_seconds(seconds: float, limits: MediaLimits) -> None:
    if seconds > limits.max_video_seconds:
        raise InvalidArgument(
            f"video is {seconds:.1f} seconds long, over the limit of {limits.max_video_seconds:g} seconds"
        )


@contextlib.contextmanager
def _temp_path(data: bytes, suffix: str) -> Iterator[str]:
    # ffmpeg needs a seekable file (MP4 may keep its index at the end).
    with tempfile.NamedTemporaryFile(prefix="modaverse-", suffix=suffix, delete=False) as handle:
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


def _run_ffmpeg(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    # Plain Popen (no preexec_fn) spawns without running Python's or gRPC's fork handlers in
    # the child; imageio-ffmpeg's reader forks with a preexec_fn, and gRPC's handlers can break
    # that child inside a gRPC server.
    return subprocess.Popen([ffmpeg().get_ffmpeg_exe(), "-hide_banner", "-nostdin", *args], **popen)


def _video_meta(path: str) -> dict[str, Any]:
    """fps, (width, height) after rotation, and the container's duration, from ffmpeg's header."""
    proc = _run_ffmpeg(["-i", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=_FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        raise InvalidArgument("video could not be opened in time") from exc
    header = err.decode(errors="replace")
    video = next((ln for ln in header.splitlines() if "Stream #" in ln and "Video:" in ln), None)
    if video is None:
        raise InvalidArgument(f"video could not be opened: {_ffmpeg_reason(RuntimeError(header))}")
    size = re.search(r"[ ,](\d{1,5})x(\d{1,5})[ ,\[]", video)
    fps = re.search(r"([\d.]+) (?:fps|tbr)", video)
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", header)
    if size is None:
        raise InvalidArgument("video frame size could not be determined")
    width, height = int(size.group(1)), int(size.group(2))
    if re.search(r"rotation of -?(90|270)\.", header):  # decoding applies the rotation
        width, height = height, width
    seconds = 0.0
    if duration is not None:
        h, m, sec = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(sec)
    return {"fps": float(fps.group(1)) if fps else 0.0, "size": (width, height), "duration": seconds}


def _iter_frames(path: str, width: int, height: int) -> Generator[npt.NDArray[np.uint8], None, None]:
    """RGB frames in decode order; ffmpeg is stopped when the iterator is closed."""
    args = ["-loglevel", "error", "-i", path, "-an", "-sn", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = _run_ffmpeg(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frame_bytes = width * height * 3
    assert proc.stdout is not None
    try:
        while True:
            raw = proc.stdout.read(frame_bytes)
            if len(raw) < frame_bytes:
                break
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
        if proc.wait(_FFMPEG_TIMEOUT_S) != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise InvalidArgument(f"video could not be decoded: {_ffmpeg_reason(RuntimeError(err))}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _count_frames(path: str) -> int:
    """Video frames in the first video stream, counted from packets (no decoding)."""
    cmd = [ffmpeg().get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path]
    cmd += ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidArgument("video could not be read in time") from exc
    log = done.stderr.decode(errors="replace").replace("\r", "\n")
    counts = re.findall(r"frame=\s*(\d+)", log)
    if done.returncode != 0 or not counts:
        raise InvalidArgument(f"video could not be read: {_ffmpeg_reason(RuntimeError(log))}")
    return int(counts[-1])


def _ffmpeg_reason(exc: BaseException) -> str:
    # ffmpeg logs carry temp-file paths and banners; keep the last meaningful line.
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("===")]
    useful = [ln for ln in lines if "error" in ln.lower() or "invalid" in ln.lower() or "not found" in ln]
    reason = (useful or lines or [type(exc).__name__])[-1]
    return re.sub(r"\S*modaverse-\S*", "<input>", reason)


# ---------------------------------------------------------------------------- dispatch


def decode_media(
    kind: MediaKind, data: bytes, mime_type: str, limits: MediaLimits
) -> DecodedImage | DecodedAudio | DecodedVideo:
    if kind is MediaKind.IMAGE:
        return decode_image(data, mime_type, limits)
    if kind is MediaKind.AUDIO:
        return decode_audio(data, mime_type, limits)
    if kind is MediaKind.VIDEO:
        return decode_video(data, mime_type, limits)
    raise InvalidArgument(f"unknown media kind {kind!r}")
