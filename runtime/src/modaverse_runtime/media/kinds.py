"""The media kinds, the MIME types each accepts and their aliases.

Light on purpose (no PIL, soundfile or numpy): the web front door checks media types with the same
tables as the encoder, which alone decodes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class MediaKind(StrEnum):
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


# Canonical type first in each group; aliases map onto it (see ALIASES).
SUPPORTED_MIME_TYPES: Final[dict[MediaKind, tuple[str, ...]]] = {
    MediaKind.IMAGE: ("image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/gif"),
    MediaKind.AUDIO: (
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "audio/mpeg",
        "audio/mp3",
        "audio/x-mp3",
    ),
    MediaKind.VIDEO: ("video/mp4", "video/webm"),
}

ALIASES: Final[dict[str, str]] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/opus": "audio/ogg",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
}


def normalise_mime(mime_type: str) -> str:
    """``"Audio/OGG; codecs=opus"`` → ``"audio/ogg"``: parameters dropped, lower case (aliases kept)."""
    return mime_type.split(";", 1)[0].strip().lower()


def canonical_mime(mime_type: str) -> str:
    """``"Audio/X-WAV; codecs=1"`` → ``"audio/wav"``: parameters dropped, lower case, aliases mapped."""
    mime = normalise_mime(mime_type)
    return ALIASES.get(mime, mime)
