"""Synthetic sample media for tests, the demo and benchmarks (nothing is stored on disk).

Each maker is deterministic for its arguments and takes well under half a second.
"""

from __future__ import annotations

import io
import math
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
from PIL import Image, ImageColor, ImageDraw

from .media import ffmpeg

__all__ = [
    "AUDIO_FORMATS",
    "IMAGE_FORMATS",
    "SHAPES",
    "VIDEO_FORMATS",
    "draw_shape",
    "make_audio",
    "make_image",
    "make_video",
]

SHAPES: Final = ("circle", "square", "triangle", "star", "cross")
IMAGE_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF")
AUDIO_FORMATS: Final[dict[str, str]] = {  # format -> libsndfile subtype
    "WAV": "PCM_16",
    "FLAC": "PCM_16",
    "OGG": "VORBIS",
    "MP3": "MPEG_LAYER_III",
}
# fmt -> (ffmpeg encoder, extra output options tuned for speed)
_VIDEO_CODECS: Final[dict[str, tuple[str, list[str]]]] = {
    "mp4": ("libx264", ["-preset", "ultrafast"]),
    "webm": ("libvpx-vp9", ["-deadline", "realtime", "-cpu-used", "8"]),
    "webm-vp8": ("libvpx", ["-deadline", "realtime", "-cpu-used", "8"]),
}
VIDEO_FORMATS: Final = tuple(_VIDEO_CODECS)
_BACKGROUND: Final = (240, 240, 235)
_FFMPEG_TIMEOUT_S: Final = 120.0


def make_image(shape: str = "circle", color: str = "red", size: int = 224, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A coloured shape on a light background, encoded as PNG, JPEG, WEBP or GIF.

    ``seed`` nudges the shape's position and the background tint, so different seeds
    give different (but reproducible) images of the same description.
    """
    fmt = fmt.upper()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}; choose from {IMAGE_FORMATS}")
    rng = np.random.default_rng(seed)
    tint = tuple(int(c - rng.integers(0, 16)) for c in _BACKGROUND)
    img = Image.new("RGB", (size, size), tint)
    jitter = rng.uniform(-0.08, 0.08, size=2) * size
    centre = (size / 2 + float(jitter[0]), size / 2 + float(jitter[1]))
    draw_shape(ImageDraw.Draw(img), shape, centre, size * 0.3, ImageColor.getrgb(color))
    buf = io.BytesIO()
    if fmt == "GIF":
        img.quantize(colors=64).save(buf, format="GIF")
    else:
        img.save(buf, format=fmt, quality=90)
    return buf.getvalue()


def make_audio(
    freq_hz: float = 440.0, seconds: float = 2.0, sample_rate: int = 16000, channels: int = 1, fmt: str = "WAV"
) -> bytes:
    """A sine tone at half amplitude, in every channel, encoded as WAV, FLAC, OGG (Vorbis) or MP3."""
    fmt = fmt.upper()
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"unsupported audio format {fmt!r}; choose from {tuple(AUDIO_FORMATS)}")
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = (0.5 * np.sin(2 * math.pi * freq_hz * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(tone[:, None], channels, axis=1), sample_rate, format=fmt, subtype=AUDIO_FORMATS[fmt])
    return buf.getvalue()


def make_video(
    shape: str = "circle",
    color: str = "red",
    seconds: float = 2.0,
    fps: int = 10,
    size: int = 128,
    fmt: str = "mp4",
    *,
    width: int | None = None,
) -> bytes:
    """A shape moving left to right across the frame.

    ``fmt`` is "mp4" (H.264, yuv420p), "webm" (VP9) or "webm-vp8". Frames are ``size``
    high and ``width`` (default ``size``) wide; both must be even for yuv420p.
    """
    fmt = fmt.lower()
    if fmt not in _VIDEO_CODECS:
        raise ValueError(f"unsupported video format {fmt!r}; choose from {VIDEO_FORMATS}")
    width = size if width is None else width
    if size % 2 or width % 2:
        raise ValueError(f"frame size {width}x{size} must be even for yuv420p")
    codec, options = _VIDEO_CODECS[fmt]
    fill = ImageColor.getrgb(color)
    n_frames = max(1, round(seconds * fps))
    frames = b"".join(
        _video_frame(shape, fill, width, size, i / max(n_frames - 1, 1)).tobytes() for i in range(n_frames)
    )
    # The raw-frame input and quality flags imageio-ffmpeg's writer used, so samples keep their bytes.
    args = ["-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{size}", "-pix_fmt", "rgb24"]
    args += ["-r", str(fps), "-i", "-", "-an", "-vcodec", codec, "-pix_fmt", "yuv420p"]
    args += ["-crf", "25"] if codec == "libx264" else ["-qscale:v", "16"]
    with ffmpeg.temp_path(".webm" if "webm" in fmt else ".mp4") as path:
        ffmpeg.run([*args, "-v", "error", *options, path], stdin=frames, timeout_s=_FFMPEG_TIMEOUT_S)
        with open(path, "rb") as handle:
            return handle.read()


def _video_frame(shape: str, fill: tuple[int, ...], width: int, height: int, progress: float) -> npt.NDArray[np.uint8]:
    img = Image.new("RGB", (width, height), _BACKGROUND)
    radius = min(width, height) * 0.2
    x = radius + progress * (width - 2 * radius)
    draw_shape(ImageDraw.Draw(img), shape, (x, height / 2), radius, fill)
    return np.asarray(img, dtype=np.uint8)


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill: tuple[int, ...]
) -> None:
    cx, cy = centre
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(centre, [radius] * 3, start_deg=-90), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(centre, [radius, radius * 0.45] * 5, start_deg=-90), fill=fill)
    elif shape == "cross":
        arm = radius / 3
        draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _polygon(centre: tuple[float, float], radii: list[float], start_deg: float) -> list[tuple[float, float]]:
    """Vertices at the given radii, evenly spaced in angle (a regular polygon or a star)."""
    step = 2 * math.pi / len(radii)
    start = math.radians(start_deg)
    return [
        (centre[0] + r * math.cos(start + k * step), centre[1] + r * math.sin(start + k * step))
        for k, r in enumerate(radii)
    ]
