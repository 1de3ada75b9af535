"""Wiring: settings → backend (from the registry) → servicer → the shared server lifecycle."""

from __future__ import annotations

from typing import Any

from grpc import aio

from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.server import ServiceSpec, model_service

from .base import LLM_BACKENDS, LLMBackend
from .servicer import LLMServicer
from .settings import LLMSettings

SERVICE_NAME: str = llm_pb2.DESCRIPTOR.services_by_name["LLMService"].full_name


def settings_class(impl: str) -> type[LLMSettings]:
    """The settings class of the backend ``impl`` (registry name or ``pkg.module:Class``)."""
    return LLM_BACKENDS.resolve(impl).settings_class


def load_settings(**values: Any) -> LLMSettings:
    """What the service reads: the settings class of the backend that ``values["llm_impl"]`` (else
    MODAVERSE_LLM_IMPL) names, ``values`` over the environment."""
    impl = values.get("llm_impl") or LLMSettings().llm_impl
    return settings_class(str(impl))(**values)


def make_backend(settings: LLMSettings) -> LLMBackend:
    # The backend reads its own settings class (its fields from the environment) from these.
    return LLM_BACKENDS.resolve(settings.llm_impl)(settings)


def make_spec(settings: LLMSettings, backend: LLMBackend | None = None) -> ServiceSpec:
    model = backend or make_backend(settings)
    servicer = LLMServicer(model, settings)

    def register(server: aio.Server) -> None:
        llm_pb2_grpc.add_LLMServiceServicer_to_server(servicer, server)

    return model_service("llm", [SERVICE_NAME], model, register)
