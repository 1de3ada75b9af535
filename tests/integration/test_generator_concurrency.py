"""Generator concurrency over real gRPC: the bounded queue, cancellation, deadlines, batching.

A "long" request is a tiny-image generation of hundreds of steps (several seconds on
CPU); it holds the single model thread so that others queue behind it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.media import DecodedAudio, DecodedImage, DecodedVideo, MediaKind

from .generator_fixtures import (
    RunningGenerator,
    collect,
    decode_output,
    start_generator,
    video_frames,
    wait_for,
)

pytestmark = pytest.mark.asyncio(loop_scope="function")

LONG_STEPS = 400
LONG: dict[str, Any] = {"prompt": "a very slow picture", "seed": 1, "steps": LONG_STEPS, "width": 32, "height": 32}
SHORT: dict[str, Any] = {"prompt": "a quick picture", "seed": 2, "steps": 2, "width": 32, "height": 32}


async def started_long_call(gen: RunningGenerator, **fields: Any) -> tuple[Any, list[int]]:
    """Starts a long generation and returns (call, progress steps seen) once it is denoising."""
    call = gen.stub.Generate(generator_pb2.GenerateRequest(**{**LONG, **fields}))
    steps: list[int] = []

    async def read() -> None:
        async for response in call:
            if response.WhichOneof("event") == "progress":
                steps.append(response.progress.step)

    task = asyncio.ensure_future(read())
    await wait_for(lambda: len(steps) >= 2)
    return (call, task), steps


async def test_cancel_stops_denoising_and_frees_the_slot(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-image", batching=False, max_queue=1)
    try:
        (call, task), seen = await started_long_call(gen)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: gen.generator.stats.interrupted == 1, timeout=10)
        # It stopped within a few steps of the cancel, far from the 400 it asked for.
        assert gen.generator.stats.steps < len(seen) + 20 < LONG_STEPS
        start = time.perf_counter()
        result = await collect(gen, **SHORT)
        assert result.done is not None and time.perf_counter() - start < 5
        assert await gen.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        await gen.stop()


async def test_deadline_stops_denoising(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-image", batching=False, max_queue=1)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(gen, timeout=0.5, **LONG)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_for(lambda: gen.generator.stats.interrupted == 1, timeout=10)
        assert gen.generator.stats.steps < LONG_STEPS // 2
        assert (await collect(gen, **SHORT)).done is not None
    finally:
        await gen.stop()


async def test_full_queue_is_resource_exhausted_and_cancelled_waiters_leave(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-image", batching=False, max_queue=2)
    try:
        (running, running_task), _ = await started_long_call(gen)
        waiting = [asyncio.ensure_future(collect(gen, **{**SHORT, "seed": s})) for s in (10, 11)]
        await wait_for(lambda: gen.generator.queued == 2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(gen, **SHORT)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full (2 requests waiting)" in (err.value.details() or "")
        # A waiter that gives up frees its place at once, while the long call still runs.
        waiting[0].cancel()
        await wait_for(lambda: gen.generator.queued == 1)
        replacement = asyncio.ensure_future(collect(gen, **{**SHORT, "seed": 12}))
        await wait_for(lambda: gen.generator.queued == 2)
        running.cancel()
        results = await asyncio.gather(waiting[1], replacement)
        assert all(r.done is not None for r in results)
        assert [r.done.seed for r in results if r.done] == [11, 12]
        running_task.cancel()
    finally:
        await gen.stop()


async def test_health_and_info_stay_responsive_during_a_generation(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-image", batching=False)
    try:
        (call, task), seen = await started_long_call(gen)
        for _ in range(5):
            start = time.perf_counter()
            assert await gen.health() == health_pb2.HealthCheckResponse.SERVING
            info = await gen.stub.Info(generator_pb2.InfoRequest(), timeout=2)
            assert info.kind == "text-to-image"
            assert time.perf_counter() - start < 0.5
        assert len(seen) < LONG_STEPS  # still generating while we asked
        call.cancel()
        task.cancel()
    finally:
        await gen.stop()


BATCH_CASES: list[tuple[str, MediaKind, dict[str, Any]]] = [
    ("text-to-image", MediaKind.IMAGE, {"steps": 3, "width": 32, "height": 32}),
    ("text-to-video", MediaKind.VIDEO, {"steps": 3, "width": 32, "height": 32, "num_frames": 4}),
    ("text-to-audio", MediaKind.AUDIO, {"steps": 3, "duration_seconds": 0.5}),
]
PROMPTS = ["a red circle", "a blue square at dawn", "a green star", "rain on a window"]


@pytest.mark.parametrize(("kind", "media_kind", "fields"), BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
async def test_batched_outputs_match_unbatched(
    model_dir: Path, kind: str, media_kind: MediaKind, fields: dict[str, Any]
) -> None:
    gen = await start_generator(model_dir, kind, batch_max_items=4, batch_max_wait_ms=300)
    try:
        requests = [{"prompt": p, "seed": 100 + i, **fields} for i, p in enumerate(PROMPTS)]
        negative = {**requests[1], "negative_prompt": "blurry"}
        requests[1] = negative  # a negative prompt in one row only
        batched = await asyncio.gather(*(collect(gen, **r) for r in requests))
        assert gen.generator.stats.batch_sizes == [4]
        alone = [await collect(gen, **r) for r in requests]
        assert gen.generator.stats.batch_sizes == [4, 1, 1, 1, 1]
        for b, a in zip(batched, alone, strict=True):
            assert len(b.progress) == len(a.progress) > 0
            db, da = decode_output(media_kind, b), decode_output(media_kind, a)
            # Batched and single calls differ only by float reassociation in batched kernels
            # (~1e-6 relative), which can flip a rounding to the neighbouring 8-bit level.
            if isinstance(db, DecodedImage) and isinstance(da, DecodedImage):
                diff = np.abs(np.asarray(db.image, dtype=int) - np.asarray(da.image, dtype=int))
                assert diff.max() <= 1 and diff.mean() < 0.01
            elif isinstance(db, DecodedAudio) and isinstance(da, DecodedAudio):
                scale = float(np.abs(da.samples).max())
                np.testing.assert_allclose(db.samples, da.samples, rtol=0, atol=1e-4 * scale)
            else:
                assert isinstance(db, DecodedVideo) and isinstance(da, DecodedVideo)
                fb, fa = video_frames(db).astype(int), video_frames(da).astype(int)
                # H.264 re-encodes the ±1-level input difference; decoded frames stay within a few levels.
                assert np.abs(fb - fa).mean() < 0.5 and np.abs(fb - fa).max() <= 16
        # Different prompts and seeds really produced different outputs in the batch.
        assert len({r.data for r in batched}) == len(batched)
    finally:
        await gen.stop()


async def test_incompatible_requests_are_not_batched_together(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-image", batch_max_items=4, batch_max_wait_ms=500)
    try:
        small = collect(gen, prompt="a", seed=1, steps=2, width=32, height=32)
        wide = collect(gen, prompt="b", seed=2, steps=2, width=48, height=32)
        more_steps = collect(gen, prompt="c", seed=3, steps=3, width=32, height=32)
        same_as_small = collect(gen, prompt="d", seed=4, steps=2, width=32, height=32)
        results = await asyncio.gather(small, wide, more_steps, same_as_small)
        assert sorted(gen.generator.stats.batch_sizes) == [1, 1, 2]
        sizes = [(r.done.width, r.done.height) for r in results if r.done]
        assert sizes == [(32, 32), (48, 32), (32, 32), (32, 32)]
    finally:
        await gen.stop()


async def test_batching_off_runs_one_request_per_call(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-audio", batching=False)
    try:
        info = await gen.stub.Info(generator_pb2.InfoRequest())
        assert info.max_batch_size == 1
        await asyncio.gather(*(collect(gen, prompt=f"p{i}", seed=i, steps=2, duration_seconds=0.5) for i in range(4)))
        assert gen.generator.stats.batch_sizes == [1, 1, 1, 1]
    finally:
        await gen.stop()
