"""User media: kinds and MIME types, sniffing and limits (light), and decoding per kind (heavy).

``from modaverse_runtime.media import MediaKind`` loads no decoder library: the web front door and
SDK-side code use the tables on machines without the media extras. The decoders load on first use
of their names here, or when their module is imported:

=============  ====================================================  ======================
module         holds                                                 loads
=============  ====================================================  ======================
``kinds``      ``MediaKind``, ``SUPPORTED_MIME_TYPES``, aliases      nothing
``sniffing``   ``sniff_mime``                                        nothing
``limits``     ``MediaLimits``                                       nothing
``checks``     the size and type checks every decoder runs first     nothing
``image``      ``DecodedImage``, ``decode_image``                    Pillow, numpy
``audio``      ``DecodedAudio``, ``decode_audio``                    soundfile, numpy
``video``      ``DecodedVideo``, ``decode_video``                    numpy, ffmpeg
``ffmpeg``     the one ffmpeg runner (also the generators')          imageio-ffmpeg's binary
``decode``     ``decode_media`` (by kind)                            all of the above
=============  ====================================================  ======================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from .kinds import ALIASES, SUPPORTED_MIME_TYPES, MediaKind, canonical_mime
from .limits import MediaLimits
from .sniffing import sniff_mime

__all__ = [
    "ALIASES",
    "SUPPORTED_MIME_TYPES",
    "DecodedAudio",
    "DecodedImage",
    "DecodedVideo",
    "MediaKind",
    "MediaLimits",
    "canonical_mime",
    "decode_audio",
    "decode_image",
    "decode_media",
    "decode_video",
    "sniff_mime",
]

# Heavy name -> the module defining it, imported on first access (PEP 562).
_LAZY: Final[dict[str, str]] = {
    "DecodedImage": "image",
    "decode_image": "image",
    "DecodedAudio": "audio",
    "decode_audio": "audio",
    "DecodedVideo": "video",
    "decode_video": "video",
    "decode_media": "decode",
}

if TYPE_CHECKING:  # mypy sees the real names; a module __getattr__ would make any name Any.
    from .audio import DecodedAudio, decode_audio
    from .decode import decode_media
    from .image import DecodedImage, decode_image
    from .video import DecodedVideo, decode_video
else:

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})
