"""The SDK's own tensor decoder agrees with the server runtime's codec (which encodes what it decodes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modaverse.tensors import tensor_to_numpy
from modaverse_protos.common.v1 import common_pb2
from modaverse_runtime.tensors import from_numpy, from_torch


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_tensors_decode_to_the_same_array(dtype: str) -> None:
    array = np.arange(24, dtype=dtype).reshape(2, 3, 4) / 7
    decoded = tensor_to_numpy(from_numpy(array))
    assert decoded.dtype == np.dtype(dtype)
    assert decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded, array)


def test_bfloat16_is_widened_to_float32_exactly() -> None:
    values = torch.tensor([[0.0, -1.5, 3.140625], [1e-3, 65280.0, -2.0]], dtype=torch.bfloat16)
    decoded = tensor_to_numpy(from_torch(values))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values.float().numpy())


def test_empty_and_scalar_tensors() -> None:
    assert tensor_to_numpy(from_numpy(np.zeros((0, 5), np.float32))).shape == (0, 5)
    assert tensor_to_numpy(from_numpy(np.array(2.5, np.float32))).item() == 2.5


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[2, 2], data=b"\0" * 12), "needs 16 bytes, got 12"),
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT16, shape=[-1], data=b""), "negative dimension"),
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_UNSPECIFIED, shape=[1], data=b"\0" * 4), "not supported"),
    ],
)
def test_malformed_tensors_are_refused(tensor: common_pb2.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tensor_to_numpy(tensor)
