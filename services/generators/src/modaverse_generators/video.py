"""text-to-video: TextToVideoSD (ModelScope) and other diffusers pipelines that return ``frames``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationParams
from .diffusers_generator import DiffusersGenerator
from .encoding import VIDEO_MIME_TYPES, encode_video, to_uint8
from .params import MAX_FPS, Bounds, KindSpec, ParamSpec, guidance_scale, option, size, steps


class TextToVideo(DiffusersGenerator):
    kind = "text-to-video"
    release_model = "damo-vilab/text-to-video-ms-1.7b"
    default_scheduler = "DPMSolverMultistepScheduler"  # what the ModaVerse release swaps in
    # Release: 25 steps at 10 fps; the pipeline's defaults otherwise (16 frames, 256 px, guidance 9).
    spec = KindSpec(
        modality=MediaKind.VIDEO,
        mime_types=VIDEO_MIME_TYPES,
        params=(
            steps(full=Bounds(25, 100), tiny=Bounds(4, 500)),
            guidance_scale(9.0),
            size("width", full=Bounds(256, 576), tiny=Bounds(64, 128)),
            size("height", full=Bounds(256, 576), tiny=Bounds(64, 128)),
            ParamSpec("num_frames", 1, 64, 16, integer=True, tiny=Bounds(8, 32)),
            # The container's frame rate: each row may have its own (the pipeline never sees it).
            ParamSpec("fps", 1, MAX_FPS, 10, integer=True, passed=False, per_row=True),
            option("eta", 0.0, 1.0),
        ),
    )

    def rows(self, output: Any) -> Sequence[Any]:
        return list(np.asarray(output.frames))  # (B, F, H, W, 3) floats in [0, 1]

    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        frames = to_uint8(row)
        fps = int(params.values["fps"])
        data = encode_video(frames, fps, params.mime_type)
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
            duration_s=count / fps,
        )
