"""Generator settings (``MODAVERSE_*`` environment variables, see docs/generators.md).

One deployment serves one model: ``generator_kind`` picks the class from the registry,
``generator_model`` the weights (a Hugging Face id or a local folder). Limit fields left
unset take the kind's defaults for the profile (see :mod:`.kinds`).
"""

from __future__ import annotations

from pydantic import Field

from modaverse_runtime.settings import ServerSettings


class GeneratorSettings(ServerSettings):
    port: int = Field(50053, ge=0, le=65535)
    generator_kind: str = Field("text-to-image", description="registry name: text-to-image, text-to-video, ...")
    generator_model: str | None = Field(
        None, description="HF id or local folder; unset: the release model (full) or the tiny build (tiny)"
    )
    dtype: str = Field("auto", description="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16")
    cpu_offload: bool = Field(False, description="GPU only: keep submodels on the CPU until used (less memory)")
    scheduler: str | None = Field(None, description="diffusers scheduler class to swap in, e.g. DDIMScheduler")

    batching: bool = Field(True, description="run compatible queued requests as one pipeline call")
    batch_max_items: int = Field(4, ge=1, le=64, description="most requests in one pipeline call")
    batch_max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long a batch waits for company")
    max_queue: int = Field(
        64,
        ge=1,
        le=10_000,
        description="requests waiting beyond those running; more: RESOURCE_EXHAUSTED (with batch_max_items, room "
        "for every chat one gateway admits: docs/reliability.md)",
    )

    max_prompt_chars: int = Field(2000, ge=1)
    default_steps: int | None = Field(None, ge=1, description="unset: the kind's default for the profile")
    max_steps: int | None = Field(None, ge=1)
    default_guidance_scale: float | None = Field(None, ge=0)
    default_width: int | None = Field(None, ge=8)
    default_height: int | None = Field(None, ge=8)
    max_width: int | None = Field(None, ge=8)
    max_height: int | None = Field(None, ge=8)
    default_num_frames: int | None = Field(None, ge=1)
    max_num_frames: int | None = Field(None, ge=1)
    default_fps: int | None = Field(None, ge=1, le=120)
    default_duration_s: float | None = Field(None, gt=0)
    max_duration_s: float | None = Field(None, gt=0)
