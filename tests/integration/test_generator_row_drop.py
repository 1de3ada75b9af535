"""A request cancelled out of a running batch: its row leaves the pipeline call at the next denoising step.

Real tiny generators over gRPC. The batch size the denoiser (UNet) sees at each step is recorded with a
forward pre-hook; the rows that stay must come out as they do from the same batch run to the end.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modaverse_generators.row_drop import tensor_inputs
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.media import DecodedImage, MediaKind

from .generator_fixtures import Collected, RunningGenerator, collect, decode_output, start_generator, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="function")

STEPS = 24
PROMPTS = ["a red circle", "a blue square at dawn", "a green star"]


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def requests(kind: str, **fields: Any) -> list[dict[str, Any]]:
    common: dict[str, Any] = {"steps": STEPS, "width": 32, "height": 32, **fields}
    if kind == "image-to-image":
        common["image"] = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=png(7))
    if kind == "text-to-video":
        common["num_frames"] = 4
    return [{"prompt": p, "seed": 40 + i, **common} for i, p in enumerate(PROMPTS)]


def denoiser_batch_sizes(gen: RunningGenerator) -> list[int]:
    """Rows per denoiser call, from now on (classifier-free guidance doubles each row)."""
    sizes: list[int] = []
    gen.generator.pipe.unet.register_forward_pre_hook(lambda _module, args: sizes.append(int(args[0].shape[0])))
    return sizes


async def run_with_one_cancelled(gen: RunningGenerator, batch: list[dict[str, Any]]) -> list[Collected]:
    """The batch with its second request cancelled once it has seen 2 steps; the others' results."""
    call = gen.stub.Generate(generator_pb2.GenerateRequest(**batch[1]))
    seen: list[int] = []

    async def read() -> None:
        async for response in call:
            if response.WhichOneof("event") == "progress":
                seen.append(response.progress.step)

    first = asyncio.ensure_future(collect(gen, **batch[0]))
    reader = asyncio.ensure_future(read())
    last = asyncio.ensure_future(collect(gen, **batch[2]))
    await wait_for(lambda: len(seen) >= 2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    return list(await asyncio.gather(first, last))


def assert_same_image(a: Collected, b: Collected) -> None:
    da, db = decode_output(MediaKind.IMAGE, a), decode_output(MediaKind.IMAGE, b)
    assert isinstance(da, DecodedImage) and isinstance(db, DecodedImage)
    # As between batched and single calls: at most float reassociation in batched kernels (the batch shrinks
    # from 6 rows to 4 mid-call), which can flip a rounding to the neighbouring 8-bit level in a few per cent
    # of the values; a row mixed up with another would differ by far more.
    diff = np.abs(np.asarray(da.image, dtype=int) - np.asarray(db.image, dtype=int))
    assert diff.max() <= 1 and diff.mean() < 0.1


CASES = [
    ("text-to-image", "", {}),  # Stable Diffusion's PNDM: earlier model outputs per row in the scheduler
    ("text-to-image", "DDIMScheduler", {"options": {"eta": "0.7"}}),  # fresh noise per row and step
    ("text-to-image", "DPMSolverMultistepScheduler", {}),
    ("image-to-image", "", {}),
]


@pytest.mark.parametrize(("kind", "scheduler", "fields"), CASES, ids=[f"{k}-{s or 'default'}" for k, s, _ in CASES])
async def test_a_cancelled_row_leaves_the_call_and_the_others_are_unchanged(
    model_dir: Path, kind: str, scheduler: str, fields: dict[str, Any]
) -> None:
    gen = await start_generator(model_dir, kind, batch_max_items=3, batch_max_wait_ms=500, scheduler=scheduler)
    try:
        batch = requests(kind, **fields)
        whole = await asyncio.gather(*(collect(gen, **r) for r in batch))
        sizes = denoiser_batch_sizes(gen)
        kept = await run_with_one_cancelled(gen, batch)
        assert gen.generator.stats.batch_sizes == [3, 3]
        assert gen.generator.stats.dropped_rows == 1 and gen.generator.stats.interrupted == 0
        # 3 rows (x2 for guidance) until the cancel reached the model thread, 2 rows from the next step on.
        assert sizes[:2] == [6, 6] and sizes[-1] == 4
        assert set(sizes) == {6, 4} and sizes == sorted(sizes, reverse=True)
        assert_same_image(kept[0], whole[0])
        assert_same_image(kept[1], whole[2])
    finally:
        await gen.stop()


async def test_a_pipeline_with_only_the_legacy_callback_keeps_its_rows_until_all_are_gone(model_dir: Path) -> None:
    # TextToVideoSD's legacy callback cannot hand back smaller tensors: the cancelled row is computed to the end.
    gen = await start_generator(model_dir, "text-to-video", batch_max_items=3, batch_max_wait_ms=500)
    try:
        assert tensor_inputs(gen.generator.pipe) is None
        sizes = denoiser_batch_sizes(gen)
        kept = await run_with_one_cancelled(gen, requests("text-to-video", steps=8))
        assert all(r.done is not None for r in kept)
        assert gen.generator.stats.dropped_rows == 0 and set(sizes) == {6}
    finally:
        await gen.stop()


async def test_rows_are_not_dropped_under_a_scheduler_whose_state_is_not_known(model_dir: Path) -> None:
    gen = await start_generator(model_dir, "text-to-image", scheduler="HeunDiscreteScheduler")
    try:
        assert tensor_inputs(gen.generator.pipe) is None  # Heun keeps a per-row derivative we do not slice
    finally:
        await gen.stop()
