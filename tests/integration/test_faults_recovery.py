"""Faults and recovery through the gateway: dead dependencies, deadlines, and the work left behind.

A dependency that is down must give the client a clear UNAVAILABLE naming it, within the retry budget,
and the *same* gateway must answer again once the dependency is back on the same address (no restart:
in Kubernetes a pod comes back behind the same name). A chat that runs out of time must reach the
client as DEADLINE_EXCEEDED on time and must not leave work running downstream: the LLM stream is
cancelled, the generator stops denoising at its next step, and every slot is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from modaverse import AsyncClient, GenerationOptions
from modaverse.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from modaverse.types import ChatEvent, ChatResult, InvocationStarted, Progress
from modaverse_encoder.service import make_spec as encoder_spec
from modaverse_encoder.settings import EncoderSettings
from modaverse_runtime import samples
from modaverse_runtime.server import ModaverseServer

from .gateway_fixtures import start_gateway
from .generator_fixtures import RunningGenerator, start_generator, wait_for
from .in_process import free_port
from .scripted_llm import ScriptedLLM, start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Generous bounds: the machine is small and shared; each bound is still far below what a hang,
# a missing cancellation or an un-freed slot would cost (tens of seconds).
FAIL_FAST_S = 5.0
RECOVER_S = 20.0
CLEANUP_S = 10.0


@contextlib.asynccontextmanager
async def gateway(
    encoder: str, llm: str, generators: dict[str, str] | None = None, **overrides: Any
) -> AsyncIterator[tuple[ModaverseServer, AsyncClient]]:
    """A gateway (and a client of it) over the given targets; one default route per generator modality."""
    server = await start_gateway(encoder, llm, generators, **{"retry_attempts": 3, "retry_backoff_ms": 20, **overrides})
    client = AsyncClient(f"127.0.0.1:{server.port}", timeout=60, retry=None)  # the gateway's own retries, alone
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop(1)


async def until_recovered(
    attempt: Callable[[], Awaitable[ChatResult]], service: str, timeout: float = RECOVER_S
) -> tuple[ChatResult, float]:
    """Retry ``attempt()`` until it succeeds; every failure on the way must be UNAVAILABLE naming ``service``.

    Returns the result and how long recovery took. A gRPC channel that failed to connect waits out a
    reconnect backoff (about 1 s after one failure) before it tries again, so the first chats after the
    dependency is back may still fail; what matters is that the same gateway recovers, and soon.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        failure: Unavailable | None = None
        try:
            result: ChatResult = await attempt()
        except Unavailable as exc:
            failure = exc
        else:
            return result, loop.time() - start
        assert failure.details.startswith(f"{service}: "), failure.details
        assert loop.time() - start < timeout, f"the gateway did not recover within {timeout}s: {failure.details}"
        await asyncio.sleep(0.1)


async def read_into(events: list[ChatEvent], stream: AsyncIterator[ChatEvent]) -> None:
    """Collect a stream's events (those before an error stay in ``events``)."""
    async for event in stream:
        events.append(event)


