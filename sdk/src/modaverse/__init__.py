"""ModaVerse client SDK: ``Client`` / ``AsyncClient`` for the gateway's any-to-any chat."""

from .chat import GenerationOptions, Turn
from .client import AsyncClient, Client, ModelRoute
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
from .types import ChatEvent, ChatResult, GeneratedMedia, InvocationError, MetaResponse

__all__ = [
    "AsyncClient",
    "ChatEvent",
    "ChatResult",
    "Client",
    "DeadlineExceeded",
    "EncodedMedia",
    "EncoderClient",
    "GeneratedMedia",
    "GenerationOptions",
    "InvalidArgument",
    "InvocationError",
    "MetaResponse",
    "ModaverseError",
    "ModelRoute",
    "NotFound",
    "ResourceExhausted",
    "Turn",
    "Unauthenticated",
    "Unavailable",
    "media_from_file",
]
