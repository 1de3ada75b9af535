"""Loading ImageBind checkpoints, tiny or huge, through one path.

The model is built under ``accelerate.init_empty_weights()`` (parameters on the meta
device, no 4.5 GB of random init for huge), branches we do not serve are dropped before
loading, and the ``.pth`` is memory-mapped and assigned in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from torch import nn

from .architectures import architecture_kwargs
from .imagebind_compat import imagebind_model_module

log = logging.getLogger(__name__)

ARCH_CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "imagebind.pth"
_CONTAINERS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


def build_imagebind(arch: str, overrides: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialised ImageBind (used to create tiny checkpoints)."""
    module = imagebind_model_module()
    model: nn.Module = module.ImageBindModel(**architecture_kwargs(arch, overrides))
    return model


def save_imagebind(model: nn.Module, directory: Path, arch: str, overrides: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``imagebind.pth`` (the release's .pth state-dict format)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architecture": arch, "overrides": overrides or {}}
    (directory / ARCH_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    path = directory / CHECKPOINT_NAME
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def read_arch_config(directory: Path) -> tuple[str, dict[str, Any]]:
    raw = json.loads((directory / ARCH_CONFIG_NAME).read_text())
    return str(raw["architecture"]), dict(raw.get("overrides", {}))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def load_imagebind(
    checkpoint: Path,
    arch: str,
    branches: Iterable[str],
    *,
    overrides: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    keep = set(branches)
    module = imagebind_model_module()
    with init_empty_weights():
        model: nn.Module = module.ImageBindModel(**architecture_kwargs(arch, overrides))
    for container_name in _CONTAINERS:
        container = getattr(model, container_name)
        for branch in [b for b in container if b not in keep]:
            del container[branch]
    state = _read_state(checkpoint)
    state = {k: v for k, v in state.items() if k.split(".")[1] in keep}
    absent = sorted(keep - {k.split(".")[1] for k in state})
    if absent:
        raise ValueError(f"checkpoint {checkpoint} has no weights for the ImageBind branches {absent}")
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if leftover:
        raise ValueError(f"checkpoint {checkpoint} left tensors uninitialised: {leftover[:5]}")
    model.eval().requires_grad_(False)
    return model.to(device=device, dtype=dtype)
