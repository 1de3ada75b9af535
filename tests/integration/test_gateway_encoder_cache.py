"""A multi-turn chat through the real gateway and the real tiny encoder: each turn encodes only its new media.

Two gateways share the encoder and the LLM (the scripted one, which records what it is sent): one with the
row cache (the default), one with it off. The encoder's own metrics count its Encode calls and the items its
model ran on; the LLM's requests show the rows each gateway passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from modaverse import AsyncClient, Turn
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_protos.llm.v1 import llm_pb2
from modaverse_runtime import samples
from modaverse_runtime.server import ModaverseServer
from modaverse_runtime.tensors import to_numpy

from .encoder_fixtures import RunningEncoder, start_encoder
from .gateway_fixtures import start_gateway
from .scripted_llm import ScriptedLLM, start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")

CIRCLE = samples.make_image("circle", "red")
SQUARE = samples.make_image("square", "blue")
AUDIO = samples.make_audio(440, 1.0)


@dataclass
class Stack:
    encoder: RunningEncoder
    llm: ScriptedLLM
    llm_port: int
    cached: AsyncClient
    uncached: AsyncClient


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(model_dir: Path) -> AsyncIterator[Stack]:
    encoder = await start_encoder(model_dir)
    llm_server, llm = await start_scripted_llm()
    llm_target = f"127.0.0.1:{llm_server.port}"
    gateways: list[ModaverseServer] = [
        await start_gateway(encoder.target, llm_target),
        await start_gateway(encoder.target, llm_target, encoder_cache_mb=0),
    ]
    cached, uncached = (AsyncClient(f"127.0.0.1:{g.port}", timeout=60) for g in gateways)
    yield Stack(encoder, llm, llm_server.port, cached, uncached)
    for client in (cached, uncached):
        await client.close()
    for gateway in gateways:
        await gateway.stop(1)
    await llm_server.stop(1)
    await encoder.stop()


def encoder_work() -> tuple[float, float]:
    """(Encode calls, items the encoder's model ran on) so far, from the encoder's metrics."""
    calls = REGISTRY.get_sample_value(
        "modaverse_requests_total", {"method": "/modaverse.encoder.v1.EncoderService/Encode", "code": "OK"}
    )
    items = sum(
        REGISTRY.get_sample_value("modaverse_batch_size_sum", {"queue": f"encoder-{kind}"}) or 0.0
        for kind in ("image", "audio", "video")
    )
    return calls or 0.0, items


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_encoder_cache_total", {"result": result}) or 0.0


async def conversation(client: AsyncClient) -> list[tuple[float, float, str]]:
    """Three user turns (an image; then a second image and a recording; then text only), each with the whole
    history. Per turn: the encoder's calls and items, and the answer."""
    turns: list[tuple[str, list[bytes], list[bytes]]] = [
        ("What is this?", [CIRCLE], []),
        ("And this one, with this sound?", [SQUARE], [AUDIO]),
        ("Which was first?", [], []),
    ]
    history: list[Turn] = []
    out = []
    for text, images, audio in turns:
        before = encoder_work()
        result = await client.chat(text, images=images, audio=audio, history=history)
        after = encoder_work()
        out.append((after[0] - before[0], after[1] - before[1], result.text))
        history += [Turn("user", text, images=images, audio=audio), Turn("assistant", result.text)]
    return out


def media_rows(request: llm_pb2.GenerateRequest) -> list[np.ndarray]:
    return [to_numpy(s.embeddings.rows) for m in request.messages for s in m.segments if s.HasField("embeddings")]


async def test_each_turn_encodes_only_its_new_media_and_the_answers_are_the_same(stack: Stack) -> None:
    hits, misses = cache_count("hit"), cache_count("miss")
    cached = await conversation(stack.cached)
    cached_requests = stack.llm.requests[-3:]
    assert [(calls, items) for calls, items, _ in cached] == [(1, 1), (1, 2), (0, 0)]
    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (1 + 3, 3)

    uncached = await conversation(stack.uncached)
    uncached_requests = stack.llm.requests[-3:]
    assert [(calls, items) for calls, items, _ in uncached] == [(1, 1), (1, 3), (1, 3)]  # every item, every turn

    # With the cache every turn passes on the very rows the item got on its first turn.
    first = media_rows(cached_requests[0])[0]
    assert all(np.array_equal(media_rows(r)[0], first) for r in cached_requests)

    assert [text for *_, text in cached] == [text for *_, text in uncached]
    assert "blocks=2:(1, 256) 2:(1, 256) 4:(1, 256)" in cached[-1][2]  # all three media reached the LLM
    for with_cache, without in zip(cached_requests, uncached_requests, strict=True):
        got, expected = media_rows(with_cache), media_rows(without)
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected, strict=True):
            # Equal up to float reassociation: without the cache the encoder runs earlier items batched with
            # new ones, which may differ from their first (single) run in the last bits.
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


async def test_the_encoder_names_its_rows_with_one_id(stack: Stack) -> None:
    info = await stack.encoder.stub.Info(encoder_pb2.InfoRequest())
    image = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=CIRCLE)
    reply = await stack.encoder.stub.Encode(encoder_pb2.EncodeRequest(media=[image]), timeout=30)
    assert len(info.encoder_id) == 24 and reply.encoder_id == info.encoder_id


def encoder_info_calls() -> float:
    sample = REGISTRY.get_sample_value(
        "modaverse_requests_total", {"method": "/modaverse.encoder.v1.EncoderService/Info", "code": "OK"}
    )
    return sample or 0.0


async def test_a_fully_cached_turn_checks_the_encoder_id_once_it_is_old(stack: Stack) -> None:
    """With the id's age bound short, a turn whose media are all cached asks the real encoder's Info for its
    id (through the gateway's replica set) and still sends it nothing to encode."""
    gateway = await start_gateway(stack.encoder.target, f"127.0.0.1:{stack.llm_port}", encoder_id_ttl_s=0.01)
    async with AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60) as client:
        await client.chat("What is this?", images=[SQUARE])
        before, asked = encoder_work(), encoder_info_calls()
        await asyncio.sleep(0.05)
        await client.chat("And again?", images=[SQUARE])
        assert encoder_work()[0] == before[0]  # no Encode call
        assert encoder_info_calls() == asked + 1
    await gateway.stop(1)
