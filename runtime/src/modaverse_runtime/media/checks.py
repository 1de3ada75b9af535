"""What every decoder checks first (size, declared and sniffed type) and how it words a decoder failure."""

from __future__ import annotations

import re

from modaverse_runtime.errors import InvalidArgument

from .kinds import SUPPORTED_MIME_TYPES, MediaKind, canonical_mime, normalise_mime
from .limits import MediaLimits
from .sniffing import sniff_mime


def checked_mime(kind: MediaKind, data: bytes, mime_type: str, limits: MediaLimits) -> str:
    """Validate size and type; return the canonical MIME type of the content."""
    if not data:
        raise InvalidArgument(f"{kind.value} data is empty")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"{kind.value} data is {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    declared = normalise_mime(mime_type)
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
    if sniffed.split("/", 1)[0] != kind.value:
        raise InvalidArgument(f"expected {kind.value} data{said}, but the content looks like {sniffed}")
    if sniffed not in supported:
        raise InvalidArgument(
            f"{kind.value} content looks like {sniffed}, which is not supported (supported: {', '.join(supported)})"
        )
    if declared and canonical_mime(declared) != sniffed:
        raise InvalidArgument(f"declared mime type {declared} does not match the content, which looks like {sniffed}")
    return sniffed


def describe_error(exc: BaseException) -> str:
    """The first line of a decoder library's message, without the object reprs some of them embed."""
    # libsndfile's messages embed the repr of our BytesIO; its error_string does not.
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    text = re.sub(r"<[^<>]* at 0x[0-9a-f]+>:?\s*", "", str(text))
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
