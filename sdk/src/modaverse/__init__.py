"""ModaVerse client SDK."""

from .encoder import EncodedMedia, EncoderClient, media_from_file
from .errors import (
    DeadlineExceeded,
    InvalidArgument,
    ModaverseError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DeadlineExceeded",
    "EncodedMedia",
    "EncoderClient",
    "InvalidArgument",
    "ModaverseError",
    "NotFound",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "media_from_file",
]
