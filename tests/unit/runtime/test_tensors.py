from __future__ import annotations

import numpy as np
import pytest
import torch

from modaverse_protos.common.v1 import common_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.tensors import from_numpy, from_torch, to_numpy, to_torch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_round_trip_is_exact(dtype: torch.dtype) -> None:
    x = torch.randn(3, 5, 7).to(dtype)
    msg = from_torch(x)
    assert list(msg.shape) == [3, 5, 7]
    assert len(msg.data) == x.numel() * x.element_size()
    y = to_torch(msg)
    assert y.dtype == dtype
    assert torch.equal(x, y)


def test_cast_on_encode() -> None:
    x = torch.randn(4, 8)
    msg = from_torch(x, common_pb2.DTYPE_FLOAT16)
    assert msg.dtype == common_pb2.DTYPE_FLOAT16
    assert torch.allclose(to_torch(msg).float(), x, atol=1e-2)


def test_numpy_round_trip_and_zero_copy_view() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    msg = from_numpy(x)
    y = to_numpy(msg)
    np.testing.assert_array_equal(x, y)
    assert not y.flags.writeable
    # A view over the bytes object protobuf hands out, not a further copy.
    base: object = y
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, bytes)


def test_bfloat16_travels_as_raw_words() -> None:
    x = torch.tensor([1.0, -2.5, 3.0], dtype=torch.bfloat16)
    words = to_numpy(from_torch(x))
    assert words.dtype == np.uint16
    np.testing.assert_array_equal(words, x.view(torch.int16).numpy().view(np.uint16))


def test_scalar_and_empty_tensors() -> None:
    assert to_torch(from_torch(torch.tensor(2.5))).item() == 2.5
    empty = to_torch(from_torch(torch.zeros(0, 16)))
    assert tuple(empty.shape) == (0, 16)


@pytest.mark.parametrize(
    ("msg", "fragment"),
    [
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[2, 2], data=b"\0" * 15), "needs 16 bytes"),
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_UNSPECIFIED, shape=[1], data=b"\0" * 4), "dtype"),
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[-1], data=b""), "negative"),
        (common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[1] * 9, data=b"\0" * 4), "rank"),
    ],
)
def test_bad_tensors_are_invalid_argument(msg: common_pb2.Tensor, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        to_numpy(msg)


def test_unsupported_numpy_dtype() -> None:
    with pytest.raises(InvalidArgument, match="int64"):
        from_numpy(np.zeros(3, dtype=np.int64))
