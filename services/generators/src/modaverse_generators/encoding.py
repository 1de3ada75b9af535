"""Encoding generated arrays into files: PNG/JPEG/WebP, MP4 (H.264)/WebM (VP9), WAV/FLAC.

Deterministic: the same array always gives the same bytes (no timestamps or encoder
metadata that vary), so equal seeds give equal files.
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
from PIL import Image

from modaverse_runtime.media import ffmpeg

IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/webp")
VIDEO_MIME_TYPES: Final = ("video/mp4", "video/webm")
AUDIO_MIME_TYPES: Final = ("audio/wav", "audio/flac")

_FFMPEG_TIMEOUT_S: Final = 300.0
_PIL_FORMATS: Final = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
# mime -> (suffix, ffmpeg codec, options). H.264 yuv420p plays everywhere; one thread keeps bytes reproducible.
_VIDEO_CODECS: Final[dict[str, tuple[str, str, list[str]]]] = {
    "video/mp4": (".mp4", "libx264", ["-preset", "medium", "-crf", "18", "-threads", "1", "-movflags", "+faststart"]),
    "video/webm": (
        ".webm",
        "libvpx-vp9",
        ["-deadline", "good", "-cpu-used", "4", "-crf", "32", "-b:v", "0", "-threads", "1"],
    ),
}


def to_uint8(pixels: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """[0, 1] floats → uint8, rounding as diffusers' own ``numpy_to_pil`` does."""
    return np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)


def encode_image(pixels: npt.NDArray[np.uint8], mime_type: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format=_PIL_FORMATS[mime_type], quality=95)
    return buf.getvalue()


def encode_video(frames: npt.NDArray[np.uint8], fps: int, mime_type: str) -> bytes:
    """(F, H, W, 3) uint8 frames at ``fps``; H and W must be even (they are multiples of 8).

    Through the runtime's ffmpeg runner, as video decoding: not imageio-ffmpeg's writer, whose
    ``preexec_fn`` forks and runs gRPC's fork handlers in the child.
    """
    suffix, codec, options = _VIDEO_CODECS[mime_type]
    num_frames, height, width, _ = frames.shape
    args = ["-loglevel", "error", "-y"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0"]
    args += ["-an", "-c:v", codec, "-pix_fmt", "yuv420p", *options]
    args += ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    with ffmpeg.temp_path(suffix) as path:
        try:
            ffmpeg.run([*args, path], stdin=np.ascontiguousarray(frames).tobytes(), timeout_s=_FFMPEG_TIMEOUT_S)
        except ffmpeg.FFmpegError as exc:
            raise RuntimeError(f"ffmpeg could not encode {mime_type} ({num_frames} frames): {exc.reason}") from exc
        with open(path, "rb") as handle:
            return handle.read()


def encode_audio(samples: npt.NDArray[np.floating], sample_rate: int, mime_type: str) -> bytes:
    """Mono samples. WAV keeps float32, as the release writes it (scipy's wavfile of the pipeline output);
    FLAC is 16-bit PCM, so values are clipped to [-1, 1]. Both are byte-for-byte reproducible."""
    buf = io.BytesIO()
    mono = np.asarray(samples, dtype=np.float32).reshape(-1)
    if mime_type == "audio/wav":
        # scipy, as the release: libsndfile adds a PEAK chunk with a timestamp to float WAVs.
        from scipy.io import wavfile

        wavfile.write(buf, sample_rate, mono)
    else:
        sf.write(buf, np.clip(mono, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
