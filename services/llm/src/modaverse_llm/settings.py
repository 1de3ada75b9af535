"""LLM service settings (``MODAVERSE_*`` environment variables).

``LLMSettings`` holds what every backend reads. A backend's own options are fields of its subclass,
declared beside the backend (``TransformersSettings``, ``VLLMSettings``) and read from the same
environment; ``LLMBackend`` turns the shared settings into its own class (``for_backend``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from modaverse_runtime.settings import ServerSettings

SettingsT = TypeVar("SettingsT", bound="LLMSettings")


class LLMSettings(ServerSettings):
    port: int = Field(50052, ge=0, le=65535)
    llm_impl: str = Field("transformers", description="registry name of the LLM backend: transformers or vllm")
    base_model: str = Field("", description="base LLM folder or HF id (full profile; tiny builds its own)")
    adapters: dict[str, Path] = Field(
        default_factory=dict, description='LoRA adapters loaded at start, JSON: {"name": "/path/to/peft/folder"}'
    )
    default_adapter: str = Field(
        "default", description="adapter used when a request names none; 'base' or unknown = no adapter"
    )
    dtype: str = Field("auto", description="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16")
    context_length: int = Field(0, ge=0, description="prompt + answer positions; 0 = the model's maximum")

    batching: bool = Field(True, description="decode concurrent requests together in one batch")
    max_batch_size: int = Field(32, ge=1, le=1024, description="rows decoded together")
    max_queue: int = Field(
        1024, ge=1, description="requests waiting for a place in the batch; more are refused (RESOURCE_EXHAUSTED)"
    )

    max_tokens_cap: int = Field(2048, ge=1, description="largest sampling.max_tokens accepted")
    max_stop_strings: int = Field(8, ge=1, le=64)
    max_stop_chars: int = Field(64, ge=1, le=1024)
    max_messages: int = Field(256, ge=1, description="messages per request")
    max_media_rows: int = Field(64, ge=1, description="embedding rows per media block")
    allow_runtime_adapters: bool = Field(True, description="allow LoadAdapter/UnloadAdapter RPCs")
    adapter_root: Path | None = Field(
        None,
        description="LoadAdapter loads only folders inside this one (symlinks resolved; others: PERMISSION_DENIED); "
        "unset: any folder the server can read",
    )

    def __init__(self, **values: Any) -> None:
        # Unknown environment variables are ignored (services share one environment), and so would be
        # a backend's field given to the wrong class; refuse it instead of silently running without it.
        unknown = sorted(k for k in values if not k.startswith("_") and k not in type(self).model_fields)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no field {', '.join(unknown)}; a backend's own settings are fields "
                "of its settings class (modaverse_llm.service.settings_class)"
            )
        super().__init__(**values)

    @property
    def effective_max_batch(self) -> int:
        return self.max_batch_size if self.batching else 1

    def for_backend(self, cls: type[SettingsT]) -> SettingsT:
        """These settings as ``cls`` (a backend's subclass): the shared values as they are here, the
        backend's own fields from the environment. Already a ``cls``: returned as is."""
        if isinstance(self, cls):
            return self
        return cls(**{name: getattr(self, name) for name in LLMSettings.model_fields})
