"""Any service, in-process on a loopback port: real gRPC server, waited on until SERVING, one channel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from modaverse_runtime.server import ModaverseServer, ServiceSpec
from modaverse_runtime.settings import ServerSettings

StubT = TypeVar("StubT")
SettingsT = TypeVar("SettingsT", bound=ServerSettings)


@dataclass
class InProcessServer(Generic[StubT, SettingsT]):
    server: ModaverseServer
    channel: grpc.aio.Channel
    stub: StubT
    settings: SettingsT

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(grace=1)


async def serve(
    spec: ServiceSpec, settings: SettingsT, stub: Callable[[grpc.aio.Channel], StubT]
) -> tuple[ModaverseServer, grpc.aio.Channel, StubT]:
    """Start, wait until the models are loaded (stopping the server if that fails), connect."""
    server = ModaverseServer(spec, settings)
    port = await server.start()
    try:
        await server.wait_ready(120)
    except BaseException:
        await server.stop(grace=0)
        raise
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, stub(channel)
