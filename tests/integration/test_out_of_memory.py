"""GPU out-of-memory in the encoder and a generator, forced on CPU: the request that hit it gets
RESOURCE_EXHAUSTED, the tensors of the failed call are freed, and the server goes on serving.

The model's forward raises ``torch.OutOfMemoryError`` once (as CUDA's allocator does), holding a tensor the
way a failed forward holds its activations; a weak reference to it tells whether that memory was let go.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2

from modaverse_encoder.imagebind_encoder import ImageBindEncoder
from modaverse_encoder.service import make_encoder, make_spec
from modaverse_encoder.settings import EncoderSettings
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime import samples

from .generator_fixtures import collect, start_generator
from .in_process import serve

pytestmark = pytest.mark.asyncio(loop_scope="function")


class OutOfMemoryOnce:
    """Wraps a module's forward: the first call allocates, then fails as CUDA would; later calls run."""

    def __init__(self, forward: Callable[..., Any]) -> None:
        self.forward = forward
        self.held: list[weakref.ref[torch.Tensor]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.held:
            activations = torch.zeros(1 << 20)
            self.held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by a test)")
        return self.forward(*args, **kwargs)

    @property
    def released(self) -> bool:
        return bool(self.held) and self.held[0]() is None


def install(module: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> OutOfMemoryOnce:
    failing = OutOfMemoryOnce(module.forward)
    monkeypatch.setattr(module, "forward", failing)
    return failing


async def test_encoder_out_of_memory(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EncoderSettings(host="127.0.0.1", port=0, model_dir=model_dir)
    encoder = make_encoder(settings)
    assert isinstance(encoder, ImageBindEncoder)
    running = await serve(make_spec(settings, encoder), settings, encoder_pb2_grpc.EncoderServiceStub)
    try:
        assert encoder._model is not None
        failing = install(encoder._model, monkeypatch)
        image = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=samples.make_image())
        request = encoder_pb2.EncodeRequest(media=[image])
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.Encode(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "out of GPU memory" in (raised.value.details() or "")
        assert failing.released
        reply = await running.stub.Encode(request, timeout=30)
        assert len(reply.embeddings) == 1
        assert await running.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop()


async def test_generator_out_of_memory(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = await start_generator(model_dir, "text-to-image")
    try:
        failing = install(gen.generator.pipe.unet, monkeypatch)
        fields: dict[str, Any] = {"prompt": "a red circle", "seed": 3, "steps": 2, "width": 32, "height": 32}
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await collect(gen, **fields)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "smaller size" in (raised.value.details() or "")  # what the caller can change
        assert failing.released
        assert (await collect(gen, **fields)).done is not None
        assert await gen.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        await gen.stop()
