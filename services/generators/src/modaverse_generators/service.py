"""Wiring: settings → generator (from the registry) → servicer → the shared server lifecycle."""

from __future__ import annotations

from grpc import aio

from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc
from modaverse_runtime.server import ServiceSpec, model_service

from .base import GENERATORS, Generator
from .servicer import GeneratorServicer
from .settings import GeneratorSettings

SERVICE_NAME: str = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name


def make_generator(settings: GeneratorSettings) -> Generator:
    return GENERATORS.resolve(settings.generator_kind)(settings)


def make_spec(settings: GeneratorSettings, generator: Generator | None = None) -> ServiceSpec:
    model = generator or make_generator(settings)
    servicer = GeneratorServicer(model)

    def register(server: aio.Server) -> None:
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(servicer, server)

    return model_service(f"generator-{settings.generator_kind}", [SERVICE_NAME], model, register)
