"""Building Embed requests and reading their answers, without a server: the order of the items, one string as
one text, media as for a chat, the answer split by kind (empty kinds (0, dim)), malformed answers, cosine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modaverse import AsyncClient, Client, Embeddings
from modaverse.embed import build_embed_request, embeddings_from
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2

TEXT, IMAGE, AUDIO, VIDEO = (
    common_pb2.MODALITY_TEXT,
    common_pb2.MODALITY_IMAGE,
    common_pb2.MODALITY_AUDIO,
    common_pb2.MODALITY_VIDEO,
)


def reply(rows: np.ndarray, encoder_id: str = "enc", model: str = "imagebind_huge") -> gateway_pb2.EmbedResponse:
    tensors = [
        common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[len(r)], data=r.astype("<f4").tobytes()) for r in rows
    ]
    return gateway_pb2.EmbedResponse(embeddings=tensors, encoder_id=encoder_id, encoder_model=model)


def test_texts_then_images_audio_video_in_the_order_given(tmp_path: Path) -> None:
    flac = tmp_path / "a.flac"
    flac.write_bytes(b"fLaC")
    given = common_pb2.Media(modality=VIDEO, mime_type="video/mp4", data=b"mp4")
    request, counts = build_embed_request(["a red circle", "éclair ☃"], [b"png1", b"png2"], [flac], [given])
    assert counts == (2, 2, 1, 1)
    assert [m.modality for m in request.items] == [TEXT, TEXT, IMAGE, IMAGE, AUDIO, VIDEO]
    assert [m.data for m in request.items[:4]] == [b"a red circle", "éclair ☃".encode(), b"png1", b"png2"]
    assert {m.mime_type for m in request.items[:2]} == {"text/plain"}
    assert request.items[2].mime_type == ""  # bytes: the server sniffs the type
    assert (request.items[4].mime_type, request.items[4].data) == ("audio/flac", b"fLaC")  # from the extension
    assert request.items[5] == given


def test_one_string_is_one_text() -> None:
    request, counts = build_embed_request("a red circle", (), (), ())
    assert counts == (1, 0, 0, 0)
    assert request.items[0].data == b"a red circle"


def test_nothing_or_non_strings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one text, image, audio or video item"):
        build_embed_request([], [], [], [])
    with pytest.raises(TypeError, match="texts must be strings, not bytes, int"):
        build_embed_request(["ok", b"x", 3], [], [], [])  # type: ignore[list-item]


async def test_both_clients_refuse_nothing_before_any_call() -> None:
    # Nothing listens at the target: a call would fail with UNAVAILABLE, not ValueError.
    with Client("127.0.0.1:1", timeout=5, retry=None) as client, pytest.raises(ValueError, match="at least one"):
        client.embed()
    async with AsyncClient("127.0.0.1:1", timeout=5, retry=None) as aclient:
        with pytest.raises(ValueError, match="at least one"):
            await aclient.embed([], images=[])


def test_the_answer_is_split_by_kind() -> None:
    rows = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    got = embeddings_from(reply(rows), (2, 0, 3, 0))
    np.testing.assert_array_equal(got.texts, rows[:2])
    np.testing.assert_array_equal(got.audio, rows[2:])
    assert got.images.shape == got.video.shape == (0, 3)
    assert all(a.dtype == np.float32 for a in (got.texts, got.images, got.audio, got.video))
    assert (got.dim, got.encoder_id, got.encoder_model) == (3, "enc", "imagebind_huge")
    got.texts[0, 0] = 7.0  # writable: the caller's to normalise in place


def test_half_precision_answers_come_back_as_float32() -> None:
    tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT16, shape=[2], data=np.array([1.5, -2], "<f2").tobytes())
    got = embeddings_from(gateway_pb2.EmbedResponse(embeddings=[tensor]), (0, 1, 0, 0))
    assert got.images.dtype == np.float32
    np.testing.assert_array_equal(got.images, [[1.5, -2.0]])


@pytest.mark.parametrize(
    ("answer", "counts", "fragment"),
    [
        (reply(np.zeros((2, 3), np.float32)), (3, 0, 0, 0), "answered 2 embeddings for 3 items"),
        (
            gateway_pb2.EmbedResponse(
                embeddings=[*reply(np.zeros((1, 3), np.float32)).embeddings, *reply(np.zeros((1, 4))).embeddings]
            ),
            (2, 0, 0, 0),
            "shapes",
        ),
    ],
)
def test_a_malformed_answer_is_a_value_error(
    answer: gateway_pb2.EmbedResponse, counts: tuple[int, int, int, int], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        embeddings_from(answer, counts)


def test_cosine_of_rows() -> None:
    a = np.array([[3.0, 0.0], [0.0, 0.5], [0.0, 0.0]], np.float32)
    b = np.array([[20.0, 0.0], [1.0, 1.0]], np.float32)
    sims = Embeddings.cosine(a, b)
    assert sims.shape == (3, 2) and sims.dtype == np.float32
    np.testing.assert_allclose(sims, [[1.0, 2**-0.5], [0.0, 2**-0.5], [0.0, 0.0]], atol=1e-6)
    assert Embeddings.cosine(a[0], b[1]).shape == (1, 1)  # one vector each
