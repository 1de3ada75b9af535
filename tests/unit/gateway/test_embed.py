"""The gateway's Embed over a fake encoder backend: validation before any call, the one Encode call it makes
(every item in order, no adaptor rows, the call's deadline), its answer, and the encoder's errors as statuses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest

from modaverse_gateway import convert
from modaverse_gateway.backends import Backends
from modaverse_gateway.encoder_cache import digest
from modaverse_gateway.orchestrator import ChatOrchestrator
from modaverse_gateway.routes import load_routes
from modaverse_gateway.settings import GatewaySettings
from modaverse_gateway.validation import validate_embed
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_runtime.errors import InvalidArgument, ModaverseError, Unavailable

TEXT, IMAGE = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_IMAGE


def text(value: str | bytes) -> common_pb2.Media:
    return common_pb2.Media(modality=TEXT, data=value.encode() if isinstance(value, str) else value)


def image(data: bytes = b"png") -> common_pb2.Media:
    return common_pb2.Media(modality=IMAGE, data=data)


def vector(value: float, dim: int = 4) -> common_pb2.Tensor:
    return common_pb2.Tensor(
        dtype=common_pb2.DTYPE_FLOAT32, shape=[dim], data=np.full(dim, value, np.float32).tobytes()
    )


@dataclass
class FakeBackends:
    """Only ``encode`` exists: an LLM or generator call would be an AttributeError."""

    error: ModaverseError | None = None
    calls: list[tuple[encoder_pb2.EncodeRequest, float | None]] = field(default_factory=list)

    async def encode(self, request: encoder_pb2.EncodeRequest, timeout: float | None) -> encoder_pb2.EncodeResponse:
        self.calls.append((request, timeout))
        if self.error is not None:
            raise self.error
        embeddings = [
            encoder_pb2.Embedding(modality=m.modality, imagebind=vector(float(i))) for i, m in enumerate(request.media)
        ]
        return encoder_pb2.EncodeResponse(embeddings=embeddings, encoder_id="enc-1", encoder_model="imagebind_tiny")


def orchestrator(backends: FakeBackends, **settings: Any) -> ChatOrchestrator:
    return ChatOrchestrator(GatewaySettings(**settings), cast(Backends, backends), load_routes(None, ""))


async def test_one_encode_call_with_every_item_in_order_and_no_rows() -> None:
    backends = FakeBackends()
    items = [text("a red circle"), image(), text("a dog")]
    reply = await orchestrator(backends).embed(gateway_pb2.EmbedRequest(items=items), 12.0)
    ((sent, timeout),) = backends.calls
    assert list(sent.media) == items
    assert sent.omit_projected and not sent.omit_imagebind
    assert timeout is not None and 11.0 < timeout <= 12.0  # the caller's deadline
    assert [float(np.frombuffer(t.data, np.float32)[0]) for t in reply.embeddings] == [0.0, 1.0, 2.0]
    assert (reply.encoder_id, reply.encoder_model) == ("enc-1", "imagebind_tiny")


async def test_without_a_deadline_the_default_applies() -> None:
    backends = FakeBackends()
    await orchestrator(backends, default_deadline_s=30).embed(gateway_pb2.EmbedRequest(items=[text("a")]), None)
    assert 29.0 < cast(float, backends.calls[0][1]) <= 30.0


async def test_an_embed_takes_no_chat_slot() -> None:
    backends = FakeBackends()
    orch = orchestrator(backends, max_concurrent_chats=1)
    async with orch._admitted(None):  # every chat slot taken
        reply = await orch.embed(gateway_pb2.EmbedRequest(items=[text("a")]), None)
    assert len(reply.embeddings) == 1


async def test_encoder_errors_pass_on() -> None:
    backends = FakeBackends(error=Unavailable("encoder: failed to connect to all addresses"))
    with pytest.raises(Unavailable, match=r"^encoder: "):
        await orchestrator(backends).embed(gateway_pb2.EmbedRequest(items=[text("a")]), None)


def test_an_answer_without_a_vector_per_item_is_internal() -> None:
    short = encoder_pb2.EncodeResponse(embeddings=[encoder_pb2.Embedding(imagebind=vector(1.0))])
    with pytest.raises(ModaverseError, match="answered 1 embeddings") as info:
        convert.embed_response(short, 2)
    assert type(info.value) is ModaverseError  # INTERNAL, not the caller's fault
    hollow = encoder_pb2.EncodeResponse(embeddings=[encoder_pb2.Embedding(modality=TEXT)])
    with pytest.raises(ModaverseError, match="with vectors or not"):
        convert.embed_response(hollow, 1)


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        ([], "the request has no items; send at least one text, image, video or audio item"),
        ([text("a")] * 33, "33 items; the limit is 32"),
        ([text("")], r"items\[0\]: the text is empty"),
        ([image(), text("\t \n")], r"items\[1\]: the text is empty"),
        ([text(b"\xc3\x28")], r"items\[0\]: the text is not valid UTF-8 \(byte 0: invalid continuation byte\)"),
        ([text("x" * 9000), text("y" * 7001)], "16001 characters of text; the limit is 16000"),
        ([common_pb2.Media(data=b"x")], r"items\[0\]: modality MODALITY_UNSPECIFIED cannot be embedded"),
        ([common_pb2.Media(modality=9, data=b"x")], "modality 9 cannot be embedded"),  # type: ignore[arg-type]
        ([common_pb2.Media(modality=IMAGE, uri="s3://b/k")], "uri sources are not fetched"),
        ([image(b"")], r"items\[0\]: no bytes"),
        ([image(b"\0" * (32 * 2**20 + 1))], "33554433 bytes; the limit is 33554432"),
    ],
)
def test_bad_requests_are_refused_before_any_call(items: list[common_pb2.Media], fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        validate_embed(gateway_pb2.EmbedRequest(items=items), GatewaySettings())
    backends = FakeBackends()
    with pytest.raises(InvalidArgument):
        asyncio.run(orchestrator(backends).embed(gateway_pb2.EmbedRequest(items=items), None))
    assert backends.calls == []


def test_the_limits_follow_the_settings() -> None:
    validate_embed(gateway_pb2.EmbedRequest(items=[text("a")] * 40), GatewaySettings(max_embed_items=40))
    with pytest.raises(InvalidArgument, match="6 characters of text; the limit is 5"):
        validate_embed(gateway_pb2.EmbedRequest(items=[text("abc"), text("def")]), GatewaySettings(max_text_chars=5))


def test_rows_and_vectors_are_cached_apart() -> None:
    # The chat's row cache keys an item by what the request asks for: rows without the adaptor are another entry.
    item = image()
    rows = encoder_pb2.EncodeRequest(media=[item], omit_imagebind=True)
    vectors = encoder_pb2.EncodeRequest(media=[item], omit_projected=True)
    assert digest(item, rows) != digest(item, vectors)
