"""Proto ↔ domain conversion for the encoder service (unit-tested on its own)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import SUPPORTED_MIME_TYPES, MediaKind
from modaverse_runtime.media.kinds import normalise_mime
from modaverse_runtime.tensors import from_torch

from .base import TEXT, EncodedItem, EncoderInfo, EncoderInput, ItemKind, MediaInput, TextInput
from .settings import EncoderSettings

_KIND_FOR_MODALITY = {
    common_pb2.MODALITY_IMAGE: MediaKind.IMAGE,
    common_pb2.MODALITY_VIDEO: MediaKind.VIDEO,
    common_pb2.MODALITY_AUDIO: MediaKind.AUDIO,
}
MODALITY_FOR_KIND: dict[ItemKind, common_pb2.Modality.ValueType] = {
    **{kind: modality for modality, kind in _KIND_FOR_MODALITY.items()},
    TEXT: common_pb2.MODALITY_TEXT,
}
TEXT_MIME = "text/plain"
_MEDIA_MODALITIES = [common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_VIDEO, common_pb2.MODALITY_AUDIO]
_DTYPE_CODES = {
    torch.float32: common_pb2.DTYPE_FLOAT32,
    torch.float16: common_pb2.DTYPE_FLOAT16,
    torch.bfloat16: common_pb2.DTYPE_BFLOAT16,
}


def _modality_name(value: int) -> str:
    return common_pb2.Modality.Name(value) if value in common_pb2.Modality.values() else str(value)  # type: ignore[arg-type]


def _charset(mime_type: str) -> str:
    """``"text/plain; charset=UTF-8"`` → ``"utf-8"``; "" when the type names none."""
    for param in mime_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _text(index: int, media: common_pb2.Media) -> TextInput:
    """A text item: ``text/plain`` (UTF-8; another charset is refused) or no type, the bytes decoded strictly."""
    if normalise_mime(media.mime_type) not in ("", TEXT_MIME) or _charset(media.mime_type) not in ("", "utf-8", "utf8"):
        raise InvalidArgument(f"media[{index}] (text): mime_type {media.mime_type!r}; texts are {TEXT_MIME} in UTF-8")
    try:
        return TextInput(media.data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"media[{index}] (text): not valid UTF-8 (byte {exc.start}: {exc.reason}); send the text as UTF-8"
        ) from None


def media_inputs(request: encoder_pb2.EncodeRequest) -> list[EncoderInput]:
    """The request's items; texts (MODALITY_TEXT) become :class:`TextInput`. Options that would leave an
    item with nothing to return are refused here, before any work."""
    if request.omit_imagebind and request.omit_projected:
        raise InvalidArgument("omit_imagebind and omit_projected together leave nothing to return; set at most one")
    items: list[EncoderInput] = []
    for i, media in enumerate(request.media):
        kind = _KIND_FOR_MODALITY.get(media.modality)
        if kind is None and media.modality != common_pb2.MODALITY_TEXT:
            name = _modality_name(media.modality)
            raise InvalidArgument(f"media[{i}]: modality {name} cannot be encoded; use IMAGE, VIDEO, AUDIO or TEXT")
        if media.WhichOneof("source") == "uri":
            raise InvalidArgument(f"media[{i}]: uri sources are not fetched by the encoder; send the bytes")
        if kind is None:
            if request.omit_imagebind:
                raise InvalidArgument(
                    f"media[{i}] (text): a text's one output is its ImageBind vector; do not set omit_imagebind"
                )
            items.append(_text(i, media))
        else:
            items.append(MediaInput(kind=kind, data=media.data, mime_type=media.mime_type.strip().lower()))
    return items


def output_dtype(request: encoder_pb2.EncodeRequest) -> int | None:
    if request.output_dtype == common_pb2.DTYPE_UNSPECIFIED:
        return None
    if request.output_dtype not in _DTYPE_CODES.values():
        raise InvalidArgument(f"output_dtype {request.output_dtype} is not supported")
    return request.output_dtype


def encode_response(
    items: Sequence[EncodedItem], dtype: int | None, omit_imagebind: bool, encoder_id: str = "", encoder_model: str = ""
) -> encoder_pb2.EncodeResponse:
    """``projected`` is set for the items that have rows (media, unless projection was skipped)."""
    response = encoder_pb2.EncodeResponse(encoder_id=encoder_id, encoder_model=encoder_model)
    for item in items:
        emb = response.embeddings.add()
        emb.modality = MODALITY_FOR_KIND[item.kind]
        if not omit_imagebind:
            emb.imagebind.CopyFrom(from_torch(item.imagebind, common_pb2.DTYPE_FLOAT32))
        if item.projected is not None:
            emb.projected.CopyFrom(from_torch(item.projected, dtype))
    return response


def info_response(info: EncoderInfo, settings: EncoderSettings) -> encoder_pb2.InfoResponse:
    text_types = {TEXT_MIME} if info.accepts_text else set()
    return encoder_pb2.InfoResponse(
        encoder_model=info.encoder_model,
        adaptor=info.adaptor,
        adaptor_mode=info.adaptor_mode,
        embed_dim=info.embed_dim,
        llm_hidden_size=info.hidden_size,
        rows_per_item=info.rows_per_item,
        dtype=_DTYPE_CODES.get(info.dtype, common_pb2.DTYPE_UNSPECIFIED),
        modalities=[*_MEDIA_MODALITIES, *([common_pb2.MODALITY_TEXT] if info.accepts_text else [])],
        mime_types=sorted({m for mimes in SUPPORTED_MIME_TYPES.values() for m in mimes} | text_types),
        limits=encoder_pb2.Limits(
            max_items_per_request=settings.max_items_per_request,
            max_media_bytes=settings.media_limits.max_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_audio_seconds=settings.max_audio_seconds,
            max_video_seconds=settings.max_video_seconds,
            max_message_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_item_chars if info.accepts_text else 0,
        ),
        profile=settings.profile,
        device=info.device,
        encoder_id=info.encoder_id,
    )
