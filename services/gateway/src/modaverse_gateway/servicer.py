"""GatewayService RPCs: thin; the orchestrator does the work, the interceptor maps errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from .backends import Backends
from .convert import MODALITY_PROTO
from .orchestrator import ChatOrchestrator
from .routes import RoutingTable


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, orchestrator: ChatOrchestrator, backends: Backends, routes: RoutingTable, names: dict[str, str]):
        self.orchestrator = orchestrator
        self.backends = backends
        self.routes = routes
        self.names = names  # llm / encoder model names, filled in when known

    async def Chat(
        self, request: gateway_pb2.ChatRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.ChatEvent]:
        async for event in self.orchestrator.chat(request, context.time_remaining()):
            yield event

    async def Generate(
        self, request: gateway_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.ChatEvent]:
        async for event in self.orchestrator.generate(request, context.time_remaining()):
            yield event

    async def Embed(
        self, request: gateway_pb2.EmbedRequest, context: aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.EmbedResponse:
        return await self.orchestrator.embed(request, context.time_remaining())

    async def ListModels(
        self, request: gateway_pb2.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.ListModelsResponse:
        routes = list(self.routes.routes.values())
        healthy = await asyncio.gather(*(self.backends.serving(self.backends.generators[r.name]) for r in routes))
        reply = gateway_pb2.ListModelsResponse(
            llm_model=self.names.get("llm", ""), encoder_model=self.names.get("encoder", "")
        )
        for route, ok in zip(routes, healthy, strict=True):
            default = self.routes.default_for(route.modality)
            reply.generators.add(
                modality=MODALITY_PROTO[route.modality],
                model=route.name,
                endpoints=list(route.endpoints),
                is_default=default is not None and default.name == route.name,
                healthy=ok,
            )
        return reply
