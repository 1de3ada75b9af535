from __future__ import annotations

import pytest
import torch

from modaverse_encoder import convert
from modaverse_encoder.base import EncodedItem
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind
from modaverse_runtime.tensors import to_torch


def test_media_inputs_map_modalities_and_normalise_mime() -> None:
    request = encoder_pb2.EncodeRequest(
        media=[
            common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, mime_type=" Image/PNG ", data=b"a"),
            common_pb2.Media(modality=common_pb2.MODALITY_AUDIO, data=b"b"),
            common_pb2.Media(modality=common_pb2.MODALITY_VIDEO, mime_type="video/mp4", data=b"c"),
        ]
    )
    items = convert.media_inputs(request)
    assert [i.kind for i in items] == [MediaKind.IMAGE, MediaKind.AUDIO, MediaKind.VIDEO]
    assert [i.mime_type for i in items] == ["image/png", "", "video/mp4"]
    assert [i.data for i in items] == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    ("media", "fragment"),
    [
        (common_pb2.Media(modality=common_pb2.MODALITY_TEXT, data=b"x"), "MODALITY_TEXT"),
        (common_pb2.Media(modality=42, data=b"x"), "42"),  # type: ignore[arg-type]
        (common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, uri="s3://b/k"), "uri"),
    ],
)
def test_media_inputs_reject(media: common_pb2.Media, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        convert.media_inputs(encoder_pb2.EncodeRequest(media=[media]))


def test_encode_response_casts_rows_and_keeps_vectors_fp32() -> None:
    item = EncodedItem(MediaKind.IMAGE, torch.randn(8), torch.randn(1, 4))
    response = convert.encode_response([item], common_pb2.DTYPE_BFLOAT16, omit_imagebind=False)
    (emb,) = response.embeddings
    assert emb.modality == common_pb2.MODALITY_IMAGE
    assert emb.imagebind.dtype == common_pb2.DTYPE_FLOAT32
    assert torch.equal(to_torch(emb.imagebind), item.imagebind)
    assert emb.projected.dtype == common_pb2.DTYPE_BFLOAT16
    assert torch.equal(to_torch(emb.projected), item.projected.to(torch.bfloat16))
    omitted = convert.encode_response([item], None, omit_imagebind=True)
    assert not omitted.embeddings[0].HasField("imagebind")
