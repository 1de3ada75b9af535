"""image-to-image end to end: a real tiny img2img generator behind a gateway, called through the SDK (and the CLI)
with an input image, as ``modaverse up`` routes it: by name beside the default text-to-image route."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from modaverse import AsyncClient, Client, GenerationOptions
from modaverse.cli import main
from modaverse.errors import InvalidArgument
from modaverse.types import InvocationStarted, MediaChunk, Progress
from modaverse_gateway.service import make_spec
from modaverse_gateway.settings import GatewaySettings
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_runtime.server import ModaverseServer

from .generator_fixtures import RunningGenerator, start_generator
from .in_process import start_server
from .scripted_llm import start_scripted_llm

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEAD = "127.0.0.1:1"  # the encoder: a direct generation never needs it


def png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # the whole file decodes
        return image.size


def img2img(**kw: Any) -> GenerationOptions:
    return GenerationOptions(**{"model": "img2img", "steps": 2, "seed": 5, **kw})


@dataclass
class Stack:
    image_to_image: RunningGenerator
    text_to_image: RunningGenerator
    gateway: ModaverseServer
    client: AsyncClient

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(model_dir: Path) -> AsyncIterator[Stack]:
    llm_server, _ = await start_scripted_llm()
    i2i = await start_generator(model_dir, "image-to-image")
    t2i = await start_generator(model_dir, "text-to-image")
    routes = {
        "image-tiny": {"modality": "image", "endpoints": [t2i.target], "default": True},
        "img2img": {"modality": "image", "endpoints": [i2i.target]},
    }
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        encoder_targets=DEAD,
        llm_targets=f"127.0.0.1:{llm_server.port}",
        routes=json.dumps({"generators": routes}),
    )
    gateway = await start_server(make_spec(settings), settings, ready_timeout=60)
    client = AsyncClient(f"127.0.0.1:{gateway.port}", timeout=120)
    yield Stack(i2i, t2i, gateway, client)
    await client.close()
    await gateway.stop(1)
    for gen in (i2i, t2i):
        await gen.stop()
    await llm_server.stop(1)


async def test_info_declares_the_input_image_and_strength(stack: Stack) -> None:
    info = await stack.image_to_image.stub.Info(generator_pb2.InfoRequest())
    params = {p.name: p for p in info.params}
    assert info.kind == "image-to-image" and info.takes_image
    strength = params["strength"]
    assert (strength.default_value, strength.minimum, strength.maximum, strength.exclusive_minimum) == (0.8, 0, 1, True)
    assert (params["width"].default_value, params["width"].maximum) == (64, 256)
    assert not (await stack.text_to_image.stub.Info(generator_pb2.InfoRequest())).takes_image


async def test_generate_with_an_input_image_gives_an_image_of_the_requested_size(stack: Stack) -> None:
    options = img2img(width=48, height=32, params={"strength": 0.75})
    events = [e async for e in stack.client.generate_stream("image", "at night", options=options, image=png(56, 40, 1))]
    started = events[0]
    assert isinstance(started, InvocationStarted)
    assert (started.invocation.model, started.endpoint) == ("img2img", stack.image_to_image.target)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and [p.step for p in progress] == list(range(1, progress[0].total_steps + 1))
    data = b"".join(e.data for e in events if isinstance(e, MediaChunk))
    assert size_of(data) == (48, 32)
    assert stack.text_to_image.generator.stats.rows == 0  # the default image route was not used


async def test_the_output_follows_the_input_image_and_the_seed(stack: Stack) -> None:
    async def draw(image: bytes, **kw: Any) -> bytes:
        result = await stack.client.generate("image", "at night", options=img2img(**kw), image=image)
        (media,) = result.media
        assert (media.mime_type, media.seed) == ("image/png", kw.get("seed", 5))
        return media.data

    first, second = png(64, 64, 1), png(64, 64, 2)
    base = await draw(first)
    assert size_of(base) == (64, 64)  # the deployment's default size
    assert await draw(first) == base  # same input, seed and parameters: same bytes
    assert await draw(second) != base  # the image is an input, not ignored
    assert await draw(first, seed=6) != base
    assert await draw(first, params={"strength": 1.0}) != base


async def test_blocking_client_and_cli_send_a_file(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(png(32, 32, 3))
    out = tmp_path / "out"

    def run() -> tuple[bytes, int]:
        with Client(stack.target, timeout=120) as client:
            (media,) = client.generate("image", "a photo", options=img2img(width=40, height=24), image=source).media
        argv = ["generate", "image", "a photo", "--model", "img2img", "--image", str(source)]
        argv += ["--steps", "2", "--width", "32", "--height", "48", "--param", "strength=0.9", "--out", str(out)]
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--target", stack.target])
        return media.data, int(exit_.value.code or 0)

    data, code = await asyncio.to_thread(run)  # the servers run on this loop
    assert size_of(data) == (40, 24)
    assert code == 0
    (saved,) = await asyncio.to_thread(lambda: list(out.iterdir()))
    assert size_of(await asyncio.to_thread(saved.read_bytes)) == (32, 48)


@pytest.mark.parametrize(
    ("options", "image", "fragment"),
    [
        (img2img(), None, "generator img2img: image is missing: image-to-image transforms an input image"),
        (img2img(), b"not an image at all", "generator img2img: image: "),
        (img2img(), png(8, 8, 1)[:40], "generator img2img: image: "),  # truncated
        (img2img(params={"strength": 1.5}), png(8, 8, 1), "strength 1.5 is out of range; it must be above 0 and"),
        (img2img(params={"strength": 0.0}), png(8, 8, 1), "strength 0 is out of range"),
        (img2img(params={"strength": 0.2}), png(8, 8, 1), "strength 0.2 with steps 2 runs no denoising step"),
        (img2img(width=36), png(8, 8, 1), "width 36 is not a multiple of 8"),
        (GenerationOptions(steps=2), png(8, 8, 1), "generator image-tiny: image does not apply to text-to-image"),
        (GenerationOptions(steps=2, params={"strength": 0.5}), None, "strength does not apply to image generation"),
    ],
)
async def test_bad_inputs_are_invalid_argument_naming_what_is_wrong(
    stack: Stack, options: GenerationOptions, image: bytes | None, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment.replace("(", r"\(")):
        await stack.client.generate("image", "at night", options=options, image=image)
    rows = stack.image_to_image.generator.stats.rows
    ok = await stack.client.generate("image", "still fine", options=img2img(), image=png(16, 16, 1))
    assert len(ok.media) == 1 and stack.image_to_image.generator.stats.rows == rows + 1  # the server is unharmed
