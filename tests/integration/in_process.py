"""Any service, in-process on a loopback port: real gRPC server, waited on until SERVING, one channel."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modaverse_runtime.server import ModaverseServer, ServiceSpec
from modaverse_runtime.settings import ServerSettings

StubT = TypeVar("StubT")
SettingsT = TypeVar("SettingsT", bound=ServerSettings)
T = TypeVar("T")


@dataclass
class InProcessServer(Generic[StubT, SettingsT]):
    """What every in-process model service is in tests: the server, one channel to it, its stub, its settings."""

    server: ModaverseServer
    channel: grpc.aio.Channel
    stub: StubT
    settings: SettingsT

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def health(self, service: str = "") -> int:
        """Health/Check for ``service`` ("": the whole server) on the server's channel."""
        reply = await health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=service))
        return int(reply.status)

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(grace=1)


async def start_server(spec: ServiceSpec, settings: ServerSettings, ready_timeout: float = 120) -> ModaverseServer:
    """Start and wait until the models are loaded, stopping the server if that fails."""
    server = ModaverseServer(spec, settings)
    await server.start()
    try:
        await server.wait_ready(ready_timeout)
    except BaseException:
        await server.stop(grace=0)
        raise
    return server


async def serve(
    spec: ServiceSpec, settings: SettingsT, stub: Callable[[grpc.aio.Channel], StubT]
) -> InProcessServer[StubT, SettingsT]:
    """:func:`start_server`, then one channel to it."""
    server = await start_server(spec, settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return InProcessServer(server, channel, stub(channel), settings)


def free_port() -> int:
    """A loopback port with nothing listening (a server started later may bind it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BackgroundLoop:
    """An event loop in a daemon thread, for in-process servers next to plain blocking test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
