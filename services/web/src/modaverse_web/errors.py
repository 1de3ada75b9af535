"""Errors in OpenAI's JSON shape, and the one mapping from the SDK's exceptions to HTTP statuses.

Every failed call answers ``{"error": {"message", "type", "param", "code"}}`` with the status below;
``param`` names the bad part of the request (``messages[0].content[1].image_url``) where there is one.
"""

from __future__ import annotations

from typing import Any

import grpc

from modaverse.errors import ModaverseError

# gRPC status (from the gateway, through the SDK) -> (HTTP status, OpenAI error type, code)
_BY_STATUS: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_argument"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error", "failed_precondition"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error", "out_of_range"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error", "permission_denied"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error", "not_found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "server_error", "not_implemented"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
    grpc.StatusCode.CANCELLED: (503, "server_error", "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error", "timeout"),
}
_RETRY_AFTER = {429, 503}


class APIError(Exception):
    """A failed HTTP call: status, and the OpenAI error object's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.request_id = request_id

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.status in _RETRY_AFTER:
            headers["retry-after"] = "1"
        if self.status == 401:
            headers["www-authenticate"] = "Bearer"
        if self.request_id:
            headers["x-request-id"] = self.request_id
        return headers


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}" if param else message, param=param, code=code)


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, param=param, code="request_too_large")


def unknown_model(model: str, hint: str) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist; {hint}",
        type="not_found_error",
        param="model",
        code="model_not_found",
    )


def from_sdk(error: ModaverseError, param: str | None = None) -> APIError:
    """The HTTP form of an SDK exception (the gateway's gRPC status)."""
    status, kind, code = _BY_STATUS.get(error.code, (502, "server_error", "upstream_error"))
    details = error.details or error.code.name
    if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        message = f"the gateway or a generator is unavailable: {details}"
    elif error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"the answer took longer than the deadline: {details}"
    elif status == 502:
        message = f"the gateway failed ({error.code.name}): {details}"
    else:
        message = details
    return APIError(status, message, type=kind, param=param, code=code, request_id=error.request_id)
