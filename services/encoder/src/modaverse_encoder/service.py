"""Wiring: settings → encoder (from the registry) → servicer → the shared server lifecycle."""

from __future__ import annotations

from grpc import aio

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime.server import ServiceSpec, model_service

from .base import ENCODERS, Encoder
from .servicer import EncoderServicer
from .settings import EncoderSettings

SERVICE_NAME: str = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name


def make_encoder(settings: EncoderSettings) -> Encoder:
    return ENCODERS.resolve(settings.encoder_impl)(settings)


def make_spec(settings: EncoderSettings, encoder: Encoder | None = None) -> ServiceSpec:
    model = encoder or make_encoder(settings)
    servicer = EncoderServicer(model, settings)

    def register(server: aio.Server) -> None:
        encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server)

    return model_service("encoder", [SERVICE_NAME], model, register)
