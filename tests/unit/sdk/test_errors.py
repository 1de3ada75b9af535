"""The SDK's exceptions per gRPC status, from the contracts' status table (modaverse_protos.statuses)."""

from __future__ import annotations

import types

import grpc
import pytest
from grpc import aio

import modaverse
from modaverse.errors import ModaverseError, Unauthenticated, from_rpc_error
from modaverse_protos.statuses import ERROR_NAMES, error_classes


def rpc_error(code: grpc.StatusCode, details: str = "why", trailing: aio.Metadata | None = None) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), trailing or aio.Metadata(), details=details)


@pytest.mark.parametrize("code", list(ERROR_NAMES))
def test_each_api_status_raises_its_own_exception(code: grpc.StatusCode) -> None:
    error = from_rpc_error(rpc_error(code))
    assert type(error).__name__ == ERROR_NAMES[code]
    assert type(error) is getattr(modaverse, ERROR_NAMES[code])  # exported from the package
    assert (error.code, error.details, error.request_id) == (code, "why", None)
    assert str(error) == f"{code.name}: why"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.CANCELLED]
)
def test_any_other_status_raises_the_base_class_with_its_code(code: grpc.StatusCode) -> None:
    error = from_rpc_error(rpc_error(code))
    assert type(error) is ModaverseError
    assert error.code == code


def test_the_request_id_comes_from_the_trailing_metadata() -> None:
    trailing = aio.Metadata(("x-other", "1"), ("x-request-id", "req-42"))
    error = from_rpc_error(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "bad token", trailing))
    assert isinstance(error, Unauthenticated)
    assert error.request_id == "req-42"


def test_a_status_without_its_class_fails_loudly() -> None:
    partial = types.SimpleNamespace(
        __name__="partial_errors", **{name: type(name, (ModaverseError,), {}) for name in ERROR_NAMES.values()}
    )
    assert set(error_classes(partial, ModaverseError)) == set(ERROR_NAMES)
    del partial.NotFound
    with pytest.raises(LookupError, match="partial_errors has no ModaverseError subclass NotFound for NOT_FOUND"):
        error_classes(partial, ModaverseError)
    partial.NotFound = ValueError  # a class, but not one of this side's errors
    with pytest.raises(LookupError, match="NotFound"):
        error_classes(partial, ModaverseError)
