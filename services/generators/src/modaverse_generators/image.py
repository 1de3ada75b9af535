"""text-to-image: Stable Diffusion and any model ``AutoPipelineForText2Image`` can load."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationParams
from .diffusers_generator import DiffusersGenerator
from .encoding import IMAGE_MIME_TYPES, encode_image, to_uint8
from .imports import diffusers
from .params import Bounds, KindSpec, guidance_scale, option, size, steps


class TextToImage(DiffusersGenerator):
    kind = "text-to-image"
    release_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # The pipeline's own defaults for SD 1.5 (50 steps, guidance 7.5, 512 px), as the release calls it.
    spec = KindSpec(
        modality=MediaKind.IMAGE,
        mime_types=IMAGE_MIME_TYPES,
        params=(
            # tiny: 20, what the trained tiny generator needs to draw a recognisable shape (4 steps: noise).
            steps(full=Bounds(50, 200), tiny=Bounds(20, 500)),
            guidance_scale(7.5),
            size("width", full=Bounds(512, 1024), tiny=Bounds(64, 256)),
            size("height", full=Bounds(512, 1024), tiny=Bounds(64, 256)),
            option("eta", 0.0, 1.0),
            option("guidance_rescale", 0.0, 1.0),
        ),
    )

    def load_pipeline(self, path: str, dtype: torch.dtype) -> Any:
        return diffusers().AutoPipelineForText2Image.from_pretrained(path, dtype=dtype)

    def rows(self, output: Any) -> Sequence[Any]:
        return list(np.asarray(output.images))  # (B, H, W, 3) floats in [0, 1]

    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        pixels = to_uint8(row)
        data = encode_image(pixels, params.mime_type)
        height, width = pixels.shape[:2]
        return GeneratedMedia(params.mime_type, data, params.seed, 0.0, 0.0, width=width, height=height)
