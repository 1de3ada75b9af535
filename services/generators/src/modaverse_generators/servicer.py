"""GeneratorService RPCs: convert, iterate the generator, convert back. Errors map in the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc

from . import convert
from .base import Generator, Progress


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    async def Generate(
        self, request: generator_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[generator_pb2.GenerateResponse]:
        events = self.generator.generate(convert.generation_request(request))
        try:
            async for event in events:
                if isinstance(event, Progress):
                    yield convert.progress_response(event)
                else:
                    for response in convert.media_responses(event):
                        yield response
        finally:
            await events.aclose()  # on cancel: leaves the queue / stops the pipeline at once

    async def Info(
        self, request: generator_pb2.InfoRequest, context: aio.ServicerContext[Any, Any]
    ) -> generator_pb2.InfoResponse:
        return convert.info_response(self.generator.info())
