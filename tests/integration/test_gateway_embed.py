"""GatewayService.Embed end to end, through the SDK (blocking and asyncio), against the real tiny encoder.

The gateway's LLM target is a dead port (an Embed never reaches the LLM, and no generator is routed). The
vectors the SDK returns are compared with the encoder's own answer for the same items, so what is checked
here is the path (order, splitting by kind, errors, failover); tests/integration/test_encoder_text.py checks
the vectors against ImageBind itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import pytest_asyncio

from modaverse import AsyncClient, Client, Embeddings
from modaverse.errors import InvalidArgument, Unavailable
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from modaverse_runtime import samples
from modaverse_runtime.server import ModaverseServer
from modaverse_runtime.tensors import to_numpy

from .encoder_fixtures import RunningEncoder
from .gateway_fixtures import start_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEAD = "127.0.0.1:1"  # nothing listens: connections are refused at once
TEXT, IMAGE, AUDIO = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_AUDIO


@dataclass
class Stack:
    encoder: RunningEncoder  # the encoder fixture: at most 8 items per request
    gateway: ModaverseServer
    client: AsyncClient

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(encoder: RunningEncoder) -> AsyncIterator[Stack]:
    gateway = await start_gateway(encoder.target, DEAD, max_embed_items=10, max_text_chars=3000, max_media_mb=1)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60)
    yield Stack(encoder, gateway, client)
    await client.close()
    await gateway.stop(1)


async def direct(enc: RunningEncoder, *items: common_pb2.Media) -> np.ndarray:
    """The encoder's own vectors for ``items`` (one Encode call)."""
    reply = await enc.stub.Encode(encoder_pb2.EncodeRequest(media=list(items)))
    return np.stack([to_numpy(e.imagebind) for e in reply.embeddings])


def text(value: str) -> common_pb2.Media:
    return common_pb2.Media(modality=TEXT, mime_type="text/plain", data=value.encode())


IMAGES = [samples.make_image("circle", "red"), samples.make_image("square", "blue")]
AUDIO_CLIP = samples.make_audio(440, 1.0)


async def test_async_embed_splits_by_kind_in_order(stack: Stack) -> None:
    got = await stack.client.embed(["a red circle", "a blue square", "a dog"], images=IMAGES, audio=[AUDIO_CLIP])
    assert isinstance(got, Embeddings)
    assert (got.texts.shape, got.images.shape, got.audio.shape, got.video.shape) == (
        (3, 256),
        (2, 256),
        (1, 256),
        (0, 256),
    )
    assert {a.dtype for a in (got.texts, got.images, got.audio, got.video)} == {np.dtype(np.float32)}
    assert got.dim == 256
    assert got.encoder_model == "imagebind_tiny"
    info = await stack.encoder.stub.Info(encoder_pb2.InfoRequest())
    assert got.encoder_id == info.encoder_id
    expected = await direct(
        stack.encoder,
        text("a red circle"),
        text("a blue square"),
        text("a dog"),
        *(common_pb2.Media(modality=IMAGE, data=d) for d in IMAGES),
        common_pb2.Media(modality=AUDIO, data=AUDIO_CLIP),
    )
    np.testing.assert_allclose(np.concatenate([got.texts, got.images, got.audio]), expected, atol=1e-5)
    # the images are unit vectors (ImageBind's vision head); cosine works for any of them
    np.testing.assert_allclose(np.linalg.norm(got.images, axis=1), 1.0, atol=1e-5)
    similarity = Embeddings.cosine(got.texts, got.images)
    assert similarity.shape == (3, 2)
    assert np.all(np.abs(similarity) <= 1.0 + 1e-6)


