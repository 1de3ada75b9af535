"""A route of two real generator replicas: one that answers RESOURCE_EXHAUSTED (its queue is full) is passed
over for the other; only when both are full does the caller get RESOURCE_EXHAUSTED (with no wait for
capacity). With a wait (``MODAVERSE_BUSY_WAIT_S``), a chat whose generation finds its generator full waits
for room and gets its output, or RESOURCE_EXHAUSTED saying how long it was busy once the wait is over.

Each replica takes one request at a time with one waiting (``max_queue=1``). A replica is made full the
way traffic fills it: a long generation holds its model thread and a second request waits behind it, so
the next request is refused at once with "queue is full".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from modaverse import AsyncClient, GenerationOptions
from modaverse.errors import ResourceExhausted
from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_protos.generator.v1 import generator_pb2

from .gateway_fixtures import start_gateway
from .generator_fixtures import RunningGenerator, start_generator, wait_for
from .in_process import start_server
from .scripted_llm import start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="function")

DEAD = "127.0.0.1:1"  # encoder and LLM: a direct generation needs neither
FAST = GenerationOptions(steps=2, width=32, height=32, seed=1)
GENERATE = "/modaverse.generator.v1.GeneratorService/Generate"


def exhausted_answers() -> float:
    """RESOURCE_EXHAUSTED answers of the generators in this process."""
    return (
        REGISTRY.get_sample_value("modaverse_requests_total", {"method": GENERATE, "code": "RESOURCE_EXHAUSTED"}) or 0
    )


async def fill(gen: RunningGenerator) -> list[asyncio.Future[Any]]:
    """Make ``gen`` full: a long generation running and one request waiting. Returns their calls' readers."""

    async def drain(call: Any) -> None:
        async for _ in call:
            pass

    long = gen.stub.Generate(generator_pb2.GenerateRequest(prompt="slow", seed=1, steps=400, width=32, height=32))
    steps = gen.generator.stats.steps
    readers: list[asyncio.Future[Any]] = [asyncio.ensure_future(drain(long))]
    await wait_for(lambda: gen.generator.stats.steps >= steps + 2)  # it holds the model thread
    waiting = gen.stub.Generate(generator_pb2.GenerateRequest(prompt="waits", seed=2, steps=2, width=32, height=32))
    readers.append(asyncio.ensure_future(drain(waiting)))
    await wait_for(lambda: gen.generator.queued == 1)
    return readers


async def release(readers: list[asyncio.Future[Any]]) -> None:
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


@pytest.fixture
async def replicas(model_dir: Path) -> AsyncIterator[tuple[RunningGenerator, RunningGenerator, AsyncClient]]:
    first, second = [await start_generator(model_dir, "text-to-image", batching=False, max_queue=1) for _ in range(2)]
    routes = {"image-tiny": {"modality": "image", "endpoints": [first.target, second.target], "default": True}}
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        encoder_targets=DEAD,
        llm_targets=DEAD,
        routes=json.dumps({"generators": routes}),
        busy_wait_s=0,  # RESOURCE_EXHAUSTED as soon as every replica has answered it
    )
    gateway = await start_server(make_spec(settings), settings, ready_timeout=60)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60)
    yield first, second, client
    await client.close()
    await gateway.stop(1)
    for gen in (first, second):
        await gen.stop()


async def test_a_full_replica_is_passed_over_and_all_full_is_resource_exhausted(
    replicas: tuple[RunningGenerator, RunningGenerator, AsyncClient],
) -> None:
    full, free, client = replicas
    held = await fill(full)
    try:
        before, served = exhausted_answers(), free.generator.stats.batches
        # Two calls: the round-robin starts one of them on the full replica.
        for _ in range(2):
            result = await client.generate("image", "a red circle", options=FAST)
            assert len(result.media) == 1 and not result.errors
        assert exhausted_answers() - before == 1  # the full replica was asked once, then the other one
        assert free.generator.stats.batches - served == 2

        held += await fill(free)
        before = exhausted_answers()
        with pytest.raises(ResourceExhausted, match="queue is full"):
            await client.generate("image", "a red circle", options=FAST)
        assert exhausted_answers() - before == 2  # each replica once, no retries of a full one
    finally:
        await release(held)


def busy_waits(route: str = "image-tiny") -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_busy_waits_total", {"service": f"generator {route}"}) or 0


@pytest.fixture
async def one_full_generator(model_dir: Path) -> AsyncIterator[tuple[RunningGenerator, AsyncClient]]:
    """One generator (one running, one waiting) behind a gateway that waits up to 60 s for capacity, the
    scripted LLM (the chat's text is its meta-response) and a client."""
    gen = await start_generator(model_dir, "text-to-image", batching=False, max_queue=1)
    llm, _ = await start_scripted_llm()
    gateway = await start_gateway(DEAD, f"127.0.0.1:{llm.port}", {"image": gen.target}, busy_wait_s=60)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    yield gen, client
    await client.close()
    await gateway.stop(1)
    await llm.stop(1)
    await gen.stop()


async def test_a_chat_whose_generator_is_full_waits_for_room_and_gets_its_output(
    one_full_generator: tuple[RunningGenerator, AsyncClient],
) -> None:
    gen, client = one_full_generator
    long, waiting = await fill(gen)
    refused, waits = exhausted_answers(), busy_waits()
    chat = asyncio.ensure_future(client.chat("Modality: [IMAGE] Prompt: a red circle", generators={"image": FAST}))
    try:
        # The chat's generation was refused and is waiting (not failed): the gateway tries again.
        await wait_for(lambda: busy_waits() >= waits + 2)
        assert not chat.done() and exhausted_answers() - refused >= 2
        long.cancel()  # the long generation's client goes away: the waiting request runs, then there is room
        result = await chat
    finally:
        await release([long, waiting, chat])
    assert result.errors == []  # no output lost
    assert len(result.media) == 1 and result.media[0].mime_type == "image/png"
    assert result.done is not None and result.done.failed_invocations == 0


async def test_a_chat_busy_past_its_wait_gets_resource_exhausted_saying_how_long(
    one_full_generator: tuple[RunningGenerator, AsyncClient],
) -> None:
    gen, client = one_full_generator
    held = await fill(gen)
    try:
        # A 2 s deadline: the wait may take half of it (the other half is the generation's own).
        result = await client.chat("Modality: [IMAGE] Prompt: a red circle", generators={"image": FAST}, timeout=2)
    finally:
        await release(held)
    (error,) = result.errors
    assert error.code == "RESOURCE_EXHAUSTED"
    assert error.message.startswith("generator image-tiny: every replica was busy for ")
    assert "queue is full" in error.message
