"""Proto ↔ domain conversion for the encoder service (unit-tested on its own)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import SUPPORTED_MIME_TYPES, MediaKind
from modaverse_runtime.tensors import from_torch

from .base import EncodedItem, EncoderInfo, MediaInput
from .settings import EncoderSettings

_KIND_FOR_MODALITY = {
    common_pb2.MODALITY_IMAGE: MediaKind.IMAGE,
    common_pb2.MODALITY_VIDEO: MediaKind.VIDEO,
    common_pb2.MODALITY_AUDIO: MediaKind.AUDIO,
}
MODALITY_FOR_KIND = {kind: modality for modality, kind in _KIND_FOR_MODALITY.items()}
_DTYPE_CODES = {
    torch.float32: common_pb2.DTYPE_FLOAT32,
    torch.float16: common_pb2.DTYPE_FLOAT16,
    torch.bfloat16: common_pb2.DTYPE_BFLOAT16,
}


def _modality_name(value: int) -> str:
    return common_pb2.Modality.Name(value) if value in common_pb2.Modality.values() else str(value)  # type: ignore[arg-type]


def media_inputs(request: encoder_pb2.EncodeRequest) -> list[MediaInput]:
    items = []
    for i, media in enumerate(request.media):
        kind = _KIND_FOR_MODALITY.get(media.modality)
        if kind is None:
            name = (
                common_pb2.Modality.Name(media.modality)
                if media.modality in common_pb2.Modality.values()
                else media.modality
            )
            raise InvalidArgument(f"media[{i}]: modality {name} cannot be encoded; use IMAGE, VIDEO or AUDIO")
        if media.WhichOneof("source") == "uri":
            raise InvalidArgument(f"media[{i}]: uri sources are not fetched by the encoder; send the bytes")
        items.append(MediaInput(kind=kind, data=media.data, mime_type=media.mime_type.strip().lower()))
    return items


def output_dtype(request: encoder_pb2.EncodeRequest) -> int | None:
    if request.output_dtype == common_pb2.DTYPE_UNSPECIFIED:
        return None
    if request.output_dtype not in _DTYPE_CODES.values():
        raise InvalidArgument(f"output_dtype {request.output_dtype} is not supported")
    return request.output_dtype


def encode_response(
    items: Sequence[EncodedItem], dtype: int | None, omit_imagebind: bool, encoder_id: str = ""
) -> encoder_pb2.EncodeResponse:
    response = encoder_pb2.EncodeResponse(encoder_id=encoder_id)
    for item in items:
        emb = response.embeddings.add()
        emb.modality = MODALITY_FOR_KIND[item.kind]
        if not omit_imagebind:
            emb.imagebind.CopyFrom(from_torch(item.imagebind, common_pb2.DTYPE_FLOAT32))
        emb.projected.CopyFrom(from_torch(item.projected, dtype))
    return response


def info_response(info: EncoderInfo, settings: EncoderSettings) -> encoder_pb2.InfoResponse:
    return encoder_pb2.InfoResponse(
        encoder_model=info.encoder_model,
        adaptor=info.adaptor,
        adaptor_mode=info.adaptor_mode,
        embed_dim=info.embed_dim,
        llm_hidden_size=info.hidden_size,
        rows_per_item=info.rows_per_item,
        dtype=_DTYPE_CODES.get(info.dtype, common_pb2.DTYPE_UNSPECIFIED),
        modalities=[common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_VIDEO, common_pb2.MODALITY_AUDIO],
        mime_types=sorted({m for mimes in SUPPORTED_MIME_TYPES.values() for m in mimes}),
        limits=encoder_pb2.Limits(
            max_items_per_request=settings.max_items_per_request,
            max_media_bytes=settings.media_limits.max_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_audio_seconds=settings.max_audio_seconds,
            max_video_seconds=settings.max_video_seconds,
            max_message_bytes=settings.max_message_bytes,
        ),
        profile=settings.profile,
        device=info.device,
        encoder_id=info.encoder_id,
    )
