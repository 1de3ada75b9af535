"""The gateway's encoder row cache: the LRU's bound and order, and which items reach the encoder (over a
recording encoder function; test_gateway_encoder_cache.py runs it against the real encoder)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from grpc import aio

from modaverse_gateway.encoder_cache import CachingEncoder, RowCache, digest
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.tensors import from_numpy

IMAGE = common_pb2.MODALITY_IMAGE


def media(data: bytes, modality: common_pb2.Modality.ValueType = IMAGE) -> common_pb2.Media:
    return common_pb2.Media(modality=modality, data=data)


def embedding(value: float, size: int = 8) -> encoder_pb2.Embedding:
    return encoder_pb2.Embedding(modality=IMAGE, projected=from_numpy(np.full((1, size), value, np.float32)))


@dataclass
class Encoder:
    """Records the items of each Encode call; an item's row is its first byte, so splicing can be checked."""

    encoder_id: str = "enc-1"
    calls: list[list[bytes]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    failures: int = 0  # the first calls that fail (UNAVAILABLE)

    async def __call__(self, request: encoder_pb2.EncodeRequest, timeout: float | None) -> encoder_pb2.EncodeResponse:
        self.calls.append([m.data for m in request.media])
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), details="down")
        return encoder_pb2.EncodeResponse(
            embeddings=[embedding(m.data[0]) for m in request.media], encoder_id=self.encoder_id
        )


def rows(response: encoder_pb2.EncodeResponse) -> list[float]:
    return [float(np.frombuffer(e.projected.data, np.float32)[0]) for e in response.embeddings]


def request(*items: bytes) -> encoder_pb2.EncodeRequest:
    return encoder_pb2.EncodeRequest(media=[media(d) for d in items], omit_imagebind=True)


def test_the_lru_keeps_its_bytes_under_the_bound_and_evicts_the_least_recently_used() -> None:
    size = embedding(0).ByteSize()
    cache = RowCache(3 * size)
    for i in range(3):
        cache.put(("id", bytes([i])), embedding(i))
    assert cache.bytes == 3 * size and len(cache) == 3
    assert cache.get(("id", b"\0")) is not None  # 0 is now the most recently used
    cache.put(("id", b"\3"), embedding(3))
    assert cache.get(("id", b"\1")) is None  # the least recently used went
    assert [cache.get(("id", bytes([i]))) is not None for i in (0, 2, 3)] == [True, True, True]
    cache.put(("id", b"\3"), embedding(3))  # replacing an entry does not count it twice
    assert cache.bytes == 3 * size and len(cache) == 3
    cache.put(("id", b"big"), embedding(9, size=100))  # larger than the whole cache: not kept, nothing evicted
    assert cache.get(("id", b"big")) is None and len(cache) == 3


def test_the_digest_covers_the_bytes_the_modality_the_mime_type_and_the_requested_output() -> None:
    plain = request()
    base = digest(media(b"x"), plain)
    assert digest(media(b"x"), plain) == base
    assert digest(media(b"y"), plain) != base
    assert digest(media(b"x", common_pb2.MODALITY_AUDIO), plain) != base
    assert digest(common_pb2.Media(modality=IMAGE, mime_type="image/png", data=b"x"), plain) != base
    assert digest(media(b"x"), encoder_pb2.EncodeRequest(output_dtype=common_pb2.DTYPE_FLOAT16)) != base


async def test_a_turn_sends_only_the_items_not_seen_before_and_splices_the_rows_in_order() -> None:
    encoder = Encoder()
    cache = CachingEncoder(encoder, 1 << 20)
    assert rows(await cache.encode(request(b"\1"), None)) == [1]
    assert rows(await cache.encode(request(b"\1", b"\2"), None)) == [1, 2]
    assert rows(await cache.encode(request(b"\3", b"\1", b"\2", b"\3"), None)) == [3, 1, 2, 3]
    assert encoder.calls == [[b"\1"], [b"\2"], [b"\3"]]  # an item twice in one request is sent once
    assert rows(await cache.encode(request(b"\2", b"\1"), None)) == [2, 1]
    assert len(encoder.calls) == 3  # nothing new: no call


