"""LLM-specific domain errors (the runtime's interceptor maps them by their ``code``)."""

from __future__ import annotations

import grpc

from modaverse_runtime.errors import ModaverseError


class AlreadyExists(ModaverseError):
    code = grpc.StatusCode.ALREADY_EXISTS
