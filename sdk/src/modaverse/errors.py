"""Exceptions raised by the SDK, one per gRPC status a caller may want to handle (``modaverse_protos.statuses``)."""

from __future__ import annotations

import sys
from typing import cast

import grpc

from modaverse_protos.statuses import error_classes


class ModaverseError(Exception):
    """Any failed call. ``code`` is the gRPC status, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, request_id: str | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.request_id = request_id


class InvalidArgument(ModaverseError):
    """The request was rejected as malformed; fix it before retrying."""


class NotFound(ModaverseError):
    pass


class ResourceExhausted(ModaverseError):
    """The server shed load or a limit was hit; retry later."""


class Unavailable(ModaverseError):
    """The service is down, loading or shutting down; retry with backoff."""


class DeadlineExceeded(ModaverseError):
    pass


class Unauthenticated(ModaverseError):
    pass


# The contracts' status table resolved to the classes above (this module, as far as it is defined).
_BY_CODE = error_classes(sys.modules[__name__], ModaverseError)


def from_rpc_error(error: grpc.RpcError) -> ModaverseError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    request_id = None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for item in trailing or ():
        key, value = cast(tuple[str, str | bytes], item)  # (key, value) pairs at run time
        if key == "x-request-id":
            request_id = str(value)
    return _BY_CODE.get(code, ModaverseError)(code, details, request_id)
