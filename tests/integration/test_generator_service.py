"""Each generator kind over real gRPC on loopback: outputs, determinism, progress, chunks, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.media import DecodedAudio, DecodedImage, DecodedVideo, MediaKind

from .generator_fixtures import (
    KINDS,
    Collected,
    RunningGenerator,
    collect,
    decode_output,
    start_generator,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MEDIA_KIND = {"text-to-image": MediaKind.IMAGE, "text-to-video": MediaKind.VIDEO, "text-to-audio": MediaKind.AUDIO}
# Small, fast requests per kind (tiny pipelines on CPU).
FAST: dict[str, dict[str, Any]] = {
    "text-to-image": {"steps": 2, "width": 32, "height": 32},
    "text-to-video": {"steps": 2, "width": 32, "height": 32, "num_frames": 4},
    "text-to-audio": {"steps": 2, "duration_seconds": 0.5},
}


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=KINDS)
async def gen(request: pytest.FixtureRequest, model_dir: Path) -> AsyncIterator[RunningGenerator]:
    # A longer audio limit lets one test produce a file over 1 MiB (17 s of float32 WAV).
    overrides = {"max_duration_s": 20.0} if request.param == "text-to-audio" else {}
    running = await start_generator(model_dir, request.param, **overrides)
    yield running
    await running.stop()


def kind_of(gen: RunningGenerator) -> str:
    return gen.settings.generator_kind


def params_of(info: generator_pb2.InfoResponse) -> dict[str, generator_pb2.ParamSpec]:
    return {p.name: p for p in info.params}


def decode(gen: RunningGenerator, result: Collected) -> DecodedImage | DecodedAudio | DecodedVideo:
    return decode_output(MEDIA_KIND[kind_of(gen)], result)


async def test_health_and_reflection(gen: RunningGenerator) -> None:
    assert await gen.health() == health_pb2.HealthCheckResponse.SERVING

    def reflect() -> list[str]:
        with grpc.insecure_channel(gen.target) as channel:
            return list(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert "modaverse.generator.v1.GeneratorService" in await asyncio.to_thread(reflect)


async def test_info(gen: RunningGenerator) -> None:
    info = await gen.stub.Info(generator_pb2.InfoRequest())
    kind = kind_of(gen)
    assert info.kind == kind
    assert info.model.endswith(f"tiny/generators/{kind}")
    assert (info.profile, info.device, info.queue_capacity, info.max_batch_size) == (
        "tiny",
        "cpu",
        64,
        4,
    )  # MAX_QUEUE default: docs/reliability.md, Capacity
    assert info.max_prompt_chars == 2000
    assert "eta" in info.options
    lim = params_of(info)
    if kind == "text-to-image":
        assert info.modality == common_pb2.MODALITY_IMAGE
        assert list(info.mime_types) == ["image/png", "image/jpeg", "image/webp"]
        assert (lim["width"].default_value, lim["height"].default_value, lim["width"].maximum) == (64, 64, 256)
        assert lim["steps"].default_value == 20
        assert "num_frames" not in lim and "duration_seconds" not in lim
        assert list(lim) == ["steps", "guidance_scale", "width", "height", "eta", "guidance_rescale"]
    elif kind == "text-to-video":
        assert info.modality == common_pb2.MODALITY_VIDEO
        assert list(info.mime_types) == ["video/mp4", "video/webm"]
        assert (lim["num_frames"].default_value, lim["num_frames"].maximum, lim["fps"].default_value) == (8, 32, 10)
    else:
        assert info.modality == common_pb2.MODALITY_AUDIO
        assert list(info.mime_types) == ["audio/wav", "audio/flac"]
        duration = lim["duration_seconds"]
        assert (duration.default_value, duration.maximum, lim["steps"].default_value) == (1.0, 20.0, 4)
        assert duration.exclusive_minimum and duration.minimum == 0
        assert "width" not in lim


async def test_defaults_follow_info(gen: RunningGenerator) -> None:
    info = await gen.stub.Info(generator_pb2.InfoRequest())
    result = await collect(gen, prompt="a red circle", seed=1)
    done = result.done
    assert done is not None
    assert done.mime_type == info.mime_types[0]
    decoded = decode(gen, result)
    lim = params_of(info)
    if isinstance(decoded, DecodedImage):
        assert decoded.image.size == (lim["width"].default_value, lim["height"].default_value)
    elif isinstance(decoded, DecodedVideo):
        assert (decoded.num_frames, decoded.fps) == (lim["num_frames"].default_value, lim["fps"].default_value)
    else:
        assert decoded.duration == pytest.approx(lim["duration_seconds"].default_value)


async def test_output_has_the_requested_size_frames_and_duration(gen: RunningGenerator) -> None:
    kind = kind_of(gen)
    asks: dict[str, dict[str, Any]] = {
        "text-to-image": {"width": 48, "height": 32},
        "text-to-video": {"width": 48, "height": 32, "num_frames": 6, "fps": 8},
        "text-to-audio": {"duration_seconds": 1.5},
    }
    result = await collect(gen, prompt="a blue square", seed=7, steps=2, **asks[kind])
    done = result.done
    assert done is not None and done.seed == 7 and done.total_bytes == len(result.data) > 0
    decoded = decode(gen, result)
    if isinstance(decoded, DecodedImage):
        assert decoded.image.size == (48, 32) == (done.width, done.height)
    elif isinstance(decoded, DecodedVideo):
        assert (decoded.width, decoded.height, decoded.num_frames, decoded.fps) == (48, 32, 6, 8.0)
        assert (done.width, done.height, done.num_frames) == (48, 32, 6)
        assert done.duration_seconds == pytest.approx(0.75) == decoded.duration
    else:
        assert decoded.sample_rate == 16000 and decoded.samples.shape == (1, 24000)
        assert done.duration_seconds == pytest.approx(1.5)


async def test_parameters_by_name_act_as_their_fields(gen: RunningGenerator) -> None:
    fast = FAST[kind_of(gen)]
    by_field = await collect(gen, prompt="a red circle", seed=4, **fast, options={"eta": "0.5"})
    by_name = await collect(gen, prompt="a red circle", seed=4, params={**fast, "eta": 0.5})
    assert by_field.data == by_name.data and len(by_name.data) > 0


@pytest.mark.parametrize("index", [1, 2])
async def test_other_output_types(gen: RunningGenerator, index: int) -> None:
    info = await gen.stub.Info(generator_pb2.InfoRequest())
    if index >= len(info.mime_types):
        return  # audio has two types
    mime = info.mime_types[index]
    result = await collect(gen, prompt="a green star", seed=3, output_mime_type=mime, **FAST[kind_of(gen)])
    assert result.done is not None and result.done.mime_type == mime
    assert all(chunk.mime_type == mime for chunk in result.chunks)
    decode(gen, result)  # raises if the bytes are not a valid file of that type


async def test_same_seed_same_bytes_and_random_seed_is_reported(gen: RunningGenerator) -> None:
    fast = FAST[kind_of(gen)]
    first = await collect(gen, prompt="a red circle", seed=42, **fast)
    again = await collect(gen, prompt="a red circle", seed=42, **fast)
    other_seed = await collect(gen, prompt="a red circle", seed=43, **fast)
    other_prompt = await collect(gen, prompt="a yellow cross", seed=42, **fast)
    assert first.data == again.data
    assert first.data != other_seed.data
    assert first.data != other_prompt.data
    unseeded = await collect(gen, prompt="a red circle", **fast)
    assert unseeded.done is not None
    replay = await collect(gen, prompt="a red circle", seed=unseeded.done.seed, **fast)
    assert replay.data == unseeded.data


async def test_progress_one_event_per_denoising_step(gen: RunningGenerator) -> None:
    kind = kind_of(gen)
    result = await collect(gen, prompt="a red circle", seed=1, **{**FAST[kind], "steps": 5})
    # Stable Diffusion's PNDM scheduler (SD 1.5's own) runs one extra warm-up step: 5 steps = 6 iterations.
    expected = 6 if kind == "text-to-image" else 5
    assert [p.step for p in result.progress] == list(range(1, expected + 1))
    assert {p.total_steps for p in result.progress} == {expected}
    first_chunk = result.order.index("chunk")
    assert set(result.order[:first_chunk]) == {"progress"}
    assert set(result.order[first_chunk:-1]) == {"chunk"} and result.order[-1] == "done"


async def test_chunks_are_at_most_1mib_and_contiguous(gen: RunningGenerator) -> None:
    if kind_of(gen) != "text-to-audio":
        return  # only 17 s of float32 audio is over 1 MiB among fast tiny outputs
    result = await collect(gen, prompt="rain on a roof", seed=5, steps=1, duration_seconds=17.0)
    assert len(result.chunks) >= 2
    assert all(len(c.data) <= 1 << 20 for c in result.chunks)
    assert all(len(c.data) == 1 << 20 for c in result.chunks[:-1])
    offsets = [c.offset for c in result.chunks]
    assert offsets == [sum(len(c.data) for c in result.chunks[:i]) for i in range(len(result.chunks))]
    total = len(result.data)
    assert {c.total_bytes for c in result.chunks} == {total} and result.done is not None
    assert result.done.total_bytes == total
    decoded = decode(gen, result)
    assert isinstance(decoded, DecodedAudio) and decoded.samples.shape == (1, 272_000)


COMMON_BAD: list[tuple[dict[str, Any], str]] = [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": "x" * 2001}, "over the limit of 2000"),
    ({"prompt": "ok", "negative_prompt": "x" * 2001}, "negative_prompt is 2001 characters"),
    ({"prompt": "ok", "steps": 0}, "steps 0 is out of range"),
    ({"prompt": "ok", "steps": 501}, "steps 501 is out of range"),
    ({"prompt": "ok", "seed": -1}, "seed -1 is out of range"),
    ({"prompt": "ok", "guidance_scale": -1.0}, "guidance_scale -1 is out of range"),
    ({"prompt": "ok", "guidance_scale": float("nan")}, "guidance_scale nan is out of range"),
    ({"prompt": "ok", "options": {"strength": "0.5"}}, "unknown option 'strength'"),
    ({"prompt": "ok", "options": {"eta": "lots"}}, "option eta='lots' is not a number"),
    ({"prompt": "ok", "options": {"eta": "2"}}, "option eta=2 is out of range"),
    ({"prompt": "ok", "params": {"steps": 0}}, "steps 0 is out of range"),
    ({"prompt": "ok", "params": {"steps": 1.5}}, "steps 1.5 is not a whole number"),
    ({"prompt": "ok", "steps": 2, "params": {"steps": 2}}, "steps is given twice"),
    ({"prompt": "ok", "params": {"strength": 0.5}}, "strength does not apply to"),
    ({"prompt": "ok", "params": {"eta": 0.5}, "options": {"eta": "0.5"}}, "eta is given twice"),
    ({"prompt": "ok", "output_mime_type": "image/gif"}, "output mime type 'image/gif' is not supported"),
    ({"prompt": "ok", "output_mime_type": "text/plain"}, "output mime type 'text/plain' is not supported"),
]
KIND_BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "text-to-image": [
        ({"prompt": "ok", "width": 60}, "width 60 is not a multiple of 8"),
        ({"prompt": "ok", "height": 100}, "height 100 is not a multiple of 8"),
        ({"prompt": "ok", "width": 264}, "width 264 is out of range"),
        ({"prompt": "ok", "height": 0}, "height 0 is out of range"),
        ({"prompt": "ok", "num_frames": 4}, "num_frames does not apply to image"),
        ({"prompt": "ok", "duration_seconds": 1.0}, "duration_seconds does not apply to image"),
    ],
    "text-to-video": [
        ({"prompt": "ok", "num_frames": 33}, "num_frames 33 is out of range"),
        ({"prompt": "ok", "num_frames": 0}, "num_frames 0 is out of range"),
        ({"prompt": "ok", "fps": 61}, "fps 61 is out of range"),
        ({"prompt": "ok", "width": 136}, "width 136 is out of range"),
        ({"prompt": "ok", "width": 36}, "width 36 is not a multiple of 8"),
        ({"prompt": "ok", "duration_seconds": 1.0}, "duration_seconds does not apply to video"),
    ],
    "text-to-audio": [
        ({"prompt": "ok", "duration_seconds": 20.5}, "duration_seconds 20.5 is out of range"),
        ({"prompt": "ok", "duration_seconds": 0.0}, "duration_seconds 0 is out of range"),
        ({"prompt": "ok", "duration_seconds": -2.0}, "duration_seconds -2 is out of range"),
        ({"prompt": "ok", "width": 64}, "width does not apply to audio"),
        ({"prompt": "ok", "fps": 10}, "fps does not apply to audio"),
    ],
}


async def test_bad_input_is_invalid_argument_and_the_server_stays_healthy(gen: RunningGenerator) -> None:
    failures = []
    for fields, message in COMMON_BAD + KIND_BAD[kind_of(gen)]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(gen, **fields)
        code, details = err.value.code(), err.value.details() or ""
        if code != grpc.StatusCode.INVALID_ARGUMENT or message not in details:
            failures.append(f"{fields}: {code.name} {details!r} (wanted {message!r})")
    assert not failures, "\n".join(failures)
    assert await gen.health() == health_pb2.HealthCheckResponse.SERVING
    ok = await collect(gen, prompt="still fine", seed=1, **FAST[kind_of(gen)])
    assert ok.done is not None and len(ok.data) == ok.done.total_bytes


async def test_audio_samples_are_finite_and_differ_by_prompt(gen: RunningGenerator) -> None:
    # Guards against a silent (all-zero) or NaN pipeline output slipping through the encoders.
    if kind_of(gen) != "text-to-audio":
        return
    a = decode(gen, await collect(gen, prompt="a dog barks", seed=9, **FAST["text-to-audio"]))
    b = decode(gen, await collect(gen, prompt="a bell rings", seed=9, **FAST["text-to-audio"]))
    assert isinstance(a, DecodedAudio) and isinstance(b, DecodedAudio)
    assert np.isfinite(a.samples).all() and np.abs(a.samples).max() > 0
    assert not np.array_equal(a.samples, b.samples)
