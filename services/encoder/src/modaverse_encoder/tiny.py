"""The tiny profile's encoder artifacts: same classes and on-disk layout as full, small sizes.

Built once (deterministically, from a seed) into ``<model_dir>/tiny/encoder`` and then
loaded through exactly the code that loads ``imagebind_huge.pth``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from modaverse_runtime.artifacts import ensure_built

from .adaptor import Adaptor, AdaptorConfig
from .architectures import ARCHITECTURES
from .checkpoint import build_imagebind, save_imagebind

log = logging.getLogger(__name__)

TINY_ARCH = "imagebind_tiny"
# Width of the tiny LLM's embeddings (services/llm tiny profile); the adaptor maps into it.
TINY_LLM_HIDDEN_SIZE = 256


def tiny_encoder_dir(model_dir: Path) -> Path:
    return model_dir / "tiny" / "encoder"


def build_random_encoder(
    directory: Path, arch: str, hidden_size: int, seed: int = 0, device: str = "cpu", mode: str = "shared"
) -> None:
    """Random-weight artifacts of any architecture in the serving layout (``imagebind/`` +
    ``adaptor/``): the tiny profile, and full-size models for GPU memory/speed measurements."""
    torch.manual_seed(seed)
    with torch.device(device):  # initialising huge on the GPU takes seconds, not minutes
        model = build_imagebind(arch)
    save_imagebind(model, directory / "imagebind", arch)
    del model
    embed_dim = int(ARCHITECTURES[arch]["out_embed_dim"])
    Adaptor(AdaptorConfig(in_dim=embed_dim, out_dim=hidden_size, mode=mode)).save(directory / "adaptor")


def build_tiny_encoder(directory: Path, seed: int = 0, hidden_size: int = TINY_LLM_HIDDEN_SIZE) -> None:
    build_random_encoder(directory, TINY_ARCH, hidden_size, seed)


def ensure_tiny_encoder(model_dir: Path) -> Path:
    """Build the tiny artifacts if absent. Safe when several processes race to build."""
    return ensure_built(
        tiny_encoder_dir(model_dir), "adaptor/adaptor.safetensors", build_tiny_encoder, "tiny encoder artifacts"
    )
