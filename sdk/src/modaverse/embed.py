"""Building Embed requests and reading their answers (shared by both clients)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2

from .chat import MediaInput, media_item
from .tensors import tensor_to_numpy
from .types import Embeddings


def _texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]  # one text, not its characters
    out = list(texts)
    wrong = [type(t).__name__ for t in out if not isinstance(t, str)]
    if wrong:
        raise TypeError(f"texts must be strings, not {', '.join(sorted(set(wrong)))}")
    return out


def build_embed_request(
    texts: Sequence[str] | str,
    images: Sequence[MediaInput],
    audio: Sequence[MediaInput],
    video: Sequence[MediaInput],
) -> tuple[gateway_pb2.EmbedRequest, tuple[int, int, int, int]]:
    """The request (texts, then images, audio and video, each in the order given) and how many of each kind.
    Nothing at all is a ValueError before any call; the gateway checks the items themselves."""
    text_items = [
        common_pb2.Media(modality=common_pb2.MODALITY_TEXT, mime_type="text/plain", data=t.encode("utf-8"))
        for t in _texts(texts)
    ]
    media = [
        [media_item(m, kind) for m in items] for kind, items in (("image", images), ("audio", audio), ("video", video))
    ]
    counts = (len(text_items), *(len(m) for m in media))
    if not any(counts):
        raise ValueError("embed needs at least one text, image, audio or video item")
    request = gateway_pb2.EmbedRequest(items=[*text_items, *(m for group in media for m in group)])
    return request, (counts[0], counts[1], counts[2], counts[3])


def embeddings_from(reply: gateway_pb2.EmbedResponse, counts: tuple[int, int, int, int]) -> Embeddings:
    """The answer split by kind: float32 arrays of shape (n, dim), (0, dim) for a kind with no items."""
    total = sum(counts)
    if len(reply.embeddings) != total:
        raise ValueError(f"the gateway answered {len(reply.embeddings)} embeddings for {total} items")
    rows = [tensor_to_numpy(t).astype(np.float32) for t in reply.embeddings]
    dims = {r.shape for r in rows}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ValueError(f"the gateway answered embeddings of shapes {sorted(dims)}; expected one (dim,) for all")
    matrix = np.stack(rows)  # (total, dim), a fresh writable array
    ends = np.cumsum(counts)
    texts, images, audio, video = (matrix[end - n : end] for n, end in zip(counts, ends, strict=True))
    return Embeddings(texts, images, audio, video, encoder_id=reply.encoder_id, encoder_model=reply.encoder_model)


__all__ = ["build_embed_request", "embeddings_from"]