async def test_sync_client_and_one_string(stack: Stack) -> None:
    def embed() -> tuple[Embeddings, Embeddings]:
        with Client(stack.target, timeout=60) as client:
            return client.embed("a red circle"), client.embed(images=IMAGES[:1])

    one_text, one_image = await asyncio.to_thread(embed)  # the servers run on this loop
    assert one_text.texts.shape == (1, 256)  # one string is one text, not its characters
    assert (one_text.images.shape, one_text.audio.shape, one_text.video.shape) == ((0, 256),) * 3
    assert (one_image.texts.shape, one_image.images.shape) == ((0, 256), (1, 256))
    np.testing.assert_allclose(one_text.texts, await direct(stack.encoder, text("a red circle")), atol=1e-5)
    again = await stack.client.embed(["a red circle"])
    np.testing.assert_array_equal(again.texts, one_text.texts)  # the same text, the same vector
    other = await stack.client.embed(["a green star"])
    assert float(np.abs(other.texts - one_text.texts).max()) > 1e-2


async def test_video(stack: Stack) -> None:
    got = await stack.client.embed(video=[samples.make_video(seconds=1.0)])
    assert got.video.shape == (1, 256)
    assert got.texts.shape == (0, 256)
    assert np.isfinite(got.video).all()


@pytest.mark.parametrize(
    ("texts", "media", "fragment"),
    [
        ([""], {}, r"items\[0\]: the text is empty"),
        (["a cat", " \n "], {}, r"items\[1\]: the text is empty"),
        (["x" * 1001] * 3, {}, "3003 characters of text; the limit is 3000"),  # the gateway's, all texts together
        (["x" * 2001], {}, r"encoder: media\[0\] \(text\): 2001 characters of text; the limit is 2000"),
        (["a"] * 11, {}, "11 items; the limit is 10"),  # the gateway's max_embed_items
        (["a"] * 9, {}, "encoder: 9 media items in one request; the limit is 8"),  # the encoder's own
        (["a cat"], {"images": [b"not an image"]}, r"encoder: media\[1\] \(image\)"),
        ([], {"audio": [b"\0" * (2**20 + 1)]}, r"items\[0\]: 1048577 bytes; the limit is 1048576"),
    ],
)
async def test_bad_items_are_invalid_argument(
    stack: Stack, texts: list[str], media: dict[str, list[bytes]], fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        await stack.client.embed(texts, **media)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        ([], "the request has no items"),
        ([common_pb2.Media(modality=TEXT, data=b"caf\xe9")], r"items\[0\]: the text is not valid UTF-8 \(byte 3"),
        ([common_pb2.Media(data=b"x")], "modality MODALITY_UNSPECIFIED cannot be embedded"),
        ([common_pb2.Media(modality=TEXT, uri="https://x/y.txt")], "uri sources are not fetched"),
        ([common_pb2.Media(modality=TEXT, mime_type="text/html", data=b"<b>a</b>")], "texts are text/plain in UTF-8"),
    ],
)
async def test_bad_requests_on_the_wire(stack: Stack, items: list[common_pb2.Media], fragment: str) -> None:
    # What the SDK cannot send (it refuses an empty call with a ValueError and sends every text as UTF-8).
    async with grpc.aio.insecure_channel(stack.target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(gateway_pb2.EmbedRequest(items=items), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(fragment, info.value.details() or ""), info.value.details()


async def test_nothing_to_embed_is_refused_before_any_call(stack: Stack) -> None:
    with pytest.raises(ValueError, match="at least one text, image, audio or video item"):
        await stack.client.embed()
    with pytest.raises(TypeError, match="texts must be strings"):
        await stack.client.embed([b"bytes are not text"])  # type: ignore[list-item]


async def test_a_down_encoder_is_unavailable_and_a_live_replica_is_failed_over_to(stack: Stack) -> None:
    gateway = await start_gateway(DEAD, DEAD, retry_attempts=2, retry_backoff_ms=10)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=30, retry=None)
    try:
        with pytest.raises(Unavailable) as info:
            await client.embed(["a red circle"])
        assert info.value.details.startswith("encoder: "), info.value.details
    finally:
        await client.close()
        await gateway.stop(1)
    # A dead replica listed first: the call fails over to the live one, as a chat's encode does.
    gateway = await start_gateway(f"{DEAD},{stack.encoder.target}", DEAD, retry_attempts=3, retry_backoff_ms=10)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=30, retry=None)
    try:
        for _ in range(3):  # round-robin starts on the dead replica at least once
            assert (await client.embed(["a red circle"])).texts.shape == (1, 256)
    finally:
        await client.close()
        await gateway.stop(1)
