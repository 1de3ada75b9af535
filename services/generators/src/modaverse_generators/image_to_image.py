"""image-to-image: Stable Diffusion img2img and any model ``AutoPipelineForImage2Image`` can load.

The input image is resized to the requested ``width`` x ``height`` (the output's size) and noised by
``strength`` (1: all of it, the image only sets the composition), then denoised from the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaKind

from .base import GenerationParams
from .encoding import IMAGE_MIME_TYPES
from .image import TextToImage
from .imports import diffusers
from .params import Bounds, KindSpec, ParamSpec, guidance_scale, option, size, steps


class ImageToImage(TextToImage):
    """An image generator whose pipeline also takes an image; outputs are encoded as text-to-image's."""

    kind = "image-to-image"
    release_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # its img2img pipeline: the same weights
    spec = KindSpec(
        modality=MediaKind.IMAGE,
        mime_types=IMAGE_MIME_TYPES,
        input_image=True,
        params=(
            steps(full=Bounds(50, 200), tiny=Bounds(4, 500)),
            guidance_scale(7.5),
            # The pipeline takes the input image's size: the kind resizes it to these.
            size("width", full=Bounds(512, 1024), tiny=Bounds(64, 256), passed=False),
            size("height", full=Bounds(512, 1024), tiny=Bounds(64, 256), passed=False),
            ParamSpec("strength", 0.0, 1.0, 0.8, exclusive_minimum=True),  # diffusers' default
            option("eta", 0.0, 1.0),  # (SD 1.5's img2img call has no guidance_rescale)
        ),
    )
    call_params = frozenset({"image"})

    def load_pipeline(self, path: str, dtype: torch.dtype) -> Any:
        return diffusers().AutoPipelineForImage2Image.from_pretrained(path, dtype=dtype)

    def check(self, params: GenerationParams) -> None:
        # The pipeline runs int(steps * strength) steps of the schedule; none would leave the input as it is.
        count, strength = int(params.values["steps"]), params.values["strength"]
        if int(count * strength) < 1:
            raise InvalidArgument(
                f"strength {strength:g} with steps {count} runs no denoising step; "
                f"it must be at least {1 / count:g} for {count} steps (or raise steps)"
            )

    def call_kwargs(self, batch: Sequence[GenerationParams]) -> dict[str, Any]:
        first = batch[0]  # width and height are batched parameters: equal in every row
        shape = (int(first.values["width"]), int(first.values["height"]))
        images = []
        for params in batch:
            assert params.image is not None  # required by the spec, decoded before queueing
            images.append(params.image.resize(shape, Image.Resampling.LANCZOS))
        return {"image": images}
