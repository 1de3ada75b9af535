"""In-process encoder servers on loopback ports (real gRPC, real tiny models)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest_asyncio

from modaverse_encoder.service import make_spec
from modaverse_encoder.settings import EncoderSettings
from modaverse_protos.encoder.v1 import encoder_pb2_grpc
from modaverse_runtime.server import ModaverseServer


@dataclass
class RunningEncoder:
    server: ModaverseServer
    channel: grpc.aio.Channel
    stub: encoder_pb2_grpc.EncoderServiceAsyncStub
    settings: EncoderSettings

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


async def start_encoder(model_dir: Path, **overrides: Any) -> RunningEncoder:
    settings = EncoderSettings(host="127.0.0.1", port=0, model_dir=model_dir, **overrides)
    server = ModaverseServer(make_spec(settings), settings)
    port = await server.start()
    await server.wait_ready(120)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return RunningEncoder(server, channel, encoder_pb2_grpc.EncoderServiceStub(channel), settings)


async def stop_encoder(running: RunningEncoder) -> None:
    await running.channel.close()
    await running.server.stop(grace=1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def encoder(model_dir: Path) -> AsyncIterator[RunningEncoder]:
    running = await start_encoder(model_dir, batch_max_wait_ms=20.0, max_items_per_request=8)
    yield running
    await stop_encoder(running)
