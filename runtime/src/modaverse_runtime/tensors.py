"""Tensor codec: ``common.v1.Tensor`` (raw little-endian bytes + dtype + shape) to and from
NumPy arrays and torch tensors.

Decoding adds no copy: the array/tensor is a read-only view over the ``bytes`` object
that reading the protobuf field yields (upb itself copies once on field access).
Encoding costs one copy into the ``bytes`` a protobuf field must own.
bfloat16 has no NumPy dtype, so it travels as uint16 words and is reinterpreted by torch.
torch is imported lazily: the gateway uses this module without it.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from modaverse_protos.common.v1 import common_pb2

from .errors import InvalidArgument

if TYPE_CHECKING:
    import torch

DType = common_pb2.DType

_NUMPY_DTYPES: dict[int, np.dtype[Any]] = {
    common_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DTYPE_BFLOAT16: np.dtype("<u2"),  # raw bf16 words
}
_NAMES: dict[int, str] = {
    common_pb2.DTYPE_FLOAT32: "float32",
    common_pb2.DTYPE_FLOAT16: "float16",
    common_pb2.DTYPE_BFLOAT16: "bfloat16",
}
MAX_RANK = 8


def dtype_name(dtype: int) -> str:
    return _NAMES.get(dtype) or f"unknown({dtype})"


def dtype_from_name(name: str) -> int:
    for code, n in _NAMES.items():
        if n == name:
            return code
    raise InvalidArgument(f"unsupported dtype {name!r}; expected one of {sorted(_NAMES.values())}")


def _checked(t: common_pb2.Tensor) -> tuple[tuple[int, ...], np.dtype[Any], bytes]:
    """Shape, dtype and the data, validated. Reads ``t.data`` once: each read copies."""
    if t.dtype not in _NUMPY_DTYPES:
        raise InvalidArgument(f"tensor dtype {t.dtype} is not supported; use float32, float16 or bfloat16")
    shape = tuple(int(d) for d in t.shape)
    if len(shape) > MAX_RANK:
        raise InvalidArgument(f"tensor rank {len(shape)} is over the limit of {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"tensor shape {list(shape)} has a negative dimension")
    np_dtype = _NUMPY_DTYPES[t.dtype]
    expected = math.prod(shape) * np_dtype.itemsize
    data = t.data
    if len(data) != expected:
        raise InvalidArgument(
            f"tensor of shape {list(shape)} and dtype {dtype_name(t.dtype)} needs {expected} bytes, got {len(data)}"
        )
    return shape, np_dtype, data


def to_numpy(t: common_pb2.Tensor) -> np.ndarray[Any, Any]:
    """A read-only view over the tensor's bytes. bfloat16 comes back as raw uint16 words."""
    shape, np_dtype, data = _checked(t)
    return np.frombuffer(data, dtype=np_dtype).reshape(shape)


def from_numpy(array: np.ndarray[Any, Any]) -> common_pb2.Tensor:
    """float32/float16 arrays only (bfloat16 goes through :func:`from_torch`)."""
    dt = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    for code, np_dtype in _NUMPY_DTYPES.items():
        if code != common_pb2.DTYPE_BFLOAT16 and np_dtype == dt:
            data = np.ascontiguousarray(array, dtype=np_dtype).tobytes()
            return common_pb2.Tensor(dtype=DType.ValueType(code), shape=list(array.shape), data=data)
    raise InvalidArgument(f"cannot encode numpy dtype {array.dtype}; use float32 or float16")


@functools.cache
def _torch_dtypes() -> dict[int, torch.dtype]:
    import torch

    # Decoded tensors are views over immutable message bytes, which torch warns about on
    # every call; we never write to them (documented above), so silence just that warning.
    warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)

    return {
        common_pb2.DTYPE_FLOAT32: torch.float32,
        common_pb2.DTYPE_FLOAT16: torch.float16,
        common_pb2.DTYPE_BFLOAT16: torch.bfloat16,
    }


def to_torch(t: common_pb2.Tensor) -> torch.Tensor:
    """A CPU tensor sharing memory with the message (treat it as read-only)."""
    import torch

    shape, _, data = _checked(t)
    if not data:
        return torch.empty(shape, dtype=_torch_dtypes()[t.dtype])
    return torch.frombuffer(data, dtype=_torch_dtypes()[t.dtype]).reshape(shape)


def from_torch(tensor: torch.Tensor, dtype: int | None = None) -> common_pb2.Tensor:
    """Encode a tensor, optionally casting to ``dtype`` (a ``common.v1.DType``) first."""
    import torch

    torch_dtypes = _torch_dtypes()
    code = dtype
    if code is None or code == common_pb2.DTYPE_UNSPECIFIED:
        code = next((c for c, d in torch_dtypes.items() if d == tensor.dtype), None)
        if code is None:
            raise InvalidArgument(f"cannot encode torch dtype {tensor.dtype}")
    elif code not in torch_dtypes:
        raise InvalidArgument(f"unsupported output dtype {code}")
    src = tensor.detach().to(device="cpu", dtype=torch_dtypes[code]).contiguous()
    # One copy: reinterpret the storage as bytes via a same-size integer view.
    raw = src.view(-1).view(torch.uint8) if src.numel() else src.new_empty(0, dtype=torch.uint8)
    return common_pb2.Tensor(dtype=DType.ValueType(code), shape=list(src.shape), data=raw.numpy().tobytes())
