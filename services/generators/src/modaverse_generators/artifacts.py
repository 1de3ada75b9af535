"""Where a generator's pipeline is, per profile."""

from __future__ import annotations

from modaverse_runtime.errors import FailedPrecondition

from .settings import GeneratorSettings
from .tiny import BUILDERS, ensure_tiny_generator


def resolve_model(settings: GeneratorSettings, kind: str, release_model: str) -> str:
    """The pipeline folder or HF id: the configured one; else the release's model (full) or the tiny
    build of ``kind``, built once locally (tiny)."""
    if settings.generator_model:
        return settings.generator_model
    if settings.profile == "full":
        return release_model
    if kind not in BUILDERS:
        raise FailedPrecondition(f"no tiny build for {kind}; set MODAVERSE_GENERATOR_MODEL")
    return str(ensure_tiny_generator(settings.model_dir, kind))
