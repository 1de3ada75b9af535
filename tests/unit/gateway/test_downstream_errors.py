"""How a downstream's failure reaches the gateway's client: which statuses pass on and which become UNAVAILABLE."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from modaverse_gateway.backends import downstream_error
from modaverse_protos.statuses import ERROR_NAMES, HOP_BY_HOP
from modaverse_runtime.errors import ModaverseError, Unavailable

RELAYED = [code for code in ERROR_NAMES if code not in HOP_BY_HOP]


def rpc_error(code: grpc.StatusCode, details: str | None = "what went wrong") -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


@pytest.mark.parametrize("code", RELAYED)
def test_the_apis_own_statuses_pass_on_naming_the_service(code: grpc.StatusCode) -> None:
    error = downstream_error("encoder", rpc_error(code))
    assert type(error).__name__ == ERROR_NAMES[code]
    assert error.code == code
    assert error.message == "encoder: what went wrong"


def test_relayed_statuses_are_those_the_gateway_always_passed_on() -> None:
    assert set(RELAYED) == {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL, grpc.StatusCode.PERMISSION_DENIED]
)
def test_the_gateways_own_credentials_and_anything_else_are_unavailable(code: grpc.StatusCode) -> None:
    # A backend refusing the gateway's certificate is not the client's wrong token.
    error = downstream_error("llm", rpc_error(code))
    assert type(error) is Unavailable
    assert isinstance(error, ModaverseError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "llm: what went wrong"


def test_without_details_the_status_name_is_the_message() -> None:
    assert downstream_error("generator sd15", rpc_error(grpc.StatusCode.NOT_FOUND, None)).message == (
        "generator sd15: NOT_FOUND"
    )
