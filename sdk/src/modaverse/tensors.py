"""Decoding ``common.v1.Tensor`` (raw little-endian bytes + dtype + shape) into NumPy arrays.

The SDK's own copy of the decoder, so that it needs neither the server runtime nor torch.
float32 and float16 come back as read-only views over the message's bytes; bfloat16 has no NumPy
dtype, so it is widened to float32 (exactly: a bfloat16 is the upper half of a float32).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modaverse_protos.common.v1 import common_pb2

_DTYPES: dict[int, tuple[str, np.dtype[Any]]] = {
    common_pb2.DTYPE_FLOAT32: ("float32", np.dtype("<f4")),
    common_pb2.DTYPE_FLOAT16: ("float16", np.dtype("<f2")),
    common_pb2.DTYPE_BFLOAT16: ("bfloat16", np.dtype("<u2")),  # raw bf16 words on the wire
}


def tensor_to_numpy(tensor: common_pb2.Tensor) -> np.ndarray[Any, Any]:
    """The tensor as an array of its shape: float32, float16, or float32 for bfloat16.

    Raises ``ValueError`` for an unknown dtype, a negative dimension, or data whose length does not
    match the shape.
    """
    if tensor.dtype not in _DTYPES:
        raise ValueError(f"tensor dtype {tensor.dtype} is not supported (float32, float16 and bfloat16 are)")
    name, wire = _DTYPES[tensor.dtype]
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    data = tensor.data  # each read of a bytes field copies: read it once
    expected = math.prod(shape) * wire.itemsize
    if len(data) != expected:
        raise ValueError(f"a {name} tensor of shape {list(shape)} needs {expected} bytes, got {len(data)}")
    array = np.frombuffer(data, dtype=wire).reshape(shape)
    if tensor.dtype == common_pb2.DTYPE_BFLOAT16:
        return (array.astype("<u4") << 16).view("<f4")
    return array


__all__ = ["tensor_to_numpy"]
