"""A direct client for the encoder service (the gateway's clients normally never need it; the gateway's
``Embed``, the clients' ``embed``, gives ImageBind vectors of texts and media)."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc

from .errors import ModaverseError, from_rpc_error
from .tensors import tensor_to_numpy

# The SDK's one modality table: names used in the API ("image", …) ↔ common.v1.Modality.
MEDIA_MODALITIES = {
    "image": common_pb2.MODALITY_IMAGE,
    "audio": common_pb2.MODALITY_AUDIO,
    "video": common_pb2.MODALITY_VIDEO,
}
MODALITY_NAMES = {common_pb2.MODALITY_TEXT: "text", **{v: k for k, v in MEDIA_MODALITIES.items()}}
_EXTRA_TYPES = {".webp": "image/webp", ".flac": "audio/flac", ".ogg": "audio/ogg", ".webm": "video/webm"}


def media_from_file(path: str | Path, modality: str | None = None) -> common_pb2.Media:
    """A Media message from a file; modality and MIME type come from the extension."""
    p = Path(path)
    mime = _EXTRA_TYPES.get(p.suffix.lower()) or mimetypes.guess_type(p.name)[0] or ""
    kind = modality or mime.split("/")[0]
    if kind not in MEDIA_MODALITIES:
        raise ValueError(f"cannot tell the modality of {p.name}; pass modality='image'|'audio'|'video'")
    return common_pb2.Media(modality=MEDIA_MODALITIES[kind], mime_type=mime, data=p.read_bytes())


@dataclass(frozen=True)
class EncodedMedia:
    modality: str
    imagebind: np.ndarray[Any, Any] | None  # (embed_dim,)
    # (rows, hidden); float32 or float16 (bfloat16 arrives widened to float32); (0, 0) for a text, which has no rows
    projected: np.ndarray[Any, Any]


class EncoderClient:
    def __init__(self, target: str, *, max_message_mb: int = 64, timeout: float | None = 60.0) -> None:
        options = [
            ("grpc.max_send_message_length", max_message_mb * 2**20),
            ("grpc.max_receive_message_length", max_message_mb * 2**20),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EncoderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def serving(self) -> bool:
        """True once the models are loaded (grpc.health.v1 says SERVING)."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def info(self) -> encoder_pb2.InfoResponse:
        with self._errors():
            reply: encoder_pb2.InfoResponse = self._stub.Info(encoder_pb2.InfoRequest(), timeout=self.timeout)
            return reply

    def encode(self, media: Sequence[common_pb2.Media], *, with_imagebind: bool = True) -> list[EncodedMedia]:
        request = encoder_pb2.EncodeRequest(media=list(media), omit_imagebind=not with_imagebind)
        with self._errors():
            reply = self._stub.Encode(request, timeout=self.timeout)
        out = []
        for emb in reply.embeddings:
            vector = tensor_to_numpy(emb.imagebind) if emb.HasField("imagebind") and emb.imagebind.data else None
            rows = tensor_to_numpy(emb.projected) if emb.HasField("projected") else np.zeros((0, 0), np.float32)
            out.append(EncodedMedia(MODALITY_NAMES.get(emb.modality, "?"), vector, rows))
        return out


__all__ = ["EncodedMedia", "EncoderClient", "ModaverseError", "media_from_file"]
