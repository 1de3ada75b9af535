"""Where the encoder's weights are, per profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modaverse_runtime.errors import FailedPrecondition

from .checkpoint import CHECKPOINT_NAME, read_arch_config
from .settings import EncoderSettings
from .tiny import ensure_tiny_encoder


@dataclass(frozen=True)
class EncoderArtifacts:
    checkpoint: Path
    arch: str
    adaptor_dir: Path
    arch_overrides: dict[str, Any] | None = None


def resolve_artifacts(settings: EncoderSettings) -> EncoderArtifacts:
    """tiny: build the local artifacts once and use them, unless paths are set explicitly.
    full: both paths are required."""
    checkpoint, arch = settings.imagebind_checkpoint, settings.imagebind_arch
    overrides: dict[str, Any] | None = None
    adaptor = settings.adaptor_path
    if settings.profile == "tiny" and (checkpoint is None or adaptor is None):
        root = ensure_tiny_encoder(settings.model_dir)
        if checkpoint is None:
            checkpoint = root / "imagebind" / CHECKPOINT_NAME
            arch, overrides = read_arch_config(root / "imagebind")
        adaptor = adaptor or root / "adaptor"
    if checkpoint is None:
        raise FailedPrecondition("profile 'full' needs MODAVERSE_IMAGEBIND_CHECKPOINT (imagebind_huge.pth)")
    if adaptor is None:
        raise FailedPrecondition("profile 'full' needs MODAVERSE_ADAPTOR_PATH (an adaptor folder)")
    return EncoderArtifacts(checkpoint=checkpoint, arch=arch, adaptor_dir=adaptor, arch_overrides=overrides)
