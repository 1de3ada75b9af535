"""Decoding by kind: the encoder's one entry point. Importing this loads every decoder library.

Every problem with the input (empty, too large, wrong or unsupported type, corrupt, truncated,
over a size or length limit) is raised as :class:`~modaverse_runtime.errors.InvalidArgument` with a
message meant for the caller; no decoder library exception escapes. Sizes and lengths are checked
from the container headers before the payload is decoded, so a small file that claims a huge image
or a very long recording costs almost nothing to reject.
"""

from __future__ import annotations

from typing import TypeAlias

from modaverse_runtime.errors import InvalidArgument

from .audio import DecodedAudio, decode_audio
from .image import DecodedImage, decode_image
from .kinds import MediaKind
from .limits import MediaLimits
from .video import DecodedVideo, decode_video

__all__ = ["Decoded", "DecodedAudio", "DecodedImage", "DecodedVideo", "decode_media"]

Decoded: TypeAlias = DecodedImage | DecodedAudio | DecodedVideo


def decode_media(kind: MediaKind, data: bytes, mime_type: str, limits: MediaLimits) -> Decoded:
    if kind is MediaKind.IMAGE:
        return decode_image(data, mime_type, limits)
    if kind is MediaKind.AUDIO:
        return decode_audio(data, mime_type, limits)
    if kind is MediaKind.VIDEO:
        return decode_video(data, mime_type, limits)
    raise InvalidArgument(f"unknown media kind {kind!r}")
