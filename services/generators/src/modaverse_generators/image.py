"""text-to-image: Stable Diffusion and any model ``AutoPipelineForText2Image`` can load."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modaverse_runtime.media import MediaKind

from .base import GeneratedMedia, GenerationParams, Limits
from .diffusers_generator import DiffusersGenerator
from .encoding import IMAGE_MIME_TYPES, encode_image, to_uint8
from .imports import diffusers
from .params import KindSpec, OptionSpec


class TextToImage(DiffusersGenerator):
    kind = "text-to-image"
    release_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    spec = KindSpec(
        modality=MediaKind.IMAGE,
        mime_types=IMAGE_MIME_TYPES,
        options={"eta": OptionSpec(0.0, 1.0), "guidance_rescale": OptionSpec(0.0, 1.0)},
        uses_size=True,
    )
    # The pipeline's own defaults for SD 1.5 (50 steps, guidance 7.5, 512 px), as the release calls it.
    full_limits = Limits(
        default_steps=50,
        max_steps=200,
        default_guidance_scale=7.5,
        max_prompt_chars=0,
        default_width=512,
        default_height=512,
        max_width=1024,
        max_height=1024,
    )
    tiny_limits = Limits(
        default_steps=4,
        max_steps=500,
        default_guidance_scale=7.5,
        max_prompt_chars=0,
        default_width=64,
        default_height=64,
        max_width=256,
        max_height=256,
    )
    call_params = frozenset({"height", "width"})

    def load_pipeline(self, path: str, dtype: torch.dtype) -> Any:
        return diffusers().AutoPipelineForText2Image.from_pretrained(path, dtype=dtype)

    def call_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        return {"height": params.height, "width": params.width}

    def rows(self, output: Any) -> Sequence[Any]:
        return list(np.asarray(output.images))  # (B, H, W, 3) floats in [0, 1]

    def encode(self, row: Any, params: GenerationParams) -> GeneratedMedia:
        pixels = to_uint8(row)
        data = encode_image(pixels, params.mime_type)
        height, width = pixels.shape[:2]
        return GeneratedMedia(params.mime_type, data, params.seed, 0.0, 0.0, width=width, height=height)
