"""The shared lifecycle: NOT_SERVING while loading, SERVING after, NOT_SERVING on shutdown,
and the interceptor's error → status mapping."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime.errors import InvalidArgument, ResourceExhausted
from modaverse_runtime.server import ModaverseServer, ServiceSpec, server_options
from modaverse_runtime.settings import ServerSettings

SERVICE = "modaverse.encoder.v1.EncoderService"


class Scripted(encoder_pb2_grpc.EncoderServiceServicer):
    """An encoder servicer whose Encode raises what the test asks for (tests the runtime only)."""

    def __init__(self) -> None:
        self.raise_next: BaseException | None = None

    async def Encode(self, request: Any, context: Any) -> encoder_pb2.EncodeResponse:
        if self.raise_next is not None:
            raise self.raise_next
        return encoder_pb2.EncodeResponse()

    async def Info(self, request: Any, context: Any) -> encoder_pb2.InfoResponse:
        return encoder_pb2.InfoResponse()


def make_server(
    loaded: asyncio.Event, drain_delay_s: float = 0.0, settings: ServerSettings | None = None
) -> tuple[ModaverseServer, Scripted]:
    servicer = Scripted()

    async def load() -> None:
        await loaded.wait()

    async def unload() -> None:
        return None

    spec = ServiceSpec(
        "test",
        [SERVICE],
        lambda server: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server),
        load,
        unload,
    )
    settings = settings or ServerSettings(host="127.0.0.1", port=0, grace_period_s=1.0, drain_delay_s=drain_delay_s)
    return ModaverseServer(spec, settings), servicer


async def noop() -> None:
    return None


async def status(channel: aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(reply.status)


async def test_health_follows_the_lifecycle() -> None:
    loaded = asyncio.Event()
    server, _ = make_server(loaded, drain_delay_s=0.3)
    port = await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await status(channel, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        loaded.set()
        await server.wait_ready(5)
        assert await status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await status(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.1)  # inside the drain delay: still answering, but NOT_SERVING
        assert await status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_health_watch_streams_and_does_not_hold_the_drain() -> None:
    # Watch is grpc's own coroutine-style streaming handler (context.write), unlike ours; the
    # interceptor must pass it through, and shutdown must end it rather than wait out the grace.
    loaded = asyncio.Event()
    settings = ServerSettings(host="127.0.0.1", port=0, grace_period_s=30.0)
    server, _ = make_server(loaded, settings=settings)
    port = await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        seen = [(await watch.read()).status]
        loaded.set()
        seen.append((await watch.read()).status)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopping = asyncio.create_task(server.stop())
        seen.append((await watch.read()).status)
        await stopping
        assert loop.time() - started < 5.0  # not the 30 s grace
        assert await watch.code() == grpc.StatusCode.OK  # ended by the server, not abandoned
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen == [not_serving, serving, not_serving]


async def test_load_failure_is_reported() -> None:
    async def load() -> None:
        raise RuntimeError("no weights")

    async def noop() -> None:
        return None

    spec = ServiceSpec("broken", [SERVICE], lambda s: None, load, noop)
    server = ModaverseServer(spec, ServerSettings(host="127.0.0.1", port=0))
    await server.start()
    with pytest.raises(RuntimeError, match="failed to load"):
        await server.wait_ready(5)
    await server.stop(grace=0)


@pytest.mark.parametrize(
    ("exc", "code", "details"),
    [
        (InvalidArgument("bad thing"), grpc.StatusCode.INVALID_ARGUMENT, "bad thing"),
        (ResourceExhausted("full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "full"),
        (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED, "timed out"),
        (KeyError("/secret/path"), grpc.StatusCode.INTERNAL, "internal error (KeyError)"),
    ],
)
async def test_errors_map_to_status_codes(exc: Exception, code: grpc.StatusCode, details: str) -> None:
    loaded = asyncio.Event()
    loaded.set()
    server, servicer = make_server(loaded)
    port = await server.start()
    await server.wait_ready(5)
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        servicer.raise_next = exc
        with pytest.raises(aio.AioRpcError) as info:
            await stub.Encode(encoder_pb2.EncodeRequest())
        assert info.value.code() == code
        assert details in (info.value.details() or "")
        assert "/secret/path" not in (info.value.details() or "")
        servicer.raise_next = None
        await stub.Encode(encoder_pb2.EncodeRequest())  # still healthy
    await server.stop(grace=0)


def test_connection_age_options_follow_the_settings() -> None:
    def age(age_s: float = 0.0, grace_s: float = 0.0) -> dict[str, int]:
        settings = ServerSettings(max_connection_age_s=age_s, max_connection_age_grace_s=grace_s)
        return {k: v for k, v in server_options(settings) if "connection_age" in k}

    assert age() == {}  # off by default: connections live as long as the client keeps them
    assert age(30) == {"grpc.max_connection_age_ms": 30_000}  # no grace: calls in flight run to their end
    assert age(0.5, 10) == {
        "grpc.max_connection_age_ms": 500,
        "grpc.max_connection_age_grace_ms": 10_000,
    }


async def test_out_of_memory_outside_a_batcher_is_released_before_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that runs out of GPU memory on its own (no batcher around it): RESOURCE_EXHAUSTED, and
    the memory its frames held is free by the time the runtime releases memory (the traceback, which
    holds those frames, is dropped first); the server keeps serving."""
    import torch

    from modaverse_runtime import devices, interceptors

    held: list[weakref.ref[torch.Tensor]] = []
    freed: list[bool] = []

    def release() -> None:
        devices.release_memory()
        freed.append(held[-1]() is None)

    monkeypatch.setattr(interceptors, "release_memory", release)

    class Hungry(Scripted):
        async def Encode(self, request: Any, context: Any) -> encoder_pb2.EncodeResponse:
            if not held:
                activations = torch.zeros(1 << 16)
                held.append(weakref.ref(activations))
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (forced by a test)")
            return encoder_pb2.EncodeResponse()

    servicer = Hungry()
    spec = ServiceSpec(
        "test", [SERVICE], lambda s: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, s), noop, noop
    )
    server = ModaverseServer(spec, ServerSettings(host="127.0.0.1", port=0))
    port = await server.start()
    await server.wait_ready(5)
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.Encode(encoder_pb2.EncodeRequest())
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "out of GPU memory" in (info.value.details() or "")
        assert freed == [True]
        await stub.Encode(encoder_pb2.EncodeRequest())  # still serving
    await server.stop(grace=0)
