"""Device and dtype selection for torch-based services, and giving memory back (torch imported lazily)."""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING

from .errors import FailedPrecondition

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FailedPrecondition(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on GPU (as the release serves), float32 on CPU."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise FailedPrecondition(f"unknown dtype {name!r}; expected auto, float32, float16 or bfloat16")
    return table[name]


def release_memory() -> None:
    """After an out-of-memory failure, once its traceback (which holds the failed call's tensors) is gone:
    collect what only cycles still hold, and return CUDA's cached free blocks to the device, so the next
    request (or another process on the GPU) finds the memory free."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # never initialises CUDA in a CPU-only process
        torch.cuda.empty_cache()