def gauge(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def settled_gauge(name: str) -> float:
    """``gauge`` once earlier tests' leftovers have settled. The gauges are process-wide: a chat
    handler that grpc abandoned when an earlier gateway stopped is only closed (its gauge decremented)
    when the garbage collector finds it, which must not happen between a snapshot and its check."""
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)  # let the loop run the scheduled aclose() of collected generators
    return gauge(name)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def llm() -> AsyncIterator[tuple[ModaverseServer, ScriptedLLM]]:
    server, servicer = await start_scripted_llm()
    yield server, servicer
    await server.stop(1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def slow_gen(model_dir: Path) -> AsyncIterator[RunningGenerator]:
    # One request at a time and one waiting: a generation that kept running after its chat was
    # gone would hold the model thread, and the next request would wait behind it.
    running = await start_generator(model_dir, "text-to-image", batching=False, max_queue=1)
    yield running
    await running.stop()


async def test_llm_down_is_unavailable_then_the_same_gateway_recovers(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    # A long cool-down: with a single replica, a replica cooling down must still be tried (it only
    # goes last), or the gateway would refuse every chat for 60 s after the LLM is back.
    async with gateway("127.0.0.1:1", f"127.0.0.1:{port}", unhealthy_cooldown_s=60) as (_, client):
        loop = asyncio.get_running_loop()
        caplog.clear()  # the gateway's start-up already asked the (dead) LLM for its name
        with caplog.at_level(logging.WARNING, logger="modaverse_gateway.replicas"):
            start = loop.time()
            with pytest.raises(Unavailable) as info:
                await client.chat("Modality: [TEXT] Prompt: anyone there?")
            elapsed = loop.time() - start
        assert info.value.details.startswith("llm: "), info.value.details  # names the LLM, not a bare status
        assert elapsed < FAIL_FAST_S
        retries = [r for r in caplog.records if r.getMessage().startswith(f"llm replica 127.0.0.1:{port} unavailable")]
        assert len(retries) == 3  # retry_attempts, each after a backoff; then it gave up

        server, servicer = await start_scripted_llm(port)
        try:
            result, took = await until_recovered(lambda: client.chat("Modality: [TEXT] Prompt: back again"), "llm")
            assert result.text == "back again"
            assert len(servicer.requests) == 1  # answered by the LLM that came back (failures never reached it)
            # The outage was short, so gRPC's reconnect backoff is still small (1 s after one failed
            # connect, x1.6 per further failure): recovery takes a second or two, not the whole budget.
            assert took < RECOVER_S / 2
            # and it stays recovered: the next chat goes straight through
            assert (await client.chat("Modality: [TEXT] Prompt: still here")).text == "still here"
        finally:
            await server.stop(0)


async def test_a_backend_back_after_a_long_outage_is_used_within_the_reconnect_cap() -> None:
    # gRPC's own reconnect backoff grows x1.6 per failed connect up to 120 s; a channel in its wait
    # fails every call at once, so after a long outage the gateway would stay UNAVAILABLE for up to
    # two minutes after the LLM came back. The gateway caps it (max_reconnect_backoff_ms, 1 s).
    # A listener that accepts and drops connections records the gateway's connect attempts; the LLM
    # comes back right after one, the worst phase: uncapped, the next try is several seconds away.
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = int(listener.getsockname()[1])
    attempts: list[float] = []

    async def drop_connections() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            attempts.append(loop.time())
            conn.close()

    acceptor = asyncio.create_task(drop_connections())
    async with gateway("127.0.0.1:1", f"127.0.0.1:{port}", unhealthy_cooldown_s=1) as (_, client):
        try:
            # Nine failed connects (from 0.2 s, x1.6 each): uncapped, the next wait would be ~8 s.
            started = loop.time()
            while len(attempts) < 9:
                with pytest.raises(Unavailable):
                    await client.chat("Modality: [TEXT] Prompt: anyone there?")
                await asyncio.sleep(0.1)
                assert loop.time() - started < 60, f"only {len(attempts)} connect attempts in 60 s"
        finally:
            acceptor.cancel()
            listener.close()
        server, _ = await start_scripted_llm(port)
        try:
            _, took = await until_recovered(lambda: client.chat("Modality: [TEXT] Prompt: back"), "llm")
            assert took < 3.0, f"recovery took {took:.1f}s after the LLM was back; the reconnect backoff is not capped"
        finally:
            await server.stop(0)


async def test_encoder_down_is_unavailable_for_media_then_the_same_gateway_recovers(
    model_dir: Path, llm: tuple[ModaverseServer, ScriptedLLM]
) -> None:
    llm_server, _ = llm
    port = free_port()
    image = samples.make_image("star", "green")
    async with gateway(f"127.0.0.1:{port}", f"127.0.0.1:{llm_server.port}", unhealthy_cooldown_s=60) as (_, client):
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(Unavailable) as info:
            await client.chat("what is this?", images=[image])
        assert info.value.details.startswith("encoder: "), info.value.details
        assert loop.time() - start < FAIL_FAST_S
        # By design a text-only chat does not call the encoder, so it is not held hostage by it.
        assert (await client.chat("Modality: [TEXT] Prompt: text still works")).text == "text still works"

        # The real encoder comes back on the same address. It binds before its model is loaded;
        # chats during the load get UNAVAILABLE ("not ready"), never a hang or INTERNAL.
        settings = EncoderSettings(host="127.0.0.1", port=port, model_dir=model_dir)
        encoder = ModaverseServer(encoder_spec(settings), settings)
        await encoder.start()
        try:
            # (the time allowed includes loading the tiny encoder on a busy machine)
            result, _ = await until_recovered(
                lambda: client.chat("what is this?", images=[image]), "encoder", timeout=RECOVER_S + 40
            )
            assert "blocks=2:(1, 256)" in result.text  # the image was encoded and reached the LLM
        finally:
            await encoder.stop(0)


async def test_deadline_with_a_slow_llm_cancels_the_stream_and_frees_the_slot(
    llm: tuple[ModaverseServer, ScriptedLLM],
) -> None:
    llm_server, servicer = llm
    async with gateway("127.0.0.1:1", f"127.0.0.1:{llm_server.port}", max_concurrent_chats=1) as (_, client):
        in_flight = await settled_gauge("modaverse_gateway_chats_in_flight")
        cancelled, requests = servicer.cancelled, len(servicer.requests)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DeadlineExceeded):
            # 40 words at 8 characters per 0.2 s: about 5 s of streaming, far past the deadline.
            await client.chat("SLOW Modality: [TEXT] Prompt: " + "word " * 40, timeout=0.5)
        assert loop.time() - start < FAIL_FAST_S
        assert len(servicer.requests) == requests + 1  # it did reach the LLM
        # The LLM stream is cancelled, not left to run to its end, and the gateway's slot is given back.
        await wait_for(lambda: servicer.cancelled == cancelled + 1, CLEANUP_S)
        await wait_for(lambda: gauge("modaverse_gateway_chats_in_flight") == in_flight, CLEANUP_S)
        # With one slot, the next chat is admitted (a leaked slot would make it RESOURCE_EXHAUSTED).
        assert (await client.chat("Modality: [TEXT] Prompt: next")).text == "next"
        assert servicer.cancelled == cancelled + 1


async def test_admission_sheds_at_once_with_resource_exhausted_and_admits_again(
    llm: tuple[ModaverseServer, ScriptedLLM],
) -> None:
    llm_server, _ = llm
    async with gateway("127.0.0.1:1", f"127.0.0.1:{llm_server.port}", max_concurrent_chats=1) as (_, client):
        loop = asyncio.get_running_loop()
        events: list[ChatEvent] = []
        # about 1 s of streaming holds the only slot
        first = asyncio.create_task(read_into(events, client.stream("SLOW Modality: [TEXT] Prompt: slow one")))
        await wait_for(lambda: len(events) > 0, CLEANUP_S)
        start = loop.time()
        with pytest.raises(ResourceExhausted) as info:
            await client.chat("Modality: [TEXT] Prompt: one too many")
        assert loop.time() - start < 1.0  # shed at once, not queued behind the running chat
        assert "limit of 1 concurrent chats" in info.value.details
        await asyncio.wait_for(first, 30)
        assert (await client.chat("Modality: [TEXT] Prompt: my turn")).text == "my turn"


async def test_deadline_with_a_slow_generator_stops_the_generation_and_frees_its_slot(
    llm: tuple[ModaverseServer, ScriptedLLM], slow_gen: RunningGenerator
) -> None:
    llm_server, _ = llm
    stats = slow_gen.generator.stats
    route = {"route": "image-tiny"}
    async with gateway("127.0.0.1:1", f"127.0.0.1:{llm_server.port}", {"image": slow_gen.target}) as (_, client):
        interrupted, steps_before = stats.interrupted, stats.steps
        outcomes = ("CANCELLED", "DEADLINE_EXCEEDED", "ok")
        ended = {o: gauge("modaverse_gateway_invocations_total", {**route, "outcome": o}) for o in outcomes}
        chats = await settled_gauge("modaverse_gateway_chats_in_flight")
        # 500 steps at 64x64 take tens of seconds on this CPU; the chat allows 4 s.
        slow = {"image": GenerationOptions(steps=500, width=64, height=64, seed=1)}
        events: list[ChatEvent] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        stream = client.stream("Modality: [IMAGE] Prompt: a slow picture", generators=slow, timeout=4)
        with pytest.raises(DeadlineExceeded):  # the documented outcome: the client's deadline bounds it all
            await read_into(events, stream)
        assert loop.time() - start < 4 + FAIL_FAST_S
        assert any(isinstance(e, InvocationStarted) for e in events)
        assert any(isinstance(e, Progress) for e in events)  # it was denoising when time ran out
        steps_at_deadline = stats.steps

        # The generator side: the pipeline call was interrupted within a few steps of the deadline,
        # far from the 500 it asked for ...
        await wait_for(lambda: stats.interrupted == interrupted + 1, CLEANUP_S)
        assert stats.steps - steps_at_deadline < 30
        assert stats.steps - steps_before < 500
        assert gauge("modaverse_queue_depth", {"queue": "text-to-image"}) == 0
        # ... the gateway gave back the invocation and the chat (the generator call ended cancelled
        # by the chat, or on its own deadline, which is the chat's) ...
        await wait_for(lambda: gauge("modaverse_gateway_invocations_in_flight", route) == 0, CLEANUP_S)
        await wait_for(lambda: gauge("modaverse_gateway_chats_in_flight") == chats, CLEANUP_S)
        after = {o: gauge("modaverse_gateway_invocations_total", {**route, "outcome": o}) for o in ended}
        assert {o: after[o] - ended[o] for o in ended} in (
            {"CANCELLED": 1, "DEADLINE_EXCEEDED": 0, "ok": 0},
            {"CANCELLED": 0, "DEADLINE_EXCEEDED": 1, "ok": 0},
        )
        # ... and the model thread is free: a short generation is served at once, not after the
        # abandoned one (a generator allowing one waiting request would otherwise queue it for ~40 s).
        quick = {"image": GenerationOptions(steps=2, width=32, height=32, seed=2)}
        begun = time.perf_counter()
        result = await client.chat("Modality: [IMAGE] Prompt: a quick picture", generators=quick, timeout=60)
        assert [m.invocation.modality for m in result.media] == ["image"]
        assert result.errors == []
        assert time.perf_counter() - begun < CLEANUP_S
        assert stats.interrupted == interrupted + 1