async def test_rows_are_reused_only_under_the_encoder_id_they_were_made_with() -> None:
    encoder = Encoder()
    cache = CachingEncoder(encoder, 1 << 20)
    await cache.encode(request(b"\1"), None)
    encoder.encoder_id = "enc-2"  # a rollout: other weights from now on
    reply = await cache.encode(request(b"\1", b"\2"), None)
    # The reply came under another id: item 1's old rows are not mixed in; it is encoded under the new id.
    assert encoder.calls == [[b"\1"], [b"\2"], [b"\1"]]
    assert rows(reply) == [1, 2] and reply.encoder_id == "enc-2"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_turn_fully_cached_asks_the_encoder_for_its_id_once_it_is_old() -> None:
    """Rows are never used past a rollout the cache could not hear of: a turn whose items are all cached
    asks for the id (Info) when it was last heard over id_ttl_s ago; within it, no call at all."""
    encoder, clock = Encoder(), Clock()
    asked: list[str] = []

    async def identify(timeout: float | None) -> str:
        asked.append(encoder.encoder_id)
        return encoder.encoder_id

    cache = CachingEncoder(encoder, 1 << 20, identify=identify, id_ttl_s=30.0, clock=clock)
    await cache.encode(request(b"\1"), None)
    clock.now = 29.0
    await cache.encode(request(b"\1"), None)
    assert encoder.calls == [[b"\1"]] and asked == []  # fresh: served from the cache alone
    clock.now = 31.0
    await cache.encode(request(b"\1"), None)
    assert encoder.calls == [[b"\1"]] and asked == ["enc-1"]  # old: asked, same id, rows reused
    clock.now = 40.0
    await cache.encode(request(b"\1"), None)
    assert asked == ["enc-1"]  # the answer counts as hearing the id
    clock.now = 80.0
    encoder.encoder_id = "enc-2"  # rolled out while the cache heard nothing
    reply = await cache.encode(request(b"\1"), None)
    assert asked == ["enc-1", "enc-2"] and encoder.calls == [[b"\1"], [b"\1"]]
    assert reply.encoder_id == "enc-2"


async def test_concurrent_turns_share_one_id_question_and_its_failure_is_theirs() -> None:
    encoder, clock = Encoder(), Clock()
    gate = asyncio.Event()
    asked = [0]

    async def identify(timeout: float | None) -> str:
        asked[0] += 1
        await gate.wait()
        raise aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), details="down")

    cache = CachingEncoder(encoder, 1 << 20, identify=identify, id_ttl_s=1.0, clock=clock)
    await cache.encode(request(b"\1"), None)
    clock.now = 5.0
    turns = [asyncio.ensure_future(cache.encode(request(b"\1"), None)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*turns, return_exceptions=True)
    assert asked == [1]
    assert all(isinstance(r, aio.AioRpcError) for r in results)


async def test_an_encoder_without_an_id_gets_every_item_each_time() -> None:
    encoder = Encoder(encoder_id="")
    cache = CachingEncoder(encoder, 1 << 20)
    await cache.encode(request(b"\1"), None)
    await cache.encode(request(b"\1", b"\2"), None)
    assert encoder.calls == [[b"\1"], [b"\1", b"\2"]]


async def test_size_zero_turns_the_cache_off() -> None:
    encoder = Encoder()
    cache = CachingEncoder(encoder, 0)
    for _ in range(2):
        await cache.encode(request(b"\1", b"\1"), None)
    assert encoder.calls == [[b"\1", b"\1"]] * 2


async def test_concurrent_requests_for_the_same_item_share_one_encode() -> None:
    gate = asyncio.Event()
    encoder = Encoder(gate=gate)
    cache = CachingEncoder(encoder, 1 << 20)
    cache.encoder_id = "enc-1"  # as after an earlier chat
    first = asyncio.ensure_future(cache.encode(request(b"\1"), None))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(cache.encode(request(b"\1", b"\2"), None))
    await asyncio.sleep(0)
    gate.set()
    assert rows(await first) == [1] and rows(await second) == [1, 2]
    assert encoder.calls == [[b"\1"], [b"\2"]]  # the second waited for the first's item 1


async def test_when_the_sending_request_fails_a_waiting_one_sends_the_item_itself() -> None:
    gate = asyncio.Event()
    encoder = Encoder(gate=gate, failures=1)
    cache = CachingEncoder(encoder, 1 << 20)
    cache.encoder_id = "enc-1"
    owner = asyncio.ensure_future(cache.encode(request(b"\1"), None))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(cache.encode(request(b"\1"), None))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(aio.AioRpcError):
        await owner
    assert rows(await waiter) == [1]
    assert encoder.calls == [[b"\1"], [b"\1"]]


async def test_a_refused_item_is_named_by_its_place_in_the_whole_request() -> None:
    async def encode(request: encoder_pb2.EncodeRequest, timeout: float | None) -> encoder_pb2.EncodeResponse:
        sent.append([m.data for m in request.media])
        for i, m in enumerate(request.media):
            if m.data == b"bad":
                raise InvalidArgument(f"encoder: media[{i}] (image): not an image")
        return encoder_pb2.EncodeResponse(embeddings=[embedding(m.data[0]) for m in request.media], encoder_id="e")

    sent: list[list[bytes]] = []
    cache = CachingEncoder(encode, 1 << 20)
    await cache.encode(request(b"\1"), None)
    with pytest.raises(InvalidArgument, match=r"media\[1\]"):
        await cache.encode(request(b"\1", b"bad"), None)
    assert sent == [[b"\1"], [b"bad"], [b"\1", b"bad"]]  # the part, then the whole request for the error
    with pytest.raises(InvalidArgument, match=r"media\[0\]"):
        await cache.encode(request(b"bad", b"\2"), None)
    assert sent[3:] == [[b"bad", b"\2"]]  # sent whole at once: no second call
