"""Domain errors and their one mapping to gRPC status codes.

Model and service code raise these plain exceptions; only the server interceptor
(:mod:`modaverse_runtime.interceptors`) turns them into gRPC statuses, so no
servicer or model ever touches ``context.abort`` itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import grpc

from modaverse_protos.statuses import error_classes


class ModaverseError(Exception):
    """Base class: an error that carries the gRPC status it should surface as."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ModaverseError):
    """The request itself is wrong: bad media, shape, parameter or option."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ModaverseError):
    """A named thing (adapter, model, route) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ModaverseError):
    """Creating something (an adapter, a route) that exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(ModaverseError):
    """Over a limit or a queue is full: the caller may retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ModaverseError):
    """Not ready (models still loading, shutting down) or a dependency is down."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ModaverseError):
    """No valid credentials on the call."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceeded(ModaverseError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(ModaverseError):
    code = grpc.StatusCode.FAILED_PRECONDITION


# The API's error statuses (the contracts' table, which the SDK resolves to its own classes) to these classes.
# Each class's ``code`` is its status here (tests/unit/runtime/test_errors.py).
BY_STATUS: Final[Mapping[grpc.StatusCode, type[ModaverseError]]] = MappingProxyType(
    error_classes(sys.modules[__name__], ModaverseError)
)


def is_out_of_memory(exc: BaseException) -> bool:
    """A ``torch.OutOfMemoryError`` (GPU memory). Torch is not imported for it: where torch was never
    loaded, nothing can have raised one (the SDK and the gateway do without torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failure should be reported with.

    Domain errors carry their own code. Anything else is a bug: INTERNAL with the
    exception type only, so no internals (paths, tensors, tokens) leak to clients.
    """
    if isinstance(exc, ModaverseError):
        return exc.code, exc.message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "operation timed out"
    if isinstance(exc, MemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory while serving the request"
    if is_out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of GPU memory while serving the request; retry later"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server logs"
