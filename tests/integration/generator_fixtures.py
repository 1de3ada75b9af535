"""In-process generator servers on loopback ports (real gRPC, real tiny diffusers pipelines)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest_asyncio

from modaverse_generators.diffusers_generator import DiffusersGenerator
from modaverse_generators.service import make_generator, make_spec
from modaverse_generators.settings import GeneratorSettings
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc
from modaverse_runtime.media import DecodedAudio, DecodedImage, DecodedVideo, MediaKind, MediaLimits, decode_media

from .in_process import InProcessServer, serve

T = TypeVar("T")

KINDS = ("text-to-image", "text-to-video", "text-to-audio")


@dataclass
class RunningGenerator(InProcessServer["generator_pb2_grpc.GeneratorServiceAsyncStub", GeneratorSettings]):
    generator: DiffusersGenerator


@dataclass
class Collected:
    """One Generate call's stream, taken apart."""

    progress: list[generator_pb2.Progress] = field(default_factory=list)
    chunks: list[generator_pb2.Chunk] = field(default_factory=list)
    done: generator_pb2.Done | None = None
    order: list[str] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)


async def collect(gen: RunningGenerator, timeout: float | None = 60, **fields: Any) -> Collected:
    out = Collected()
    call = gen.stub.Generate(generator_pb2.GenerateRequest(**fields), timeout=timeout)
    async for response in call:
        which = response.WhichOneof("event")
        out.order.append(str(which))
        if which == "progress":
            out.progress.append(response.progress)
        elif which == "chunk":
            out.chunks.append(response.chunk)
        elif which == "done":
            out.done = response.done
    return out


def decode_output(kind: MediaKind, result: Collected) -> DecodedImage | DecodedAudio | DecodedVideo:
    assert result.done is not None
    done = result.done
    return decode_media(kind, result.data, done.mime_type, MediaLimits())


def video_frames(video: DecodedVideo) -> npt.NDArray[np.uint8]:
    times = [i / video.fps for i in range(video.num_frames)]
    return video.frames_at(times)


async def start_generator(model_dir: Path, kind: str, **overrides: Any) -> RunningGenerator:
    settings = GeneratorSettings(
        **{"host": "127.0.0.1", "port": 0, "model_dir": model_dir, "generator_kind": kind, **overrides}
    )
    generator = make_generator(settings)
    assert isinstance(generator, DiffusersGenerator)
    running = await serve(make_spec(settings, generator), settings, generator_pb2_grpc.GeneratorServiceStub)
    return RunningGenerator(running.server, running.channel, running.stub, settings, generator)


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll ``predicate()`` on the loop until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def image_gen(model_dir: Path) -> AsyncIterator[RunningGenerator]:
    running = await start_generator(model_dir, "text-to-image")
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def video_gen(model_dir: Path) -> AsyncIterator[RunningGenerator]:
    running = await start_generator(model_dir, "text-to-video")
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def audio_gen(model_dir: Path) -> AsyncIterator[RunningGenerator]:
    running = await start_generator(model_dir, "text-to-audio")
    yield running
    await running.stop()
