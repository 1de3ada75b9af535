from __future__ import annotations

import pytest
import torch

from modaverse_encoder import convert
from modaverse_encoder.base import TEXT, EncodedItem, MediaInput, TextInput
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
    items = [i for i in convert.media_inputs(request) if isinstance(i, MediaInput)]
    assert [i.kind for i in items] == [MediaKind.IMAGE, MediaKind.AUDIO, MediaKind.VIDEO]
    assert [i.mime_type for i in items] == ["image/png", "", "video/mp4"]
    assert [i.data for i in items] == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    ("media", "fragment"),
    [
        (
            common_pb2.Media(data=b"x"),
            "MODALITY_UNSPECIFIED cannot be encoded; use IMAGE, VIDEO, AUDIO or TEXT",
        ),
        (common_pb2.Media(modality=42, data=b"x"), "42"),  # type: ignore[arg-type]
        (common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, uri="s3://b/k"), "uri"),
    ],
)
def test_media_inputs_reject(media: common_pb2.Media, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        convert.media_inputs(encoder_pb2.EncodeRequest(media=[media]))


def test_texts_become_text_inputs_in_place() -> None:
    text = common_pb2.MODALITY_TEXT
    request = encoder_pb2.EncodeRequest(
        media=[
            common_pb2.Media(modality=text, mime_type="text/plain", data=b"a red circle"),
            common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=b"a"),
            common_pb2.Media(modality=text, data="één ☃".encode()),
            common_pb2.Media(modality=text, mime_type='TEXT/PLAIN; charset="utf-8"', data=b"x"),
        ]
    )
    items = convert.media_inputs(request)
    assert items[0] == TextInput("a red circle")
    assert items[1].kind == MediaKind.IMAGE
    assert items[2] == TextInput("één ☃")
    assert items[3] == TextInput("x")
    assert [i.kind for i in items] == [TEXT, MediaKind.IMAGE, TEXT, TEXT]


@pytest.mark.parametrize(
    ("media", "options", "fragment"),
    [
        (b"\xff\xfe", {}, r"media\[0\] \(text\): not valid UTF-8 \(byte 0"),
        (b"ok \xe2\x98", {}, "byte 3: unexpected end of data"),
        (("a", "text/markdown"), {}, "mime_type 'text/markdown'; texts are text/plain in UTF-8"),
        (("a", "text/plain; charset=utf-16"), {}, "texts are text/plain in UTF-8"),
        (b"a", {"omit_imagebind": True}, "do not set omit_imagebind"),
        (b"a", {"omit_imagebind": True, "omit_projected": True}, "leave nothing to return"),
    ],
)
def test_bad_texts_and_options_are_refused(
    media: bytes | tuple[str, str], options: dict[str, bool], fragment: str
) -> None:
    data, mime = (media, "") if isinstance(media, bytes) else (media[0].encode(), media[1])
    item = common_pb2.Media(modality=common_pb2.MODALITY_TEXT, mime_type=mime, data=data)
    with pytest.raises(InvalidArgument, match=fragment):
        convert.media_inputs(encoder_pb2.EncodeRequest(media=[item], **options))  # type: ignore[arg-type]


def test_text_items_have_a_vector_and_no_rows() -> None:
    items = [EncodedItem(TEXT, torch.randn(8), None), EncodedItem(MediaKind.AUDIO, torch.randn(8), None)]
    response = convert.encode_response(items, None, omit_imagebind=False, encoder_id="id", encoder_model="m")
    assert [e.modality for e in response.embeddings] == [common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO]
    assert [e.HasField("projected") for e in response.embeddings] == [False, False]
    assert torch.equal(to_torch(response.embeddings[0].imagebind), items[0].imagebind)
    assert (response.encoder_id, response.encoder_model) == ("id", "m")


def test_encode_response_casts_rows_and_keeps_vectors_fp32() -> None:
    item = EncodedItem(MediaKind.IMAGE, torch.randn(8), torch.randn(1, 4))
    assert item.projected is not None
    response = convert.encode_response([item], common_pb2.DTYPE_BFLOAT16, omit_imagebind=False)
    (emb,) = response.embeddings
    assert emb.modality == common_pb2.MODALITY_IMAGE
    assert emb.imagebind.dtype == common_pb2.DTYPE_FLOAT32
    assert torch.equal(to_torch(emb.imagebind), item.imagebind)
    assert emb.projected.dtype == common_pb2.DTYPE_BFLOAT16
    assert torch.equal(to_torch(emb.projected), item.projected.to(torch.bfloat16))
    omitted = convert.encode_response([item], None, omit_imagebind=True)
    assert not omitted.embeddings[0].HasField("imagebind")
