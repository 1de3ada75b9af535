"""LLMService RPCs: convert, await the backend, convert back. Errors map in the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc

from . import convert
from .base import LLMBackend
from .settings import LLMSettings


class LLMServicer(llm_pb2_grpc.LLMServiceServicer):
    def __init__(self, backend: LLMBackend, settings: LLMSettings) -> None:
        self.backend = backend
        self.settings = settings

    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        self.backend.require_ready()
        b = self.backend
        domain = convert.generation_request(request, b.hidden_size, b.dtype, self.settings.max_media_rows)
        async for event in b.generate(domain):
            yield convert.event_response(event)

    async def RenderPrompt(
        self, request: llm_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_pb2.RenderPromptResponse:
        b = self.backend
        b.require_ready()
        domain = convert.generation_request(request, b.hidden_size, b.dtype, self.settings.max_media_rows)
        assert b.builder is not None
        return convert.render_response(b.prepare(domain), b.builder.tokenizer, b.context_length)

    async def Info(self, request: llm_pb2.InfoRequest, context: aio.ServicerContext[Any, Any]) -> llm_pb2.InfoResponse:
        self.backend.require_ready()
        return convert.info_response(self.backend.info(), self.settings.profile)

    async def LoadAdapter(
        self, request: llm_pb2.LoadAdapterRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_pb2.LoadAdapterResponse:
        adapter = await self.backend.load_adapter(request.name.strip(), request.path.strip(), request.make_default)
        return llm_pb2.LoadAdapterResponse(adapter=convert.adapter_proto(adapter))

    async def UnloadAdapter(
        self, request: llm_pb2.UnloadAdapterRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_pb2.UnloadAdapterResponse:
        await self.backend.unload_adapter(request.name.strip())
        return llm_pb2.UnloadAdapterResponse()
