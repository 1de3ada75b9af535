"""Where the LLM's weights are, per profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modaverse_runtime.errors import FailedPrecondition

from .settings import LLMSettings
from .tiny import ensure_tiny_llm


@dataclass(frozen=True)
class LLMArtifacts:
    base: str  # folder or HF id (tokenizer files live beside the model)
    adapters: dict[str, Path]


def resolve_artifacts(settings: LLMSettings) -> LLMArtifacts:
    """tiny: build the local artifacts once and use them unless set explicitly; full: base_model required."""
    base, adapters = settings.base_model, dict(settings.adapters)
    if settings.profile == "tiny" and not base:
        root = ensure_tiny_llm(settings.model_dir)
        base = str(root / "base")
        if not adapters:
            adapters = {"default": root / "adapters" / "default"}
    if not base:
        raise FailedPrecondition("profile 'full' needs MODAVERSE_BASE_MODEL (a folder or a Hugging Face id)")
    return LLMArtifacts(base=base, adapters=adapters)
