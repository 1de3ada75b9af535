"""Direct generation (GatewayService.Generate) end to end, through the SDK, against real services.

The generators are the real tiny ones on loopback. The gateway's encoder target is a dead port and its
LLM the scripted test server, whose recorded requests show that a generation never reaches it (a
chat through the same gateway does, so the LLM is reachable and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import soundfile as sf
from PIL import Image
from prometheus_client import REGISTRY

from modaverse import AsyncClient, Client, GenerationOptions
from modaverse.cli import main
from modaverse.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from modaverse.types import ChatEvent, Done, InvocationDone, InvocationStarted, MediaChunk, Progress
from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from modaverse_runtime.server import ModaverseServer

from .generator_fixtures import RunningGenerator, start_generator, wait_for
from .in_process import start_server
from .scripted_llm import ScriptedLLM, start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEAD = "127.0.0.1:1"  # nothing listens: connections are refused at once
FAST = GenerationOptions(steps=2)
CLEANUP_S = 30.0  # bounds for waits on cleanup, far above what it takes; a leak would never get there


@dataclass
class Stack:
    llm_server: ModaverseServer
    llm: ScriptedLLM
    image: RunningGenerator  # the default image route, "image-tiny"
    other: RunningGenerator  # route "image-b": one request at a time, so a leaked generation would show
    audio: RunningGenerator
    gateway: ModaverseServer
    client: AsyncClient

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


async def start_gateway(llm: str, routes: dict[str, dict[str, Any]], **overrides: Any) -> ModaverseServer:
    """A gateway whose encoder is unreachable, over the given routing table."""
    settings = GatewaySettings(
        **{
            "host": "127.0.0.1",
            "port": 0,
            "encoder_targets": DEAD,
            "llm_targets": llm,
            "routes": json.dumps({"generators": routes}),
            "retry_attempts": 2,
            "retry_backoff_ms": 10,
            **overrides,
        }
    )
    return await start_server(make_spec(settings), settings, ready_timeout=60)


def route(modality: str, target: str, default: bool = False) -> dict[str, Any]:
    return {"modality": modality, "endpoints": [target], "default": default}


def counted(route_name: str, outcome: str) -> float:
    labels = {"route": route_name, "outcome": outcome}
    return REGISTRY.get_sample_value("modaverse_gateway_invocations_total", labels) or 0.0


def gauge(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def read_into(events: list[ChatEvent], stream: AsyncIterator[ChatEvent]) -> None:
    async for event in stream:
        events.append(event)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(model_dir: Path) -> AsyncIterator[Stack]:
    llm_server, llm = await start_scripted_llm()
    image = await start_generator(model_dir, "text-to-image")
    other = await start_generator(model_dir, "text-to-image", batching=False, max_queue=1)
    audio = await start_generator(model_dir, "text-to-audio")
    routes = {
        "image-tiny": route("image", image.target, default=True),
        "image-b": route("image", other.target),
        "image-dead": route("image", DEAD),
        "audio-tiny": route("audio", audio.target),
    }
    gateway = await start_gateway(f"127.0.0.1:{llm_server.port}", routes, max_text_chars=500)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    yield Stack(llm_server, llm, image, other, audio, gateway, client)
    await client.close()
    await gateway.stop(1)
    for gen in (image, other, audio):
        await gen.stop()
    await llm_server.stop(1)


async def test_image_streams_started_progress_chunks_done_and_a_png(stack: Stack) -> None:
    ok = counted("image-tiny", "ok")
    events = [e async for e in stack.client.generate_stream("image", "a red circle", options=FAST)]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "InvocationStarted"
    assert kinds[-2:] == ["InvocationDone", "Done"]
    assert set(kinds[1:-2]) == {"Progress", "MediaChunk"}
    assert kinds.index("MediaChunk") > max(i for i, k in enumerate(kinds) if k == "Progress")  # progress first
    started = events[0]
    assert isinstance(started, InvocationStarted)
    assert (started.invocation.index, started.invocation.modality) == (0, "image")
    assert (started.invocation.prompt, started.invocation.model) == ("a red circle", "image-tiny")
    assert started.endpoint == stack.image.target
    assert {e.index for e in events if isinstance(e, Progress | MediaChunk | InvocationDone)} == {0}
    image = Image.open(io.BytesIO(b"".join(e.data for e in events if isinstance(e, MediaChunk))))
    assert image.format == "PNG"
    image.load()  # the whole file decodes
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.prompt_tokens, done.completion_tokens, done.failed_invocations) == (0, 0, 0)
    assert done.elapsed_seconds > 0
    assert counted("image-tiny", "ok") == ok + 1  # counted per route as a chat's invocation is


async def test_steps_and_seed_are_honoured(stack: Stack) -> None:
    totals = {}
    for steps in (2, 4):
        events = [
            e
            async for e in stack.client.generate_stream(
                "image", "a blue square", options=GenerationOptions(steps=steps, seed=11)
            )
        ]
        progress = [e for e in events if isinstance(e, Progress)]
        assert [p.step for p in progress] == list(range(1, progress[0].total_steps + 1))
        totals[steps] = progress[0].total_steps
        (done,) = [e for e in events if isinstance(e, InvocationDone)]
        assert done.seed == 11
    assert totals[4] - totals[2] == 2  # (the scheduler may add warm-up iterations; the steps asked for count)


async def test_blocking_client_result_and_stream(stack: Stack) -> None:
    def generate() -> tuple[Any, list[ChatEvent]]:
        with Client(stack.target, timeout=120) as client:
            result = client.generate("image", "a green star", options=GenerationOptions(steps=2, seed=3))
            events = list(client.generate("image", "a green star", options=FAST, stream=True))
            return result, events

    result, events = await asyncio.to_thread(generate)  # the servers run on this loop
    (media,) = result.media
    assert (media.invocation.modality, media.invocation.prompt, media.invocation.model) == (
        "image",
        "a green star",
        "image-tiny",
    )
    assert (media.mime_type, media.seed) == ("image/png", 3)
    assert Image.open(io.BytesIO(media.data)).format == "PNG"
    assert (result.text, result.meta_response, result.errors) == ("", None, [])
    assert result.done is not None
    assert [type(e).__name__ for e in events][:2] == ["InvocationStarted", "Progress"]
    assert isinstance(events[-1], Done)


async def test_audio(stack: Stack) -> None:
    result = await stack.client.generate("audio", "a bell", options=FAST)
    (wav,) = result.media
    assert (wav.invocation.modality, wav.invocation.model, wav.mime_type) == ("audio", "audio-tiny", "audio/wav")
    samples, rate = sf.read(io.BytesIO(wav.data))
    assert rate == 16000
    assert len(samples) > 0


async def test_options_model_routes_by_name(stack: Stack) -> None:
    default_steps, other_steps = stack.image.generator.stats.steps, stack.other.generator.stats.steps
    events = [
        e
        async for e in stack.client.generate_stream(
            "image", "a boat", options=GenerationOptions(model="image-b", steps=2)
        )
    ]
    started = events[0]
    assert isinstance(started, InvocationStarted)
    assert (started.invocation.model, started.endpoint) == ("image-b", stack.other.target)
    assert stack.other.generator.stats.steps > other_steps  # served by image-b's generator ...
    assert stack.image.generator.stats.steps == default_steps  # ... and not by the default one
    assert isinstance(events[-1], Done)


async def test_unknown_model_is_not_found_and_another_modalitys_model_invalid(stack: Stack) -> None:
    with pytest.raises(NotFound, match="unknown image model 'flux'; routable: image-tiny, image-b, image-dead"):
        await stack.client.generate("image", "a cat", options=GenerationOptions(model="flux"))
    with pytest.raises(InvalidArgument, match="model 'audio-tiny' generates audio, not image"):
        await stack.client.generate("image", "a cat", options=GenerationOptions(model="audio-tiny"))
    with pytest.raises(InvalidArgument, match="no video generator is configured"):
        await stack.client.generate("video", "a cat")


@pytest.mark.parametrize(
    ("prompt", "options", "fragment"),
    [
        ("", FAST, "the prompt is empty"),
        ("  \n ", FAST, "the prompt is empty"),
        ("x" * 501, FAST, "501 characters; the limit is 500"),
        # checked by the generator; its INVALID_ARGUMENT reaches the client naming the route
        ("a cat", GenerationOptions(steps=2, width=12), "generator image-tiny: "),
        ("a cat", GenerationOptions(steps=2, seed=-1), "generator image-tiny: seed -1 is out of range"),
    ],
)
async def test_bad_generations_are_invalid_argument(
    stack: Stack, prompt: str, options: GenerationOptions, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        await stack.client.generate("image", prompt, options=options)


async def test_a_modality_that_cannot_be_generated_is_invalid_argument_on_the_wire(stack: Stack) -> None:
    # The SDK refuses it before calling (ValueError); another client may still send it.
    async with grpc.aio.insecure_channel(stack.target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.GenerateRequest(modality=common_pb2.MODALITY_TEXT, prompt="hello")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.Generate(request, timeout=30):
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MODALITY_TEXT cannot be generated" in (info.value.details() or "")


async def test_a_generator_that_is_down_is_unavailable(stack: Stack) -> None:
    unavailable = counted("image-dead", "UNAVAILABLE")
    with pytest.raises(Unavailable) as info:
        await stack.client.generate("image", "a cat", options=GenerationOptions(model="image-dead"))
    assert info.value.details.startswith("generator image-dead: "), info.value.details
    assert counted("image-dead", "UNAVAILABLE") == unavailable + 1


async def test_the_llm_and_the_encoder_are_never_called(stack: Stack) -> None:
    before = len(stack.llm.requests)
    result = await stack.client.generate("image", "a fox", options=FAST)
    assert len(result.media) == 1  # with the encoder unreachable
    assert len(stack.llm.requests) == before
    # The control: a chat through the same gateway does reach the (scripted) LLM.
    chat = await stack.client.chat("Modality: [TEXT] Prompt: hello")
    assert chat.text == "hello"
    assert len(stack.llm.requests) == before + 1
    # and every generation in this module ran without it
    assert [ScriptedLLM.describe(r) for r in stack.llm.requests] == ["messages=1 blocks=none"]


async def test_cli_generate_saves_the_file(stack: Stack, tmp_path: Path) -> None:
    argv = ["generate", "image", "a red circle", "--steps", "2", "--seed", "4", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        await asyncio.to_thread(main, [*argv, "--target", stack.target])
    assert exit_.value.code == 0
    (path,) = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert path.name == "0_image.png"
    assert Image.open(io.BytesIO(await asyncio.to_thread(path.read_bytes))).format == "PNG"


@contextlib.asynccontextmanager
async def one_slot_gateway(stack: Stack, route_name: str) -> AsyncIterator[AsyncClient]:
    """A gateway admitting one call at a time, routing images to the one-at-a-time generator."""
    routes = {route_name: route("image", stack.other.target, default=True)}
    server = await start_gateway(f"127.0.0.1:{stack.llm_server.port}", routes, max_concurrent_chats=1)
    client = AsyncClient(f"127.0.0.1:{server.port}", timeout=120)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(1)


async def settled_gauge(name: str) -> float:
    """A process-wide gauge once handlers abandoned by earlier (stopped) gateways have been collected."""
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)
    return gauge(name)


SLOW = GenerationOptions(steps=500, width=64, height=64, seed=1)  # tens of seconds on a CPU


async def test_cancelling_stops_the_generation_and_frees_the_slot(stack: Stack) -> None:
    stats = stack.other.generator.stats
    async with one_slot_gateway(stack, "image-cancel") as client:
        labels = {"route": "image-cancel"}
        cancelled = counted("image-cancel", "CANCELLED")
        in_flight = await settled_gauge("modaverse_gateway_chats_in_flight")
        interrupted = stats.interrupted
        stream = client.generate_stream("image", "a slow picture", options=SLOW)
        async for event in stream:
            if isinstance(event, Progress):
                break  # denoising
        # The one slot is taken: a second call is shed at once, a generation as a chat would be.
        with pytest.raises(ResourceExhausted, match="limit of 1 concurrent chats and generations"):
            await client.generate("image", "one too many", options=FAST)
        await stream.aclose()  # the client goes away
        # The generator stops denoising (far from its 500 steps), the gateway gives the invocation and
        # the slot back, and counts the invocation as cancelled.
        await wait_for(lambda: stats.interrupted == interrupted + 1, CLEANUP_S)
        await wait_for(lambda: gauge("modaverse_gateway_invocations_in_flight", labels) == 0, CLEANUP_S)
        await wait_for(lambda: gauge("modaverse_gateway_chats_in_flight") == in_flight, CLEANUP_S)
        assert counted("image-cancel", "CANCELLED") == cancelled + 1
        # With one slot and a generator that takes one request at a time, the next call is admitted
        # and served (a leaked slot would be RESOURCE_EXHAUSTED; a leaked generation would queue it).
        result = await client.generate("image", "next", options=FAST)
        assert len(result.media) == 1
        assert stats.interrupted == interrupted + 1


async def test_the_deadline_is_deadline_exceeded_and_stops_the_generation(stack: Stack) -> None:
    stats = stack.other.generator.stats
    interrupted = stats.interrupted
    events: list[ChatEvent] = []
    with pytest.raises(DeadlineExceeded):
        await read_into(
            events,
            stack.client.generate_stream(
                "image", "a slow picture", options=dataclasses.replace(SLOW, model="image-b"), timeout=3
            ),
        )
    assert isinstance(events[0], InvocationStarted)
    await wait_for(lambda: stats.interrupted == interrupted + 1, CLEANUP_S)
    await wait_for(lambda: gauge("modaverse_gateway_invocations_in_flight", {"route": "image-b"}) == 0, CLEANUP_S)
