"""text-to-video: TextToVideoSD (ModelScope) and other diffusers pipelines that return ``frames``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationParams, Limits
from .diffusers_generator import DiffusersGenerator
from .encoding import VIDEO_MIME_TYPES, encode_video, to_uint8
from .params import KindSpec, OptionSpec


class TextToVideo(DiffusersGenerator):
    kind = "text-to-video"
    release_model = "damo-vilab/text-to-video-ms-1.7b"
    default_scheduler = "DPMSolverMultistepScheduler"  # what the ModaVerse release swaps in
    spec = KindSpec(
        modality=MediaKind.VIDEO,
        mime_types=VIDEO_MIME_TYPES,
        options={"eta": OptionSpec(0.0, 1.0)},
        uses_size=True,
        uses_frames=True,
    )
    # Release: 25 steps at 10 fps; the pipeline's defaults otherwise (16 frames, 256 px, guidance 9).
    full_limits = Limits(
        default_steps=25,
        max_steps=100,
        default_guidance_scale=9.0,
        max_prompt_chars=0,
        default_width=256,
        default_height=256,
        max_width=576,
        max_height=576,
        default_num_frames=16,
        max_num_frames=64,
        default_fps=10,
    )
    tiny_limits = Limits(
        default_steps=4,
        max_steps=500,
        default_guidance_scale=9.0,
        max_prompt_chars=0,
        default_width=64,
        default_height=64,
        max_width=128,
        max_height=128,
        default_num_frames=8,
        max_num_frames=32,
        default_fps=10,
    )
    call_params = frozenset({"height", "width", "num_frames"})

    def call_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        return {"height": params.height, "width": params.width, "num_frames": params.num_frames}

    def rows(self, output: Any) -> Sequence[Any]:
        return list(np.asarray(output.frames))  # (B, F, H, W, 3) floats in [0, 1]

    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        frames = to_uint8(row)
        data = encode_video(frames, params.fps, params.mime_type)
        count, height, width = frames.shape[:3]
        return GeneratedMedia(
            params.mime_type,
            data,
            params.seed,
            0.0,
            0.0,
            width=width,
            height=height,
            num_frames=count,
            duration_s=count / params.fps,
        )
