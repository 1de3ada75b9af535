"""ModaVerse client SDK: ``Client`` / ``AsyncClient`` for the gateway's any-to-any chat."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

from modaverse_protos import __version__ as API_VERSION

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
from .retry import RetryPolicy
from .types import (
    ChatEvent,
    ChatResult,
    Done,
    Embeddings,
    GeneratedMedia,
    Invocation,
    InvocationDone,
    InvocationError,
    InvocationStarted,
    MediaChunk,
    MetaResponse,
    Progress,
    TextDelta,
)

try:
    __version__ = _distribution_version("modaverse")
except PackageNotFoundError:  # imported from a source tree without being installed
    __version__ = "0+unknown"

__all__ = [
    "API_VERSION",
    "AsyncClient",
    "ChatEvent",
    "ChatResult",
    "Client",
    "DeadlineExceeded",
    "Done",
    "Embeddings",
    "EncodedMedia",
    "EncoderClient",
    "GeneratedMedia",
    "GenerationOptions",
    "InvalidArgument",
    "Invocation",
    "InvocationDone",
    "InvocationError",
    "InvocationStarted",
    "MediaChunk",
    "MetaResponse",
    "ModaverseError",
    "ModelRoute",
    "NotFound",
    "Progress",
    "ResourceExhausted",
    "RetryPolicy",
    "TextDelta",
    "Turn",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "media_from_file",
]
