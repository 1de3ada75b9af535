"""Image decoding (PNG, JPEG, WebP, GIF) with Pillow; the pixel count is checked from the header first."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from modaverse_runtime.errors import InvalidArgument

from .checks import checked_mime, describe_error
from .kinds import MediaKind
from .limits import MediaLimits

_PIL_FORMATS: Final[dict[str, str]] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, pixels loaded


def decode_image(data: bytes, mime_type: str, limits: MediaLimits) -> DecodedImage:
    """Decode PNG/JPEG/WebP/GIF bytes to a loaded RGB image (first frame, EXIF-upright)."""
    mime = checked_mime(MediaKind.IMAGE, data, mime_type, limits)
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
        raise InvalidArgument(f"image is too large to decode safely: {describe_error(exc)}") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidArgument(f"image data ({mime}) is corrupt or truncated: {describe_error(exc)}") from exc
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
