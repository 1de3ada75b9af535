"""In-process encoder servers on loopback ports (real gRPC, real tiny models); a pytest plugin (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from modaverse_encoder.service import make_spec
from modaverse_encoder.settings import EncoderSettings
from modaverse_protos.encoder.v1 import encoder_pb2_grpc

from .in_process import InProcessServer, serve

RunningEncoder = InProcessServer["encoder_pb2_grpc.EncoderServiceAsyncStub", EncoderSettings]


async def start_encoder(model_dir: Path, **overrides: Any) -> RunningEncoder:
    settings = EncoderSettings(host="127.0.0.1", port=0, model_dir=model_dir, **overrides)
    return await serve(make_spec(settings), settings, encoder_pb2_grpc.EncoderServiceStub)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def encoder(model_dir: Path) -> AsyncIterator[RunningEncoder]:
    running = await start_encoder(model_dir, batch_max_wait_ms=20.0, max_items_per_request=8)
    yield running
    await running.stop()
