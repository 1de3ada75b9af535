"""Encoder settings (``MODAVERSE_*`` environment variables, see docs/configuration.md)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from modaverse_runtime.media import MediaLimits
from modaverse_runtime.settings import ServerSettings


class EncoderSettings(ServerSettings):
    port: int = Field(50051, ge=0, le=65535)
    encoder_impl: str = Field("imagebind", description="registry name of the Encoder implementation")
    imagebind_arch: str = Field("imagebind_huge", description="architecture of imagebind_checkpoint")
    imagebind_checkpoint: Path | None = Field(None, description="ImageBind .pth (full profile)")
    adaptor_path: Path | None = Field(None, description="adaptor folder (adaptor_config.json + safetensors)")
    dtype: str = Field("auto", description="auto (fp16 on GPU, fp32 on CPU), float32, float16, bfloat16")

    batching: bool = Field(True, description="group concurrent requests into one forward pass")
    batch_max_items: int = Field(16, ge=1, le=1024)
    batch_max_wait_ms: float = Field(5.0, ge=0, le=1000)
    max_queue: int = Field(1024, ge=1)
    preprocess_workers: int = Field(
        0, ge=0, le=64, description="threads decoding and transforming media; 0 = half the CPU cores (1..16)"
    )

    max_items_per_request: int = Field(32, ge=1)
    max_media_mb: float = Field(32.0, gt=0)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_audio_seconds: float = Field(300.0, gt=0)
    max_video_seconds: float = Field(300.0, gt=0)
    # Not MODAVERSE_MAX_TEXT_CHARS: that is the gateway's limit on a whole request's text, and one
    # variable set for every service (Helm's global.env) must not mean two things.
    max_text_item_chars: int = Field(
        2000, ge=1, le=1_000_000, description="characters of one text item (ImageBind reads its first 75 tokens)"
    )

    audio_clips: int = Field(3, ge=1, le=32, description="2 s clips per audio item (release: 3)")
    video_clips: int = Field(5, ge=1, le=32, description="2 s clips per video item (release: 5)")
    video_spatial_crops: int = Field(3, description="1 or 3 crops per clip (release: 3)")

    @property
    def preprocess_threads(self) -> int:
        return self.preprocess_workers or max(1, min(16, (os.cpu_count() or 2) // 2))

    @property
    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_bytes=int(self.max_media_mb * 2**20),
            max_image_pixels=self.max_image_pixels,
            max_audio_seconds=self.max_audio_seconds,
            max_video_seconds=self.max_video_seconds,
        )
