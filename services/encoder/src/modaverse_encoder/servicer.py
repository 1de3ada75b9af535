"""EncoderService RPCs: convert, await the encoder, convert back. Errors map in the interceptor."""

from __future__ import annotations

from typing import Any

from grpc import aio

from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc

from . import convert
from .base import Encoder
from .settings import EncoderSettings


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder, settings: EncoderSettings) -> None:
        self.encoder = encoder
        self.settings = settings

    async def Encode(
        self, request: encoder_pb2.EncodeRequest, context: aio.ServicerContext[Any, Any]
    ) -> encoder_pb2.EncodeResponse:
        items = convert.media_inputs(request)
        dtype = convert.output_dtype(request)
        encoded = await self.encoder.encode(items, project=not request.omit_projected)
        info = self.encoder.info()
        return convert.encode_response(encoded, dtype, request.omit_imagebind, info.encoder_id, info.encoder_model)

    async def Info(
        self, request: encoder_pb2.InfoRequest, context: aio.ServicerContext[Any, Any]
    ) -> encoder_pb2.InfoResponse:
        self.encoder.require_ready()
        return convert.info_response(self.encoder.info(), self.settings)
