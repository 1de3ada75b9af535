"""The gateway end to end, through the SDK, against real services on loopback.

Encoder, generators and gateway are the real services on the tiny profile. The LLM here is the
scripted test server (tests/integration/scripted_llm.py) so each test can choose the meta-response;
test_gateway_real_llm.py runs the same path with the real tiny LLM.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import soundfile as sf
from PIL import Image
from prometheus_client import REGISTRY

from modaverse import AsyncClient, GenerationOptions, Turn
from modaverse.chat import ResultBuilder
from modaverse.errors import DeadlineExceeded, InvalidArgument, Unavailable
from modaverse.types import InvocationStarted, MediaChunk, MetaResponse, Progress, TextDelta
from modaverse_runtime import samples
from modaverse_runtime.media import MediaKind, MediaLimits, decode_media
from modaverse_runtime.server import ModaverseServer

from . import gateway_fixtures
from .generator_fixtures import RunningGenerator, start_generator
from .scripted_llm import ScriptedLLM

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _invocations(route: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("modaverse_gateway_invocations_total", {"route": route, "outcome": outcome}) or 0.0


FAST = {m: GenerationOptions(steps=2) for m in ("image", "video", "audio")}


@dataclass
class Stack(gateway_fixtures.Backends):
    gateway: ModaverseServer
    client: AsyncClient


async def start_gateway(stack_parts: dict[str, str], **overrides: object) -> ModaverseServer:
    generators = {m: stack_parts[m] for m in ("image", "video", "audio")}
    return await gateway_fixtures.start_gateway(
        stack_parts["encoder"], stack_parts["llm"], generators, **{"retry_backoff_ms": 10, **overrides}
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(model_dir: Path) -> AsyncIterator[Stack]:
    backends = await gateway_fixtures.start_backends(model_dir)
    parts = {"encoder": backends.encoder.target, "llm": backends.llm_target, **backends.generator_targets()}
    gateway = await start_gateway(parts, max_media_items=4, max_text_chars=2000)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    yield Stack(**vars(backends), gateway=gateway, client=client)
    await client.close()
    await gateway.stop(1)
    await backends.stop_backends()


async def test_text_to_text(stack: Stack) -> None:
    result = await stack.client.chat("Modality: [TEXT] Prompt: Hello from ModaVerse.")
    assert result.text == "Hello from ModaVerse."
    assert result.media == []
    assert result.meta_response is not None
    assert result.meta_response.parsed
    assert result.done is not None
    assert result.done.failed_invocations == 0


async def test_text_deltas_are_merged_and_add_up_to_the_meta_response(stack: Stack) -> None:
    # The scripted LLM streams 8 characters per message back to back: the gateway merges what
    # arrives within its 20 ms interval, and the merged deltas still spell out the whole answer.
    text = "Modality: [TEXT] Prompt: " + "a long answer " * 10
    events = [e async for e in stack.client.stream(text)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    meta = next(e for e in events if isinstance(e, MetaResponse))
    assert "".join(deltas) == meta.raw
    assert 1 <= len(deltas) < len(meta.raw) / 8


async def test_text_deltas_can_be_left_out(stack: Stack) -> None:
    events = [e async for e in stack.client.stream("Modality: [TEXT] Prompt: only the result", text_deltas=False)]
    assert not any(isinstance(e, TextDelta) for e in events)
    meta = next(e for e in events if isinstance(e, MetaResponse))
    assert meta.answer == "only the result"


async def test_text_to_image_streams_progress_then_a_png(stack: Stack) -> None:
    events = [e async for e in stack.client.stream("Modality: [IMAGE] Prompt: a red circle", generators=FAST)]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "TextDelta"
    assert kinds.index("MetaResponse") < kinds.index("InvocationStarted") < kinds.index("Progress")
    assert kinds[-1] == "Done"
    progress = [e for e in events if isinstance(e, Progress)]
    # one event per denoising iteration (SD's PNDM scheduler adds a warm-up iteration to the 2 steps)
    assert [p.step for p in progress] == list(range(1, progress[0].total_steps + 1))
    assert progress[0].total_steps >= 2
    data = b"".join(e.data for e in events if isinstance(e, MediaChunk))
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    started = next(e for e in events if isinstance(e, InvocationStarted))
    assert (started.invocation.modality, started.invocation.prompt, started.invocation.model) == (
        "image",
        "a red circle",
        "image-tiny",
    )


async def test_image_to_text_reaches_the_llm_as_projected_rows(stack: Stack) -> None:
    result = await stack.client.chat("What is this?", images=[samples.make_image("star", "green")])
    assert "messages=1 blocks=2:(1, 256)" in result.text  # one image block of 1 x 256 rows (tiny hidden size)
    request = stack.llm.requests[-1]
    kinds = [s.WhichOneof("content") for s in request.messages[-1].segments]
    assert kinds == ["embeddings", "text"]  # the release's "{media} {instruction}" order


async def test_audio_to_image(stack: Stack) -> None:
    result = await stack.client.chat(
        "Modality: [IMAGE] Prompt: rain drawn as lines", audio=[samples.make_audio(300, 1.0)], generators=FAST
    )
    assert [m.invocation.modality for m in result.media] == ["image"]
    assert "4:(1, 256)" in ScriptedLLM.describe(stack.llm.requests[-1])  # the audio block reached the LLM
    assert Image.open(io.BytesIO(result.media[0].data)).size[0] > 0


async def test_text_to_video_and_text_to_audio(stack: Stack) -> None:
    video = await stack.client.chat("Modality: [VIDEO] Prompt: a square sliding", generators=FAST)
    (clip,) = video.media
    decoded = decode_media(MediaKind.VIDEO, clip.data, clip.mime_type, MediaLimits())
    assert clip.mime_type == "video/mp4"
    assert decoded.num_frames > 1  # type: ignore[union-attr]
    audio = await stack.client.chat("Modality: [AUDIO] Prompt: a bell", generators=FAST)
    (wav,) = audio.media
    samples_, rate = sf.read(io.BytesIO(wav.data))
    assert wav.mime_type == "audio/wav"
    assert rate == 16000
    assert len(samples_) > 0


async def test_several_outputs_in_one_answer_run_concurrently(stack: Stack, tmp_path: Path) -> None:
    text = (
        "Here you go.\nModality: [IMAGE] Prompt: a fox\nModality: [VIDEO] Prompt: a fox running\n"
        "Modality: [AUDIO] Prompt: a fox barking"
    )
    ok = {m: _invocations(f"{m}-tiny", "ok") for m in ("image", "video", "audio")}
    events = [e async for e in stack.client.stream(text, generators=FAST)]
    assert {m: _invocations(f"{m}-tiny", "ok") - n for m, n in ok.items()} == {"image": 1, "video": 1, "audio": 1}
    started = [e for e in events if isinstance(e, InvocationStarted)]
    assert [s.invocation.modality for s in started] == ["image", "video", "audio"]
    # concurrency: progress of different invocations interleaves before the first one finishes
    order = [e.index for e in events if isinstance(e, Progress)]
    assert len(set(order[: len(order) // 2 + 1])) > 1
    builder = ResultBuilder()
    for e in events:
        builder.add(e)
    result = builder.result
    assert result.text == "Here you go."
    assert sorted(m.invocation.modality for m in result.media) == ["audio", "image", "video"]
    paths = result.save(tmp_path)
    assert sorted(p.suffix for p in paths) == [".mp4", ".png", ".wav"]


async def test_multi_turn_history_reaches_the_llm_in_order(stack: Stack) -> None:
    history = [
        Turn("user", "look at this", images=[samples.make_image("circle", "red")]),
        Turn("assistant", "a red circle"),
    ]
    result = await stack.client.chat("and this sound?", audio=[samples.make_audio(200, 1.0)], history=history)
    assert "messages=3 blocks=2:(1, 256) 4:(1, 256)" in result.text
    roles = [m.role for m in stack.llm.requests[-1].messages]
    assert roles == [1, 2, 1]


async def test_unknown_model_fails_only_its_invocation(stack: Stack) -> None:
    rejected = _invocations("unrouted", "INVALID_ARGUMENT")
    result = await stack.client.chat(
        "Modality: [IMAGE] Model: flux Prompt: a cat\nModality: [AUDIO] Prompt: a meow", generators=FAST
    )
    (error,) = result.errors
    assert (error.index, error.code) == (0, "INVALID_ARGUMENT")
    assert "unknown image model 'flux'" in error.message
    assert [m.invocation.modality for m in result.media] == ["audio"]
    assert result.done is not None
    assert result.done.failed_invocations == 1
    assert _invocations("unrouted", "INVALID_ARGUMENT") == rejected + 1


async def test_meta_response_only_generates_nothing(stack: Stack) -> None:
    events = [e async for e in stack.client.stream("Modality: [IMAGE] Prompt: a cat", meta_response_only=True)]
    assert not any(isinstance(e, InvocationStarted | Progress | MediaChunk) for e in events)
    meta = next(e for e in events if isinstance(e, MetaResponse))
    assert meta.invocations[0].prompt == "a cat"


async def test_deadline_reaches_the_client_on_time(stack: Stack) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(DeadlineExceeded):
        await stack.client.chat("SLOW Modality: [TEXT] Prompt: " + "word " * 40, timeout=0.5)
    assert loop.time() - start < 3.0


async def test_client_cancellation_cancels_the_llm_stream(stack: Stack) -> None:
    before = stack.llm.cancelled
    stream = stack.client.stream("SLOW Modality: [TEXT] Prompt: " + "word " * 40)
    first = await stream.__anext__()
    assert isinstance(first, TextDelta)
    await stream.aclose()
    for _ in range(50):
        if stack.llm.cancelled > before:
            break
        await asyncio.sleep(0.1)
    assert stack.llm.cancelled == before + 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"text": ""}, "no text and no media"),
        ({"text": "x" * 2001}, "characters of text"),
        ({"text": "hi", "images": [samples.make_image(size=16)] * 5}, "media items"),
        ({"text": "hi", "generators": {"image": GenerationOptions(model="flux")}}, "unknown image model"),
    ],
)
async def test_bad_chats_are_invalid_argument(stack: Stack, kwargs: dict[str, object], fragment: str) -> None:
    text = str(kwargs.pop("text"))
    with pytest.raises(InvalidArgument, match=fragment):
        await stack.client.chat(text, **kwargs)  # type: ignore[arg-type]


async def test_bad_media_is_invalid_argument_from_the_encoder(stack: Stack) -> None:
    with pytest.raises(InvalidArgument, match=r"encoder: media\[0\]"):
        await stack.client.chat("what is this?", images=[b"not an image at all"])


async def test_list_models(stack: Stack) -> None:
    routes = await stack.client.list_models()
    assert {(r.modality, r.model, r.is_default, r.healthy) for r in routes} == {
        ("image", "image-tiny", True, True),
        ("video", "video-tiny", True, True),
        ("audio", "audio-tiny", True, True),
    }


async def test_generator_killed_mid_request_fails_only_its_invocation(stack: Stack, model_dir: Path) -> None:
    # A second audio generator that we kill while the chat runs.
    doomed = await start_generator(model_dir, "text-to-audio")
    parts = {
        "encoder": stack.encoder.target,
        "llm": f"127.0.0.1:{stack.llm_server.port}",
        "image": stack.generators["image"].target,
        "video": stack.generators["video"].target,
        "audio": doomed.target,
    }
    gateway = await start_gateway(parts, retry_attempts=1)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    try:
        text = "Modality: [IMAGE] Prompt: a boat\nModality: [AUDIO] Prompt: waves"
        opts = {"image": GenerationOptions(steps=2), "audio": GenerationOptions(steps=40)}
        stream = client.stream(text, generators=opts)
        killed = False
        results = []
        async for event in stream:
            results.append(event)
            if not killed and isinstance(event, Progress) and event.index == 1:
                await doomed.server.stop(grace=0)  # the server goes away mid-stream, no drain
                killed = True
        assert killed
        builder = ResultBuilder()
        for e in results:
            builder.add(e)
        assert [m.invocation.modality for m in builder.result.media] == ["image"]
        (error,) = builder.result.errors
        assert error.index == 1
        assert error.code in ("UNAVAILABLE", "CANCELLED")
    finally:
        await client.close()
        await gateway.stop(1)
        await doomed.channel.close()


async def test_unavailable_replica_fails_over_and_a_dead_service_is_unavailable(stack: Stack, model_dir: Path) -> None:
    # A port nobody listens on, listed first: calls must fail over to the live replicas.
    dead = "127.0.0.1:1"
    parts = {
        "encoder": f"{dead},{stack.encoder.target}",
        "llm": f"{dead},127.0.0.1:{stack.llm_server.port}",
        **{m: g.target for m, g in stack.generators.items()},
    }
    gateway = await start_gateway(parts, retry_attempts=3)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60)
    try:
        for _ in range(3):  # round-robin starts on the dead replica at least once
            result = await client.chat("what is it?", images=[samples.make_image()])
            assert "blocks=2:(1, 256)" in result.text
    finally:
        await client.close()
        await gateway.stop(1)
    # Every encoder replica down: the client gets UNAVAILABLE naming the encoder, not a hang.
    only_dead = {**parts, "encoder": dead}
    gateway = await start_gateway(only_dead, retry_attempts=2)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=60)
    try:
        with pytest.raises(Unavailable, match="encoder"):
            await client.chat("what is it?", images=[samples.make_image()])
        # text-only chats do not need the encoder and still work
        assert (await client.chat("Modality: [TEXT] Prompt: still here")).text == "still here"
    finally:
        await client.close()
        await gateway.stop(1)


async def test_a_generator_scaled_to_zero_is_waited_for(stack: Stack, model_dir: Path) -> None:
    # The route's replica is not running when the chat starts (a generator scaled to zero); with
    # generator_wake_s the gateway keeps trying while the replica starts, instead of failing at once.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    parts = {
        "encoder": stack.encoder.target,
        "llm": f"127.0.0.1:{stack.llm_server.port}",
        **{m: g.target for m, g in stack.generators.items()},
        "audio": f"127.0.0.1:{port}",
    }
    gateway = await start_gateway(parts, generator_wake_s=60)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    woken: RunningGenerator | None = None
    try:
        chat = asyncio.ensure_future(client.chat("Modality: [AUDIO] Prompt: a bell", generators=FAST))
        await asyncio.sleep(1.5)
        assert not chat.done()  # waiting for the generator, not failed
        woken = await start_generator(model_dir, "text-to-audio", port=port)
        result = await asyncio.wait_for(chat, 60)
        assert [m.invocation.modality for m in result.media] == ["audio"]
        assert result.errors == []
    finally:
        await client.close()
        await gateway.stop(1)
        if woken is not None:
            await woken.stop()
