"""Wiring: settings → backend (from the registry) → servicer → the shared server lifecycle."""

from __future__ import annotations

import asyncio

from grpc import aio

from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.server import ServiceSpec

from .base import LLM_BACKENDS, LLMBackend
from .servicer import LLMServicer
from .settings import LLMSettings

SERVICE_NAME: str = llm_pb2.DESCRIPTOR.services_by_name["LLMService"].full_name


def make_backend(settings: LLMSettings) -> LLMBackend:
    return LLM_BACKENDS.resolve(settings.llm_impl)(settings)


def make_spec(settings: LLMSettings, backend: LLMBackend | None = None) -> ServiceSpec:
    model = backend or make_backend(settings)
    servicer = LLMServicer(model, settings)

    async def load() -> None:
        await asyncio.to_thread(model.load)

    async def unload() -> None:
        await model.close()
        await asyncio.to_thread(model.unload)

    def register(server: aio.Server) -> None:
        llm_pb2_grpc.add_LLMServiceServicer_to_server(servicer, server)

    return ServiceSpec("llm", [SERVICE_NAME], register, load, unload)
