"""The servers' domain errors against the contracts' status table, which the SDK shares."""

from __future__ import annotations

import grpc
import pytest

import modaverse.errors as sdk_errors
from modaverse_protos.statuses import ERROR_NAMES, error_classes
from modaverse_runtime import errors
from modaverse_runtime.errors import BY_STATUS, ModaverseError, status_for


@pytest.mark.parametrize("code", list(ERROR_NAMES))
def test_each_api_status_has_a_server_error_that_is_reported_with_it(code: grpc.StatusCode) -> None:
    cls = BY_STATUS[code]
    assert cls.code == code
    assert status_for(cls("message")) == (code, "message")


def test_the_sdk_and_the_servers_name_each_status_alike() -> None:
    sdk = error_classes(sdk_errors, sdk_errors.ModaverseError)
    assert {code: cls.__name__ for code, cls in sdk.items()} == {code: cls.__name__ for code, cls in BY_STATUS.items()}


def test_server_only_errors_keep_their_own_status() -> None:
    # Not in the table (the SDK raises its base class for them), but still reported with their status.
    assert set(BY_STATUS) == set(ERROR_NAMES)
    assert status_for(errors.AlreadyExists("x"))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert status_for(errors.FailedPrecondition("x"))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert issubclass(errors.AlreadyExists, ModaverseError)


def test_out_of_gpu_memory_is_resource_exhausted_without_internals() -> None:
    torch = pytest.importorskip("torch")
    code, message = status_for(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB on /dev/x"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "GPU memory" in message and "/dev/x" not in message
    assert errors.is_out_of_memory(torch.OutOfMemoryError("x")) and not errors.is_out_of_memory(RuntimeError("x"))
